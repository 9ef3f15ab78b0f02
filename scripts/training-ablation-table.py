#!/usr/bin/env python3
"""Markdown tables from scripts/training-ablations.sh's work folder: the paper's Table 3
(margin δ) and the training-time rows of Table 5 (M1 no GAT, M2 no multi-level fusion), each
against the full-ACF run, with UCM val mR per epoch and the best-validation model's UCM test
recalls; and from scripts/negative-masking.sh's work folder, the duplicate-caption masking
fine-tunes against the shipped model (its val/test files: before-val.json, before-test.json).

    scripts/training-ablation-table.py WORKDIR
    scripts/training-ablation-table.py docs/training-ablations   (the copy in the repo)
    scripts/training-ablation-table.py docs/negative-masking
"""
import json
import os
import sys

ROWS = {
    "acf": ("ACF (full, δ = 0.2)", "full"),
    "acf2": ("ACF (full, δ = 0.2), seed 43", "full"),
    "m1": ("M1: without GAT", "ablation"),
    "m2": ("M2: without multi-level fusion", "ablation"),
    "d01": ("δ = 0.1", "margin"),
    "d03": ("δ = 0.3", "margin"),
    "sum": ("summed negatives (shipped recipe)", "masking"),
    "sum-mask": ("summed negatives, duplicates masked", "masking"),
    "hard": ("hardest negatives", "masking"),
    "hard-mask": ("hardest negatives, duplicates masked", "masking"),
}


def epochs(path):
    out = []
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if d.get("kind") == "epoch":
                out.append((d["epoch"], d["val_mr"], d.get("elapsed_s", 0.0)))
    return out


def test_row(path):
    with open(path) as f:
        d = json.load(f)
    full = next(r for r in d["rows"] if r["method"] == "ACF (full)")
    r = full["recall"]
    return r["i2t"] + r["t2i"] + [r["mr"]], d["fingerprint"][:12]


def before_row(work):
    """The shipped model's val mR and test row, when the work folder has them."""
    val, test = (os.path.join(work, f"before-{s}.json") for s in ("val", "test"))
    if not (os.path.exists(val) and os.path.exists(test)):
        return None
    v = test_row(val)[0][6]
    return ("shipped model (before fine-tuning)", "masking", [(0, v, 0.0)], test_row(test))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    work = sys.argv[1]
    found = []
    for name, (label, group) in ROWS.items():
        out = os.path.join(work, f"out-{name}")
        if not os.path.isdir(out):  # a copy of the runs' files, one folder per run
            out = os.path.join(work, name)
        metrics = os.path.join(out, "metrics.jsonl")
        if not os.path.exists(metrics):
            continue
        test = os.path.join(out, "test.json")
        found.append((name, label, group, epochs(metrics), test_row(test) if os.path.exists(test) else None))
    before = before_row(work)
    if before and any(g == "masking" for _, _, g, _, _ in found):
        found.insert(0, ("before",) + before)
    if not found:
        sys.exit(f"no runs under {work}")
    n = max(len(e) for _, _, _, e, _ in found)
    head = "| run | " + " | ".join(f"val mR ep {i + 1}" for i in range(n))
    head += " | test i2t R@1 | R@5 | R@10 | t2i R@1 | R@5 | R@10 | test mR | train s |"
    for title, groups in (("Table 5 (training-time rows): M1, M2", ("full", "ablation")),
                          ("Table 3: margin δ", ("full", "margin")),
                          ("Duplicate-caption masking (fine-tunes of the shipped model)", ("masking",))):
        if not any(g in groups for _, _, g, _, _ in found):
            continue
        print(f"\n{title}\n")
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for name, label, group, ep, test in found:
            if group not in groups:
                continue
            vals = [f"{v:.2f}" for _, v, _ in ep] + [""] * (n - len(ep))
            cells = [f"{x:.2f}" for x in test[0][:6]] + [f"**{test[0][6]:.2f}**"] if test else [""] * 7
            secs = f"{ep[-1][2]:.0f}" if ep and name != "before" else ""
            print(f"| {label} | " + " | ".join(vals + cells + [secs]) + " |")
    print()
    for name, label, _, _, test in found:
        if test and name != "before":
            print(f"- {label}: best-validation weights `{test[1]}`")


if __name__ == "__main__":
    main()
