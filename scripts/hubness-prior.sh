#!/usr/bin/env bash
# The hubness prior (scoring.hubness_prior, `acf-index model calibrate`) measured on a model:
# three copies of MODEL, calibrated on the training captions of UCM-Captions + RSICD-on-AID
# ("all"), of UCM-Captions alone ("ucm") and of RSICD-on-AID alone ("rsicd"), each evaluated
# on its datasets' val split with `eval --sweep hubness_prior=…` (row "ACF (full)" = off),
# and the UCM-calibrated copy on UCM test at the weight chosen on val (HTEST, default 1.5).
#   scripts/hubness-prior.sh MODEL OUTDIR
# Writes OUTDIR/*.json (`eval --json`); a result that exists is kept, so a stopped run
# continues. The calibrated copies go to WORK (default runs/hubness-models, git-ignored).
# Env: UCM, AID, BIN, HTEST, WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: scripts/hubness-prior.sh MODEL OUTDIR}
OUT=${2:?usage: scripts/hubness-prior.sh MODEL OUTDIR}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
AID=${AID:-../shared/data/rsicd-aid/dataset_rsicd_aid.json}
BIN=${BIN:-target/release/acf-index}
HTEST=${HTEST:-1.5}
WORK=${WORK:-runs/hubness-models}
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$MODEL/config.json" ] || { echo "no model at $MODEL (config.json missing)" >&2; exit 1; }
mkdir -p "$OUT"

calibrated() { # all|ucm|rsicd -> a copy of MODEL with a prior from those training captions
    local dir="$WORK/prior-$1"
    case $1 in all) set -- "$UCM" "$AID" ;; ucm) set -- "$UCM" ;; rsicd) set -- "$AID" ;; esac
    if [ ! -s "$dir/prior.safetensors" ]; then
        rm -rf "$dir" && mkdir -p "$dir"
        cp "$MODEL/config.json" "$MODEL/vocab.json" "$MODEL/model.safetensors" "$dir/"
        local args=(); for d in "$@"; do args+=(--dataset "$d"); done
        "$BIN" model calibrate -q --model "$dir" "${args[@]}" >&2
    fi
    echo "$dir"
}
evaluate() { # FILE all|ucm|rsicd DATASET SPLIT SWEEP
    [ -s "$OUT/$1.json" ] && return
    local model; model=$(calibrated "$2")
    "$BIN" eval -q --model "$model" --json --dataset "$3" --split "$4" --sweep "hubness_prior=$5" >"$OUT/$1.json.part"
    mv "$OUT/$1.json.part" "$OUT/$1.json"
}

evaluate val-ucm-prior-all all "$UCM" val 1,1.5,2
evaluate val-ucm-prior-ucm ucm "$UCM" val 1,1.5,2
evaluate test-ucm-prior-ucm ucm "$UCM" test "$HTEST"
evaluate val-aid-prior-all all "$AID" val 1,1.5
evaluate val-aid-prior-rsicd rsicd "$AID" val 1,1.5

for f in "$OUT"/*.json; do
    python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = "  ".join(f"{r['method'].replace('hubness_prior = ', 'h=')}: {r['recall']['mr']:.2f}" for r in d["rows"])
print(f"{sys.argv[1].rsplit('/', 1)[-1]:28} {rows}")
PY
done
