#!/usr/bin/env python3
"""Prints the forward/demux figures as a Markdown table from criterion's estimates.json files.

Usage: python3 benches/scripts/summarize.py [target/criterion]
Median and its 95 % confidence interval per incoming packet; per copy = median / subscribers;
ratios of the core to the bare-str0m forward and to the AES-256-GCM floor (same size, same N).
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def median(group, bench, param):
    f = root / group / bench / param / "new" / "estimates.json"
    if not f.exists():
        return None
    m = json.loads(f.read_text())["median"]
    ci = m["confidence_interval"]
    return m["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def us(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


print("| case | subs | core median [95 % CI] | per copy | bare str0m | core/str0m "
      "| AEAD floor | core/floor | copy floor |")
print("|---|---|---|---|---|---|---|---|---|")
for media in ("audio", "video"):
    for size in (2, 10, 32, 50):
        p = f"{media}_{size}p"
        sfu = median("forward", "sfu", p)
        if sfu is None:
            continue
        subs = size - 1
        bare = median("forward", "bare_str0m", p)
        aead = median("forward", "aead_floor", p)
        copy = median("forward", "copy_floor", p)
        print(f"| {p} | {subs} | {us(sfu[0])} [{us(sfu[1])} – {us(sfu[2])}] | {us(sfu[0] / subs)} "
              f"| {us(bare[0])} | {sfu[0] / bare[0]:.2f} | {us(aead[0])} | {sfu[0] / aead[0]:.1f} "
              f"| {us(copy[0])} |")
print()
print("| demux case | median [95 % CI] |")
print("|---|---|")
for bench in ("forward_1", "unknown_source"):
    for n in (10, 10000):
        m = median("demux", bench, str(n))
        if m:
            print(f"| {bench}, {n} other addresses | {us(m[0])} [{us(m[1])} – {us(m[2])}] |")
