#!/usr/bin/env python3
"""Writes a copy of an RSICD-format dataset JSON in which N training images, spread evenly
over the train split (every len/N-th, so every class is in it), form a split named
`trainsample`; the val split is kept and every other image is moved to `other`.

    scripts/train-sample.py DATASET.json N OUT.json

`acf-index eval --dataset OUT.json --images IMAGES --split trainsample` then measures
retrieval on images the model trained on, to set beside validation (the generalisation gap;
scripts/generalization-gap.sh). `--max-images` takes the first N images instead, which in
these datasets are a few classes only and so not comparable with validation."""
import json
import sys


def main() -> int:
    if len(sys.argv) != 4:
        print("usage: scripts/train-sample.py DATASET.json N OUT.json", file=sys.stderr)
        return 2
    path, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path) as f:
        data = json.load(f)
    train = [i for i, img in enumerate(data["images"]) if img["split"] == "train"]
    if not 0 < n <= len(train):
        print(f"{path}: N must be between 1 and its {len(train)} training images", file=sys.stderr)
        return 1
    step = len(train) / n
    picked = {train[int(k * step)] for k in range(n)}
    for i, img in enumerate(data["images"]):
        if i in picked:
            img["split"] = "trainsample"
        elif img["split"] != "val":
            img["split"] = "other"
    with open(out, "w") as f:
        json.dump(data, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
