#!/usr/bin/env python3
"""check-docs.py — runs the examples of README.md and docs/*.md that are marked runnable,
so that the documentation cannot drift from what the code does.

A fenced block is runnable when the line just before its opening fence is
`<!-- runnable -->`; its language must be `sh` (run by bash) or `python` (run by the
python3 running this script). The runnable blocks of one page run in page order as one
bash script under `set -euo pipefail`, so a later block sees the files and the exported
variables of the earlier ones; a failing command fails the page and names its block.

Each page runs in a fresh temporary directory laid out like a checkout: the current
directory is TMP/repo, TMP/repo/build links to the build (so `build/engram` works),
TMP/shared/data links to the sample data next to the repository (so
`../shared/data/memory-events.jsonl` works), `engram` is found on PATH and the Python
package on PYTHONPATH.

Usage: BUILD=build python3 tests/check-docs.py [PAGE.md ...]   (exit 0 when all pass)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")
TIMEOUT = int(os.environ.get("ENGRAM_DOCS_TIMEOUT", "120"))


def blocks(path):
    """(language, first line number, text) of each runnable block of the page."""
    out = []
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() == MARK and i + 1 < len(lines):
            m = FENCE.match(lines[i + 1])
            if not m:
                sys.exit(f"{path}:{i + 1}: {MARK} must come right before a ``` fence")
            lang, start, body = m.group(1), i + 2, []
            j = start
            while j < len(lines) and lines[j].rstrip() != "```":
                body.append(lines[j])
                j += 1
            if j == len(lines):
                sys.exit(f"{path}:{start}: runnable block never closed")
            if lang not in ("sh", "python"):
                sys.exit(f"{path}:{start}: a runnable block must be sh or python, not '{lang}'")
            out.append((lang, start + 1, "\n".join(body)))
            i = j
        i += 1
    return out


def script(page, found):
    """One bash script running the page's blocks in order."""
    rel = os.path.relpath(page, ROOT)
    parts = ["set -euo pipefail", 'trap \'echo "FAILED in $ENGRAM_DOCS_BLOCK" >&2\' ERR']
    for n, (lang, line, text) in enumerate(found):
        where = f"{rel}:{line}"
        parts.append(f"ENGRAM_DOCS_BLOCK='{where}'")
        parts.append(f"echo '--- {where} ({lang})'")
        if lang == "sh":
            parts.append(text)
        else:
            tag = f"ENGRAM_DOCS_PY_{n}"
            parts.append(f'"$ENGRAM_DOCS_PYTHON" - <<\'{tag}\'\n{text}\n{tag}')
    return "\n".join(parts) + "\n"


def run_page(page, build):
    found = blocks(page)
    if not found:
        return True, 0
    tmp = tempfile.mkdtemp(prefix="engram-docs.")
    try:
        repo = os.path.join(tmp, "repo")
        os.makedirs(repo)
        os.symlink(build, os.path.join(repo, "build"))
        data = os.path.join(os.path.dirname(ROOT), "shared", "data")
        os.makedirs(os.path.join(tmp, "shared"))
        if os.path.isdir(data):
            os.symlink(data, os.path.join(tmp, "shared", "data"))
        else:
            # No sample data beside this checkout: a stand-in of the same shape, so the
            # examples still run (as the C tests fall back to generated events).
            os.makedirs(os.path.join(tmp, "shared", "data"))
            with open(os.path.join(tmp, "shared", "data", "memory-events.jsonl"), "w") as f:
                for i in range(1, 2001):
                    conv, who = f"conv-{i % 7}", ("Ann", "Bo")[i % 2]
                    f.write(json.dumps({
                        "type": ("memory.saved", "memory.updated", "memory.queried")[i % 3],
                        "user_id": f"{conv}:{who}", "session": f"{conv}/s1",
                        "ts": "2022-01-21T19:31:00Z", "text": f"turn {i} of {conv}",
                        "memory_id": f"{conv}:D1:{i}", "kind": "turn"}) + "\n")
        env = dict(os.environ)
        env.pop("ENGRAM_DATA", None)
        env["PATH"] = build + os.pathsep + env.get("PATH", "")
        py = os.path.join(ROOT, "bindings", "python")
        env["PYTHONPATH"] = py + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["ENGRAM_DOCS_PYTHON"] = sys.executable
        env["HOME"] = tmp
        r = subprocess.run(["bash", "-c", script(page, found)], cwd=repo, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=TIMEOUT)
        if r.returncode != 0:
            print(f"FAIL {os.path.relpath(page, ROOT)} (exit {r.returncode})")
            print("\n".join("  " + l for l in r.stdout.splitlines()[-40:]))
            return False, len(found)
        print(f"ok   {os.path.relpath(page, ROOT)}: {len(found)} blocks")
        return True, len(found)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    build = os.path.abspath(os.path.join(ROOT, os.environ.get("BUILD", "build")))
    if not os.access(os.path.join(build, "engram"), os.X_OK):
        sys.exit(f"check-docs: no {build}/engram (run make first)")
    pages = sys.argv[1:] or [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
        if f.endswith(".md"))
    if any(l == "python" for p in pages for l, _, _ in blocks(p)):
        r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
                           cwd=os.path.join(ROOT, "bindings", "python"), capture_output=True,
                           text=True)
        if r.returncode != 0:
            sys.exit(f"check-docs: building the Python extension failed:\n{r.stderr[-2000:]}")
    ok, total = True, 0
    for p in pages:
        good, n = run_page(os.path.abspath(p), build)
        ok &= good
        total += n
    print(f"check-docs: {total} runnable blocks, {'all passed' if ok else 'FAILURES'}")
    return 0 if ok and total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
