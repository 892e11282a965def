#!/usr/bin/env python3
"""Reads heaptrack's leaked-bytes flamegraph (`heaptrack_print --print-flamegraph FILE
--flamegraph-cost-type leaked`) of `heap_breakdown` and prints the relay's heap per
participant by the deepest str0m / callrelay / aws-lc function on each allocating stack, with
the caller that led there."""
import collections
import re
import sys

OURS = re.compile(r"str0m|callrelay|aws_lc|dimpl")


def clean(frame):
    frame = re.sub(r" \(.*\)$", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    frame = frame.replace("$LT$", "<").replace("$GT$", ">").replace("$u20$", " ")
    frame = frame.replace("$C$", ", ").replace("..", "::").replace("_<impl ", "<impl ")
    return frame


def main():
    path, participants = sys.argv[1], int(sys.argv[2])
    by_site = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        n = int(n)
        if n <= 0:
            continue
        total += n
        frames = [clean(f) for f in stack.rstrip(";").split(";")]
        ours = [i for i, f in enumerate(frames) if OURS.search(f)]
        if not ours:
            by_site["(outside str0m and callrelay: " + frames[-1][:60] + ")"] += n
            continue
        i = ours[-1]
        caller = frames[ours[-2]] if len(ours) > 1 else ""
        by_site[f"{frames[i][:90]}  <-  {caller[:70]}"] += n
    kib = lambda b: b / participants / 1024
    print(f"relay heap: {kib(total):.1f} KiB per participant ({participants} participants)")
    shown = [(site, n) for site, n in by_site.most_common(30) if kib(n) >= 0.5]
    for site, n in shown:
        print(f"{kib(n):8.1f} KiB  {site}")
    print(f"{kib(total - sum(n for _, n in shown)):8.1f} KiB  (the rest)")


if __name__ == "__main__":
    main()
