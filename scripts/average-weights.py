#!/usr/bin/env python3
"""Experiment tool (round 12): uniform average of several model directories' weights
(stochastic weight averaging across epochs, Izmailov et al. 2018), written as a new model
directory that `acf-index eval` can load. Every tensor is averaged, BatchNorm running
statistics included (not recomputed). The models must share vocabulary and config (the training block
aside); the first one's config.json and vocab.json are copied. Not a product feature: it was measured
(docs/round12/README.md), did not gain on validation, and is kept so the figures can be rerun.

    .venv/bin/python scripts/average-weights.py OUT_DIR MODEL_DIR MODEL_DIR [...]
"""
import filecmp
import json
import os
import shutil
import struct
import sys

import numpy as np


def read(path):
    """(header without metadata, metadata, {name: float32 array}) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(data[a:b], dtype=np.float32)
    return header, meta, tensors


def architecture(model):
    """config.json without its training block (runs continued with another schedule differ there)."""
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    config.pop("training", None)
    return config


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, models = sys.argv[1], sys.argv[2:]
    for m in models:
        for f in ("config.json", "vocab.json", "model.safetensors"):
            if not os.path.isfile(os.path.join(m, f)):
                sys.exit(f"{m}: not a model directory ({f} is missing)")
    for m in models[1:]:
        if not filecmp.cmp(os.path.join(models[0], "vocab.json"), os.path.join(m, "vocab.json"), shallow=False):
            sys.exit(f"{m}/vocab.json differs from {models[0]}/vocab.json")
        if architecture(models[0]) != architecture(m):
            sys.exit(f"{m}/config.json: architecture or scoring differs from {models[0]}")
    header, meta, first = read(os.path.join(models[0], "model.safetensors"))
    total = {k: v.astype(np.float64) for k, v in first.items()}
    for m in models[1:]:
        h, _, t = read(os.path.join(m, "model.safetensors"))
        if {k: v["shape"] for k, v in h.items()} != {k: v["shape"] for k, v in header.items()}:
            sys.exit(f"{m}: tensor names or shapes differ from {models[0]}")
        for k in total:
            total[k] += t[k]
    os.makedirs(out, exist_ok=True)
    new_header, blobs, offset = {}, [], 0
    for k in sorted(total):
        blob = (total[k] / len(models)).astype("<f4").tobytes()
        new_header[k] = {"dtype": "F32", "shape": header[k]["shape"], "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if meta:
        new_header["__metadata__"] = meta
    encoded = json.dumps(new_header, sort_keys=True).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    tmp = os.path.join(out, "model.safetensors.part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    for f in ("config.json", "vocab.json"):
        shutil.copy(os.path.join(models[0], f), os.path.join(out, f))
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write("# Experiment: uniform weight average\n\nOf: " + ", ".join(models) + "\n")


if __name__ == "__main__":
    main()
