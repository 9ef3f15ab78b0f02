#!/usr/bin/env python3
"""How often a dataset's captions repeat word for word across images, and so how often a
training batch holds another image's identical caption (a false negative unless
`loss.mask_duplicate_captions` is on).

    scripts/duplicate-captions.py DATASET.json [BATCH] [SPLIT]     (default 64, train)

Batches are simulated as training draws them with one caption per image per epoch: BATCH
distinct images at random, one random caption each (2,000 batches, seed 0). Captions are
compared by their `tokens` lists (the dataset's own tokenisation)."""
import collections
import json
import random
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    split = sys.argv[3] if len(sys.argv) > 3 else "train"
    with open(sys.argv[1]) as f:
        images = [im for im in json.load(f)["images"] if im["split"] == split]
    captions = [[tuple(s["tokens"]) for s in im["sentences"]] for im in images]
    images_per_caption = collections.Counter(c for cs in captions for c in set(cs))
    every = [c for cs in captions for c in cs]
    shared = sum(images_per_caption[c] > 1 for c in every)
    print(f"{sys.argv[1]} ({split}): {len(images)} images, {len(every)} captions, "
          f"{len(set(every))} distinct; {100 * shared / len(every):.1f} % of captions also describe another image")
    rng = random.Random(0)
    rows = twins = 0
    for _ in range(2000):
        drawn = [rng.choice(captions[i]) for i in rng.sample(range(len(images)), min(batch, len(images)))]
        count = collections.Counter(drawn)
        rows += len(drawn)
        twins += sum(count[c] > 1 for c in drawn)
    print(f"batches of {batch}: {100 * twins / rows:.1f} % of rows have another image's identical caption in the batch")


if __name__ == "__main__":
    main()
