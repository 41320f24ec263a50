#!/usr/bin/env python3
"""List Rust functions longer than a limit (default 80 lines).

Usage: tools/fn-lengths.py [--max N] DIR...
Counts from the `fn` line to its closing brace, as rustfmt lays them out
(the closing brace at the indentation of the line that opened the fn).
Exit status 1 when any function is over the limit.
"""
import os
import re
import sys

FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        indent = m.group(1)
        # A declaration without a body (trait method) ends with `;` before `{`.
        j = i
        while j < len(lines) and "{" not in lines[j] and not lines[j].rstrip().endswith(";"):
            j += 1
        if j >= len(lines) or "{" not in lines[j]:
            continue
        if lines[j].rstrip().endswith("}"):
            yield m.group(8), i + 1, 1
            continue
        for k in range(j + 1, len(lines)):
            if lines[k] == indent + "}":
                yield m.group(8), i + 1, k - i + 1
                break


def main():
    args = sys.argv[1:]
    limit = 80
    if args[:1] == ["--max"]:
        limit, args = int(args[1]), args[2:]
    over = 0
    for top in args:
        for dirpath, _, files in os.walk(top):
            if "/target" in dirpath:
                continue
            for f in sorted(files):
                if f.endswith(".rs"):
                    p = os.path.join(dirpath, f)
                    for name, line, n in functions(p):
                        if n > limit:
                            over += 1
                            print(f"{p}:{line}: {name} is {n} lines")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
