# setup.py — builds the engram package's C extension against the static libengram.a.
#
# The library is $ENGRAM_LIB (a path to libengram.a) when set, else ../../build/libengram.a
# of this source tree, built with `make` when it is missing. (Not the sanitizer build:
# an ASan-instrumented archive cannot be loaded into an uninstrumented interpreter.) The
# extension uses only include/engram.h.
import os
import subprocess

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def library() -> str:
    lib = os.environ.get("ENGRAM_LIB") or os.path.join(ROOT, "build", "libengram.a")
    if not os.path.exists(lib) and os.path.exists(os.path.join(ROOT, "Makefile")):
        rel = os.path.relpath(lib, ROOT)
        subprocess.check_call(["make", "-C", ROOT, rel])
    if not os.path.exists(lib):
        raise SystemExit(f"libengram.a not found at {lib}: run `make` in {ROOT} first")
    return lib


def include_dir() -> str:
    inc = os.path.join(ROOT, "include")
    if os.path.exists(os.path.join(inc, "engram.h")):
        return inc
    return os.environ.get("ENGRAM_INCLUDE", "/usr/local/include")


lib = library()
ext = Extension(
    "engram._engram",
    sources=["engram/_engram.c"],
    include_dirs=[include_dir()],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers"],
    # The whole archive, so functions the extension references weakly are linked in when
    # the library has them; then the libraries engram itself needs, in link order.
    extra_link_args=["-Wl,--whole-archive", lib, "-Wl,--no-whole-archive",
                     "-llmdb", "-lzstd", "-lprotobuf-c", "-lzmq", "-lpthread", "-lm"],
    depends=[lib, os.path.join(include_dir(), "engram.h")],
)

setup(
    name="engram",
    version="0.1.0",
    description="Python binding of engram, a durable event log with consumer groups",
    packages=["engram", "engram.celery"],
    package_data={"engram": ["py.typed"]},
    ext_modules=[ext],
    python_requires=">=3.9",
)
