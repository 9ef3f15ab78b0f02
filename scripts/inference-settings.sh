#!/usr/bin/env bash
# Chooses a model's inference-time settings on validation and reports them on test:
#   scripts/inference-settings.sh MODEL OUTDIR
# For each dataset (UCM-Captions, RSICD-on-AID): on the first 300 val images, the global
# weight (S = R + w·sim_g) at 1 and 2 test-time views, the correction form, q and p (the
# paper's Tables 1 and 2) and the attention temperature λ; on the test split the model's own
# settings with the M3-M5 ablations, and again at 2 views. One `eval --json` file per run in
# OUTDIR, named {val,test}-SETTING-DATASET.json; scripts/paper-tables.py lays them out. A file that
# exists is kept, so a stopped run continues. Env: UCM, AID (dataset JSONs), BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/inference-settings.sh MODEL OUTDIR}
OUT=${2:?usage: scripts/inference-settings.sh MODEL OUTDIR}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
AID=${AID:-../shared/data/rsicd-aid/dataset_rsicd_aid.json}
BIN=${BIN:-target/release/acf-index}
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (config.json missing)" >&2; exit 1; }
for d in "$UCM" "$AID"; do [ -f "$d" ] || { echo "no dataset at $d (set UCM / AID)" >&2; exit 1; }; done
mkdir -p "$OUT"

one() { # NAME DATASET ARGS...
    local name=$1 data=$2; shift 2
    local file="$OUT/$name-$(basename "$data" .json).json"
    [ -s "$file" ] && { echo "$file: kept"; return; }
    echo "$file"
    "$BIN" eval --model "$MODEL" --dataset "$data" --json "$@" >"$file.part"
    mv "$file.part" "$file"
}

for data in "$UCM" "$AID"; do
    for views in 1 2; do
        one "val-views$views" "$data" --split val --max-images 300 --views "$views" \
            --sweep global_weight=2,3,5,8
    done
    one val-tables "$data" --split val --max-images 300 \
        --sweep correction=off,scaled --sweep q=0,0.05,0.2 --sweep p=0.1,0.2,0.4,0.5
    one val-lambda "$data" --split val --max-images 300 --sweep lambda=5,15
    one test-views1 "$data" --split test --views 1 --ablate
    one test-views2 "$data" --split test --views 2
done
