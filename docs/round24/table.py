#!/usr/bin/env python3
"""Tabulates docs/round24/grid.sh's output: mR per (β, h) for each dataset and their mean."""
import json, sys, glob, os, re
out = sys.argv[1]
res = {}
for f in sorted(glob.glob(os.path.join(out, "val-beta*-*.json"))):
    beta, key = re.match(r"val-beta(\d+)-(\w+)\.json", os.path.basename(f)).groups()
    for row in json.load(open(f))["rows"]:
        m = re.search(r"hubness_prior = ([\d.]+)", row["method"])
        h = m.group(1) if m else "0"
        res.setdefault((int(beta), h), {})[key] = (row["recall"]["mr"], row["recall"]["t2i"])
print("| β | h | UCM val mR | RSICD-on-AID val mR | mean |")
print("|---|---|---|---|---|")
for (beta, h), v in sorted(res.items(), key=lambda kv: (kv[0][0], float(kv[0][1]))):
    u = v.get("ucm", (None,))[0]; a = v.get("rsicd_aid", (None,))[0]
    mean = f"{(u + a) / 2:.3f}" if u is not None and a is not None else "-"
    fmt = lambda x: "-" if x is None else f"{x:.2f}"
    print(f"| {beta} | {h} | {fmt(u)} | {fmt(a)} | {mean} |")
