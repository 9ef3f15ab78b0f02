#!/usr/bin/env python3
"""How many in-batch negatives share the positive's scene class (round 21's question).

    docs/round21/same-class-pairs.py [BATCH] [DATASET.json ...]

Simulates training batches as `train` draws them with both datasets and sampling exponent
1: BATCH images at random from the union of the train splits, one random caption each
(300 batches, seed 0). Counts, per batch, the ordered (row, negative) pairs of one dataset
and class, and how many of those have captions with token-set Jaccard >= 0.8 (near-identical)."""
import json
import random
import sys

DEFAULT = ["../shared/data/ucm-captions/dataset_ucm.json", "../shared/data/rsicd-aid/dataset_rsicd_aid.json"]


def main():
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    paths = sys.argv[2:] or DEFAULT
    items = []
    for k, path in enumerate(paths):
        with open(path) as f:
            for im in json.load(f)["images"]:
                if im["split"] == "train":
                    items.append((k, im.get("class"), [set(s["tokens"]) for s in im["sentences"]]))
    rng = random.Random(0)
    rounds = 300
    same = [0] * len(paths)
    near = [0] * len(paths)
    rows = [0] * len(paths)
    for _ in range(rounds):
        drawn = [(k, c, rng.choice(caps)) for k, c, caps in rng.sample(items, batch)]
        for i, (k, c, s) in enumerate(drawn):
            rows[k] += 1
            for j, (k2, c2, s2) in enumerate(drawn):
                if i != j and k == k2 and c is not None and c == c2:
                    same[k] += 1
                    near[k] += len(s & s2) / len(s | s2) >= 0.8
    for k, path in enumerate(paths):
        r = max(rows[k], 1)
        print(f"{path}: {rows[k] / rounds:.1f} rows per batch of {batch}; per row {same[k] / r:.2f} "
              f"same-class negatives of {batch - 1}, {near[k] / r:.2f} of them near-identical (Jaccard >= 0.8)")


if __name__ == "__main__":
    main()
