#!/usr/bin/env python3
"""Split a catalog into two halves, for two `corpus run` processes.

Why: recording the whole catalog (1752 scenarios) takes about three
hours in one `corpus run`; two side by side on this 2-core VM take
about half that, and `corpus pack` joins their outputs. The halves take
the catalog's scenarios alternately (its 1st, 3rd, ... and its 2nd,
4th, ...), so each holds its share of every kind of scenario, and both
keep the catalog's header ([defaults], [families.*]) as it is. The
split is a pure function of the catalog, so a run cut short resumes on
the same half.

    tools/halve-catalog.py corpus/catalog.toml A.toml B.toml
    backstop corpus run --catalog A.toml --root ROOTFS --debs DEBS --out OUT-A &
    backstop corpus run --catalog B.toml --root ROOTFS --debs DEBS --out OUT-B &
    backstop corpus pack --corpus OUT-A --corpus OUT-B --out deployments.jsonl.gz
"""
import sys

MARK = "[[scenario]]"


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: tools/halve-catalog.py CATALOG.toml A.toml B.toml")
    path, out_a, out_b = sys.argv[1:]
    text = open(path, encoding="utf-8").read()
    at = text.find(MARK)
    if at < 0:
        sys.exit(f"{path}: no {MARK} in it")
    head = text[:at]
    scenarios = [MARK + s for s in text[at:].split(MARK)[1:]]
    for out, part in ((out_a, scenarios[0::2]), (out_b, scenarios[1::2])):
        with open(out, "w", encoding="utf-8") as f:
            f.write(head + "".join(part))
    print(
        f"{len(scenarios)} scenarios: {len(scenarios[0::2])} in {out_a}, "
        f"{len(scenarios[1::2])} in {out_b}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
