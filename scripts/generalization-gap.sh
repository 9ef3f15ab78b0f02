#!/usr/bin/env bash
# The generalisation gap of a model: retrieval on training images against validation, per
# dataset, like for like: N images spread evenly over each split (`eval --sample N`; every
# class), all their captions. UCM-Captions: N = 210 (all of val), RSICD-on-AID: N = 300.
#   scripts/generalization-gap.sh MODEL OUTDIR
# Writes {train,val}-DATASET.json (`eval --json`) in OUTDIR and prints one line per dataset.
# A file that exists is kept, so a stopped run continues. Env: UCM, AID (dataset JSONs),
# BIN, PY (a Python 3, for the summary line).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/generalization-gap.sh MODEL OUTDIR}
OUT=${2:?usage: scripts/generalization-gap.sh MODEL OUTDIR}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
AID=${AID:-../shared/data/rsicd-aid/dataset_rsicd_aid.json}
BIN=${BIN:-target/release/acf-index}
PY=${PY:-python3}
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (config.json missing)" >&2; exit 1; }
mkdir -p "$OUT"

for pair in "$UCM:210" "$AID:300"; do
    data=${pair%:*} n=${pair##*:}
    [ -f "$data" ] || { echo "no dataset at $data (set UCM / AID)" >&2; exit 1; }
    name=$(basename "$data" .json)
    for split in train val; do
        file="$OUT/$split-$name.json"
        [ -s "$file" ] && continue
        "$BIN" eval --model "$MODEL" --json --dataset "$data" --split "$split" --sample "$n" \
            >"$file.part"
        mv "$file.part" "$file"
    done
    "$PY" - "$OUT/train-$name.json" "$OUT/val-$name.json" <<'PY'
import json, sys
mr = [json.load(open(f))["rows"][0]["recall"]["mr"] for f in sys.argv[1:]]
print(f"{sys.argv[1]}: train-sample mR {mr[0]:.2f}, val-sample mR {mr[1]:.2f}, gap {mr[0] - mr[1]:.2f}")
PY
done
