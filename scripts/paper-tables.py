#!/usr/bin/env python3
"""Lays out `acf-index eval --json` results as the paper's tables (markdown).

Each argument is LABEL=FILE.json (the output of one `eval --json` run, e.g. with
`--sweep p=0.1,0.2,0.3,0.4,0.5 --sweep q=0,0.05,0.1,0.2 --ablate`). Rows are grouped the
paper's way: Table 1 (p), Table 2 (q), the correction forms and lambda, Table 5 (M3-M5),
one column block per LABEL.

    scripts/paper-tables.py "UCM test=ucm.json" "RSICD-on-AID test=aid.json"
"""
import json
import sys

GROUPS = [
    ("Table 1: correction offset p (inference)", lambda m: m.startswith("p = ")),
    ("Table 2: filtering threshold q (inference)", lambda m: m.startswith("q = ")),
    ("Correction form (inference)", lambda m: m.startswith("correction = ")),
    ("Softmax temperature lambda (inference)", lambda m: m.startswith("lambda = ")),
    ("Global component weight w, S = R + w sim_g (inference)",
     lambda m: m == "ACF (full)" or m.startswith("global_weight = ")),
    ("Table 5: ablations (inference-time M3-M5)", lambda m: m == "ACF (full)" or m.startswith("M")),
]


def main():
    runs = []
    for arg in sys.argv[1:]:
        label, path = arg.split("=", 1)
        with open(path) as f:
            d = json.load(f)
        runs.append((label, d, {r["method"]: r["recall"] for r in d["rows"]}))
    if not runs:
        sys.exit(__doc__)
    for label, d, _ in runs:
        print(f"- {label}: {', '.join(d['datasets'])} split `{d['split']}`, {d['images']} images, "
              f"{d['captions']} captions, model `{d['fingerprint'][:12]}`, {d.get('views', 1)} view(s) per image")
    print()
    for title, pick in GROUPS:
        methods = []
        for _, _, rows in runs:
            for m in rows:
                if pick(m) and m not in methods:
                    methods.append(m)
        if not methods or methods == ["ACF (full)"]:
            continue
        print(f"**{title}** (mR; R@1 / R@5 / R@10 sentence retrieval, then image retrieval)\n")
        print("| setting | " + " | ".join(f"{l}: i2t R@1/5/10 | t2i R@1/5/10 | mR" for l, _, _ in runs) + " |")
        print("|---|" + "---|---|---|" * len(runs))
        for m in methods:
            cells = []
            for _, _, rows in runs:
                r = rows.get(m)
                if r is None:
                    cells += ["", "", ""]
                    continue
                cells += ["/".join(f"{x:.1f}" for x in r["i2t"]), "/".join(f"{x:.1f}" for x in r["t2i"]), f"**{r['mr']:.2f}**"]
            print(f"| {m} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main()
