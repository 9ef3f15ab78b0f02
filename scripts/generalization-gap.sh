#!/usr/bin/env bash
# The generalisation gap of a model: retrieval on an evenly spread sample of its training
# images against validation, per dataset, in the same setting (the same number of images):
#   scripts/generalization-gap.sh MODEL OUTDIR
# UCM-Captions: 210 training images against all 210 val images; RSICD-on-AID: 300 against
# the first 300 val images (the validation the trainer and the model card use; those are a
# few classes, the training sample spans all 30, so only the UCM pair is like for like).
# Writes {train,val}-DATASET.json (`eval --json`) in OUTDIR and prints one line per dataset.
# A file that exists is kept. Env: UCM, AID (dataset JSONs), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/generalization-gap.sh MODEL OUTDIR}
OUT=${2:?usage: scripts/generalization-gap.sh MODEL OUTDIR}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
AID=${AID:-../shared/data/rsicd-aid/dataset_rsicd_aid.json}
BIN=${BIN:-target/release/acf-index}
PY=${PY:-.venv/bin/python}
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (config.json missing)" >&2; exit 1; }
mkdir -p "$OUT"

run() { # FILE ARGS...
    local file=$1; shift
    [ -s "$file" ] && return
    "$BIN" eval --model "$MODEL" --json "$@" >"$file.part"
    mv "$file.part" "$file"
}

for pair in "$UCM:210" "$AID:300"; do
    data=${pair%:*} n=${pair##*:}
    [ -f "$data" ] || { echo "no dataset at $data (set UCM / AID)" >&2; exit 1; }
    name=$(basename "$data" .json)
    sample="$OUT/$name.trainsample.json"
    [ -s "$sample" ] || "$PY" scripts/split-sample.py "$data" train "$n" "$sample"
    run "$OUT/train-$name.json" --dataset "$sample" --images "$(dirname "$data")/images" \
        --split sample
    run "$OUT/val-$name.json" --dataset "$data" --split val --max-images "$n"
    "$PY" - "$OUT/train-$name.json" "$OUT/val-$name.json" <<'PY'
import json, sys
mr = [json.load(open(f))["rows"][0]["recall"]["mr"] for f in sys.argv[1:]]
print(f"{sys.argv[1]}: train-sample mR {mr[0]:.2f}, val mR {mr[1]:.2f}, gap {mr[0] - mr[1]:.2f}")
PY
done
