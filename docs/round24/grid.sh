#!/usr/bin/env bash
# Round 24's grid: the caption-bank hubness prior on the shipped weights, on validation.
# Usage: docs/round24/grid.sh MODEL OUT [DATASET_KEY…]   (keys: ucm, rsicd_aid; default both)
# Calibrates a copy of MODEL on the training captions of both datasets (bank 2048), then for
# each β in 5 10 20 40 evaluates all val images at h = 0.5 1 1.5 2 3 (one eval per β; the
# first row of each file is h 0, the shipped scoring).
set -euo pipefail
MODEL=$1; OUT=$2; shift 2
KEYS=${*:-ucm rsicd_aid}
B=${ACF:-target/release/acf-index}
U=../shared/data/ucm-captions/dataset_ucm.json
A=../shared/data/rsicd-aid/dataset_rsicd_aid.json
mkdir -p "$OUT/bank"
cp "$MODEL"/{config.json,vocab.json,model.safetensors} "$OUT/bank/"
[ -f "$OUT/bank/prior.safetensors" ] || $B model calibrate --model "$OUT/bank" --dataset $U --dataset $A --bank 2048 --quiet
for beta in 5 10 20 40; do
  d="$OUT/beta$beta"; mkdir -p "$d"
  cp "$OUT/bank"/{vocab.json,model.safetensors,prior.safetensors} "$d/"
  python3 - "$OUT/bank/config.json" "$d/config.json" "$beta" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["scoring"]["hubness_sharpness"] = float(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
  for key in $KEYS; do
    ds=$U; [ "$key" = rsicd_aid ] && ds=$A
    f="$OUT/val-beta$beta-$key.json"
    [ -s "$f" ] && continue
    $B eval --model "$d" --dataset $ds --split val --json --quiet \
      --sweep hubness_prior=0.5,1,1.5,2,3 > "$f.tmp" && mv "$f.tmp" "$f"
    echo "$(date -u +%H:%M:%S) β $beta $key done"
  done
done
