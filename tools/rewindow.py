#!/usr/bin/env python3
"""Fold a recorded corpus's windows K at a time into longer ones.

Why: the corpus is recorded in 250 ms windows and deployments default to
1000 ms; this approximates what the model sees at the longer length
without recording again. Counts are summed, percentiles and peaks take
their maximum, levels (what the tree holds, what the host lost since the
start, the longest current sleep) take the last. A p99 of K windows is
not the largest of their p99s, so this is an approximation of what the
agent would measure, not a measurement.

    tools/rewindow.py K CORPUS.jsonl.gz OUT_DIR
    backstop eval --model models/default --corpus OUT_DIR --all
"""
import gzip
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAX = {"syscall_latency_p50_us", "syscall_latency_p99_us", "block_latency_p99_us",
       "sched_runq_delay_p99_us", "mem_anon_peak_bytes", "net_connect_latency_p99_us"}
LAST = {"sched_blocked_longest_ms", "tree_processes", "tree_open_fds", "tree_mem_limit_used",
        "host_disk_free_fall_bytes", "host_mem_available_fall_bytes"}


def features():
    src = open(os.path.join(HERE, "..", "common", "src", "features.rs")).read()
    return re.findall(r'^\s+\w+ = "(\w+)", "', src, re.M)


def fold(rows, names):
    out = []
    for i, n in enumerate(names):
        col = [w[i] for w in rows]
        out.append(max(col) if n in MAX else col[-1] if n in LAST else sum(col))
    return out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    k, corpus, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if k < 1:
        sys.exit("K must be at least 1")
    names = features()
    os.makedirs(out, exist_ok=True)
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt") as src, open(os.path.join(out, "deployments.jsonl"), "w") as dst:
        for line in src:
            r = json.loads(line)
            if len(r["windows"][0]) != len(names):
                sys.exit(f"{r['id']}: {len(r['windows'][0])} features, this schema has {len(names)}")
            w, h = r["windows"], r["host"]
            r["windows"] = [fold(w[s:s + k], names) for s in range(0, len(w), k)]
            r["host"] = [h[min(s + k, len(h)) - 1] for s in range(0, len(w), k)]
            r["window_ms"] *= k
            if r["onset_window"] is not None:
                r["onset_window"] //= k
            dst.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
