#!/usr/bin/env python3
"""Compiles every C++ code block of README.md and docs/*.md against include/.

    docs/check_snippets.py [--cxx g++] [FILE.md ...]

Each ```cpp block is a whole translation unit and must compile warning-free with
`-std=c++20 -Wall -Wextra -Werror -fsyntax-only -Iinclude` (blocks that include the MPI
backend also get the MPI compiler flags). Blocks that are not meant to compile use another
fence (```text, ```sh, ```cmake). `make docs` runs it; it exits 1 naming each block that fails.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blocks(path):
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r"^```cpp\n(.*?)^```", text, re.M | re.S):
        yield text.count("\n", 0, m.start()) + 1, m.group(1)


def mpi_flags():
    for cmd in (["mpicxx", "--showme:compile"], ["pkg-config", "--cflags", "ompi-cxx"]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                # MPI's own C++ bindings warn under -Wextra: take its headers as system headers.
                return [f.replace("-I", "-isystem", 1) if f.startswith("-I") else f
                        for f in r.stdout.split()]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    files = a.files or [os.path.join(ROOT, "README.md")] + sorted(
        glob.glob(os.path.join(ROOT, "docs", "*.md")))
    base = [a.cxx, "-std=c++20", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
            "-I", os.path.join(ROOT, "include"), "-x", "c++"]
    mpi = None
    failed = checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in files:
            for line, code in blocks(path):
                where = f"{os.path.relpath(path, ROOT)}:{line}"
                cmd = list(base)
                if "spmd/mpi_comm.hpp" in code:
                    mpi = mpi if mpi is not None else mpi_flags()
                    if mpi is None:
                        print(f"check_snippets: {where}: skipped (no MPI compiler flags)")
                        continue
                    cmd[1:1] = mpi
                src = os.path.join(tmp, "snippet.cpp")
                with open(src, "w", encoding="utf-8") as f:
                    f.write(code)
                r = subprocess.run(cmd + [src], capture_output=True, text=True)
                checked += 1
                if r.returncode != 0:
                    failed += 1
                    print(f"check_snippets: {where}: does not compile\n"
                          + r.stderr.replace(src, where), file=sys.stderr)
    print(f"check_snippets: {checked - failed} of {checked} C++ blocks compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
