# setup.py — builds the engram package's C extension against the static libengram.a.
#
# The library is $ENGRAM_LIB (a path to libengram.a) when set, else ../../build/libengram.a
# of this source tree, built with `make` when it is missing. (Not the sanitizer build:
# an ASan-instrumented archive cannot be loaded into an uninstrumented interpreter.) The
# extension uses only include/engram.h.
import os
import re
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


def version() -> str:
    """ENGRAM_VERSION_MAJOR.MINOR.PATCH of engram.h: the version's one home."""
    with open(os.path.join(include_dir(), "engram.h")) as f:
        text = f.read()
    parts = [re.search(rf"^#define ENGRAM_VERSION_{p} (\d+)", text, re.M) for p in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise SystemExit("engram.h: ENGRAM_VERSION_MAJOR/MINOR/PATCH not found")
    return ".".join(m.group(1) for m in parts)


def dep_libs() -> list:
    """The link flags of the libraries engram uses, from pkg-config as the Makefile takes
    them; plain -l<name> for a package without a .pc file."""
    out = []
    for pkg, name in (("lmdb", "lmdb"), ("libzstd", "zstd"), ("libprotobuf-c", "protobuf-c"),
                      ("libzmq", "zmq"), ("libmicrohttpd", "microhttpd")):
        try:
            flags = subprocess.run(["pkg-config", "--libs", pkg], capture_output=True,
                                   text=True, check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            flags = []
        out += flags or [f"-l{name}"]
    return out


lib = library()
ext = Extension(
    "engram._engram",
    sources=["engram/_engram.c"],
    include_dirs=[include_dir()],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wno-unused-parameter",
                        "-Wno-missing-field-initializers"],
    # The whole archive, so functions the extension references weakly are linked in when
    # the library has them (libengram.a is one object whose only global names are the
    # engram_* functions); --exclude-libs keeps even those out of the module's dynamic
    # symbols, which are then PyInit__engram alone. Then the libraries engram itself
    # needs, in link order.
    extra_link_args=["-Wl,--exclude-libs,ALL",
                     "-Wl,--whole-archive", lib, "-Wl,--no-whole-archive",
                     *dep_libs(), "-lpthread", "-lm"],
    depends=[lib, os.path.join(include_dir(), "engram.h")],
)

setup(
    name="engram",
    version=version(),
    description="Python binding of engram, a durable event log with consumer groups",
    packages=["engram", "engram.celery"],
    package_data={"engram": ["py.typed"]},
    ext_modules=[ext],
    python_requires=">=3.9",
)
