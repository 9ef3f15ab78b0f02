#!/usr/bin/env python3
"""Experiment tool (round 12): uniform average of several model directories' weights
(stochastic weight averaging across epochs, Izmailov et al. 2018), written as a new model
directory that `acf-index eval` can load. Every tensor is averaged, BatchNorm running
statistics included (not recomputed). The models must share vocabulary and config (the
training block aside); the first one's config.json and vocab.json are copied. Not a product
feature: it was measured (docs/round12/README.md), did not gain on validation, and is kept so
the figures can be rerun. Needs numpy and safetensors (scripts/setup.sh puts both in .venv).

    .venv/bin/python scripts/average-weights.py OUT_DIR MODEL_DIR MODEL_DIR [...]
"""
import filecmp
import json
import os
import shutil
import sys

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file


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
    if os.path.exists(os.path.join(out, "model.safetensors")):
        sys.exit(f"{out} already holds a model: choose a new output directory")
    first = architecture(models[0])
    for m in models[1:]:
        if not filecmp.cmp(os.path.join(models[0], "vocab.json"), os.path.join(m, "vocab.json"), shallow=False):
            sys.exit(f"{m}/vocab.json differs from {models[0]}/vocab.json")
        if architecture(m) != first:
            sys.exit(f"{m}/config.json: architecture or scoring differs from {models[0]}")
    averaged, metadata = average(models)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.safetensors.part")
    save_file(averaged, tmp, metadata=metadata)
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    for f in ("config.json", "vocab.json"):
        shutil.copy(os.path.join(models[0], f), os.path.join(out, f))
    with open(os.path.join(out, "MODEL_CARD.md"), "w") as f:
        f.write("# Experiment: uniform weight average\n\nOf: " + ", ".join(models) + "\n")


def average(models):
    """The element-wise mean of every tensor of the models' weights (in float64, stored as
    float32), and the first file's metadata."""
    total, shapes, metadata = {}, None, None
    for m in models:
        path = os.path.join(m, "model.safetensors")
        try:
            opened = safe_open(path, framework="numpy")
        except (OSError, SafetensorError) as e:
            sys.exit(f"{path}: cannot read the weights: {e}")
        with opened as f:
            names = sorted(f.keys())
            here = {k: f.get_slice(k).get_shape() for k in names}
            if shapes is None:
                shapes, metadata = here, f.metadata()
            elif here != shapes:
                sys.exit(f"{m}: tensor names or shapes differ from {models[0]}")
            for k in names:
                t = f.get_tensor(k)
                if t.dtype != np.float32:
                    sys.exit(f"{m}: tensor {k} is {t.dtype}, expected float32")
                total[k] = total.get(k, 0.0) + t.astype(np.float64)
    return {k: (v / len(models)).astype(np.float32) for k, v in total.items()}, metadata


if __name__ == "__main__":
    main()
