#!/usr/bin/env python3
"""Packs image-caption datasets (RSICD JSON format) into a size budget for a GPU run.

The first --val-images of each val split are packed first (the trainer picks its best epoch
with them); then training images, alternating between the datasets in their file order,
until the budget is spent. Test splits stay behind: the trained weights come back and are
evaluated where the data is. Images wider than 224 px are re-encoded as 224 x 224 JPEG
(quality 80); smaller JPEGs are copied as they are. Writes
OUT/<dataset>/<dataset>.json (only the packed images) and OUT/<dataset>/images/ (the loader
looks for images/ beside the JSON).

Usage: gpu_pack_data.py --out DIR --budget-bytes N DATASET.json...
"""
import argparse
import io
import json
import os
import shutil
import sys

from PIL import Image


def encoded(path):
    with Image.open(path) as im:
        if im.width <= 224 and im.height <= 224 and path.lower().endswith((".jpg", ".jpeg")):
            return None  # copied as it is
        buf = io.BytesIO()
        im.convert("RGB").resize((224, 224), Image.BILINEAR).save(buf, "JPEG", quality=80)
        return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-bytes", type=int, required=True)
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--max-train", type=int, default=None, help="at most this many training images")
    ap.add_argument("datasets", nargs="+")
    args = ap.parse_args()
    if args.budget_bytes <= 0:
        sys.exit(f"error: no room left for images (budget {args.budget_bytes} bytes)")
    shutil.rmtree(args.out, ignore_errors=True)
    sets = []
    for path in args.datasets:
        with open(path) as f:
            d = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0].removeprefix("dataset_")
        sets.append((name, d, os.path.join(os.path.dirname(path), "images")))
    used = 0
    kept = {name: [] for name, _, _ in sets}

    def add(name, src_dir, img):
        nonlocal used
        src = os.path.join(src_dir, img["filename"])
        data = encoded(src)
        size = len(data) if data is not None else os.path.getsize(src)
        if used + size > args.budget_bytes:
            return False
        dst_dir = os.path.join(args.out, name, "images")
        os.makedirs(dst_dir, exist_ok=True)
        filename = os.path.splitext(img["filename"])[0] + ".jpg"
        dst = os.path.join(dst_dir, filename)
        if data is None:
            shutil.copyfile(src, dst)
        else:
            with open(dst, "wb") as f:
                f.write(data)
        used += size
        kept[name].append(dict(img, filename=filename))
        return True

    # Validation images first: the first --val-images of each val split.
    for split, limit in (("val", args.val_images),):
        for name, d, src in sets:
            imgs = [i for i in d["images"] if i["split"] == split][:limit]
            for img in imgs:
                if not add(name, src, img):
                    sys.exit(f"error: the {split} images of {name} do not fit in {args.budget_bytes} bytes")
    queues = [(name, src, [i for i in d["images"] if i["split"] == "train"]) for name, d, src in sets]
    full = False
    k = 0
    train = 0
    while not full and any(k < len(q) for _, _, q in queues):
        for name, src, q in queues:
            if args.max_train is not None and train >= args.max_train:
                full = True
                break
            if k < len(q):
                if not add(name, src, q[k]):
                    full = True
                    break
                train += 1
        k += 1
    for name, d, _ in sets:
        out = {"dataset": d.get("dataset", name), "images": kept[name]}
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
        with open(os.path.join(args.out, name, f"{name}.json"), "w") as f:
            json.dump(out, f)
    counts = {n: {s: sum(1 for i in kept[n] if i["split"] == s) for s in ("train", "val", "test")} for n in kept}
    print(json.dumps({"bytes": used, "images": counts}))


if __name__ == "__main__":
    main()
