#!/usr/bin/env python3
"""Writes a copy of an RSICD-format dataset JSON in which N images of one split, spread evenly
over it (every len/N-th, so every class is in it: the datasets list images class by class),
form a split named `sample`; every other image is moved to a split named `other`.

    scripts/split-sample.py DATASET.json SPLIT N OUT.json

`acf-index eval --dataset OUT.json --images IMAGES --split sample` then measures retrieval on
those images. With SPLIT = train it measures how well a model retrieves images it trained on,
to set beside validation (scripts/generalization-gap.sh); with SPLIT = val it gives a
validation sample over all classes. `--max-images N` takes the first N images instead, which
in these datasets are a few classes only."""
import json
import sys

USAGE = "usage: scripts/split-sample.py DATASET.json SPLIT N OUT.json"


def main() -> int:
    if len(sys.argv) != 5 or not sys.argv[3].isdigit():
        print(USAGE, file=sys.stderr)
        return 2
    path, split, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(path) as f:
        data = json.load(f)
    members = [i for i, img in enumerate(data["images"]) if img["split"] == split]
    if not 0 < n <= len(members):
        print(f"{path}: N must be between 1 and its {len(members)} '{split}' images", file=sys.stderr)
        return 1
    step = len(members) / n
    picked = {members[int(k * step)] for k in range(n)}
    for i, img in enumerate(data["images"]):
        img["split"] = "sample" if i in picked else "other"
    with open(out, "w") as f:
        json.dump(data, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
