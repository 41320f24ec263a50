#!/usr/bin/env python3
"""Write the lockbox's scenarios of a catalog, in windows of another length.

Why: the shipped corpus is recorded in 250 ms windows and deployments
default to 1000 ms. Recording the lockbox's scenarios again at 1000 ms
measures the shipped model at a deployment's default length on installs
no choice ever looked at, without the approximation of tools/rewindow.py.
The lockbox rule is `learn::honest::in_lockbox`: FNV-1a of the package
name, one in ten.

    tools/lockbox-catalog.py WINDOW_MS corpus/catalog.toml > OUT.toml
    backstop corpus run --catalog OUT.toml --root ROOTFS --debs DEBS --out DIR
    backstop eval --model models/default --corpus DIR --all
"""
import re
import sys


def in_lockbox(package):
    h = 0xCBF29CE484222325
    for b in package.encode():
        h = ((h ^ b) * 0x100000001B3) & (2**64 - 1)
    return h % 10 == 0


def main():
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: tools/lockbox-catalog.py WINDOW_MS CATALOG.toml")
    window_ms, path = sys.argv[1], sys.argv[2]
    text = open(path, encoding="utf-8").read()
    head, *scenarios = text.split("[[scenario]]")
    # The defaults and the [families.*] tables come before the scenarios.
    if any("\n[families" in s for s in scenarios):
        sys.exit(f"{path}: a [families] table after the scenarios is not handled")
    head, n = re.subn(r"(?m)^window_ms = \d+$", f"window_ms = {window_ms}", head)
    if n != 1:
        sys.exit(f"{path}: no `window_ms = N` line in [defaults] to replace")
    kept = []
    for s in scenarios:
        m = re.search(r'(?m)^package = "([^"]+)"$', s)
        if not m:
            sys.exit(f"{path}: a scenario without `package = \"...\"`")
        if in_lockbox(m.group(1)):
            kept.append(s)
    sys.stdout.write(
        f"# The lockbox's scenarios of {path} in {window_ms} ms windows, written by\n"
        f"# `tools/lockbox-catalog.py {window_ms} {path}`: do not edit.\n"
    )
    sys.stdout.write(head + "".join("[[scenario]]" + s for s in kept))
    print(f"{len(kept)} of {len(scenarios)} scenarios", file=sys.stderr)


main()
