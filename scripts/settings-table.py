#!/usr/bin/env python3
"""Compact table of inference settings on the two validation (or test) sets: one column per
LABEL, each cell "UCM mR / RSICD-on-AID mR / mean" (the mean picks settings), one row per
setting that both files hold.

    scripts/settings-table.py "LABEL=UCM.json,AID.json" ...

Each file is the output of one `acf-index eval --json` run (scripts/inference-settings.sh).
"""
import json
import sys


def rows(path):
    with open(path) as f:
        return {r["method"]: r["recall"]["mr"] for r in json.load(f)["rows"]}


def main():
    cols = []
    for arg in sys.argv[1:]:
        label, files = arg.split("=", 1)
        ucm, aid = (rows(p) for p in files.split(","))
        cols.append((label, ucm, aid))
    if not cols:
        sys.exit(__doc__)
    methods = []
    for _, ucm, aid in cols:
        methods += [m for m in ucm if m in aid and m not in methods]
    print("| setting | " + " | ".join(label for label, _, _ in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for m in methods:
        cells = []
        for _, ucm, aid in cols:
            if m in ucm and m in aid:
                cells.append(f"{ucm[m]:.2f} / {aid[m]:.2f} / **{(ucm[m] + aid[m]) / 2:.2f}**")
            else:
                cells.append("")
        print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
