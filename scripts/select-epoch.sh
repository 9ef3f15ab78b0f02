#!/usr/bin/env bash
# Applies the model-selection rule of the model card (round 6, used since round 8) to a run
# trained with `train --keep-epochs`: each epoch model named on the command line, and the
# reference model (default models/default), is evaluated on ALL val images of UCM-Captions and
# RSICD-on-AID; an epoch passes only if it beats the reference on both datasets, compared at
# the two decimals printed (a difference under 0.005 mR is a tie, and a tie does not pass).
#
#   scripts/select-epoch.sh OUT_DIR/epochs/epoch-010 OUT_DIR/epochs/epoch-012 ...
#
# Writes EVAL_DIR/val-NAME-{ucm,rsicd_aid}.json (`acf-index eval --split val --json`; default
# EVAL_DIR=runs/select) and prints one table row per model. Evaluations already on disk are
# reused, so a stopped script continues. THREADS (default 2) sets the threads per evaluation.
# SKIP_FAILED=1 leaves RSICD-on-AID unevaluated ("-") for an epoch that already fails on UCM.
# AID_SLACK=D (default 0: the rule above) applies round 19's rule instead: an epoch passes when
# it beats the reference on UCM val and is at most D mR below it on RSICD-on-AID val (round 19
# and later: AID_SLACK=0.3); the table then adds the mean of the two, which ranks those passing.
# Each model is scored with its own config.json. Since round 24 models/default weighs a hubness
# prior (h 3, β 5) and training's epochs have none (`train` sets h to 0): compare like with like,
# either REFERENCE=a copy of the reference with scoring.hubness_prior 0, or each epoch calibrated
# (`acf-index model calibrate`, both datasets' training captions) and given the same h and β.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
BIN=target/release/acf-index
REFERENCE=${REFERENCE:-models/default}
EVAL_DIR=${EVAL_DIR:-runs/select}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
AID=${AID:-../shared/data/rsicd-aid/dataset_rsicd_aid.json}
THREADS=${THREADS:-2}
AID_SLACK=${AID_SLACK:-0}
python3 -c 'import sys; assert float(sys.argv[1]) >= 0' "$AID_SLACK" 2>/dev/null \
    || { echo "AID_SLACK must be a number >= 0, not '$AID_SLACK'" >&2; exit 2; }
# Any spelling of zero (0.0, 0e0) is the old rule, where a tie does not pass.
python3 -c 'import sys; sys.exit(float(sys.argv[1]) != 0)' "$AID_SLACK" && AID_SLACK=0
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
for f in "$UCM" "$AID"; do [ -f "$f" ] || { echo "no dataset at $f" >&2; exit 1; }; done
mkdir -p "$EVAL_DIR"

# name_of MODEL_DIR: a file-name-safe label ("reference", or e.g. "scratch12-epoch-012").
name_of() {
    [ "$1" = "$REFERENCE" ] && { echo reference; return; }
    local parent
    parent=$(basename "$(dirname "$(dirname "$1")")")
    echo "$parent-$(basename "$1")"
}

# val_mr MODEL_DIR DATASET_JSON TAG: evaluates once (to a .part file, renamed when complete)
# and prints the full method's mR.
val_mr() {
    local out
    out="$EVAL_DIR/val-$(name_of "$1")-$3.json"
    if [ ! -f "$out" ]; then
        "$BIN" eval --model "$1" --dataset "$2" --split val --json --quiet >"$out.part"
        mv "$out.part" "$out"
    fi
    python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["rows"][0]["recall"]["mr"])' "$out"
}

# gains A B: true when mR A beats mR B at the two printed decimals (a tie does not).
gains() { python3 -c 'import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))' "$1" "$2"; }

# holds A B: true when mR A is at most AID_SLACK below mR B (with AID_SLACK 0: A beats B).
holds() {
    [ "$AID_SLACK" = 0 ] && { gains "$1" "$2"; return; }
    python3 -c 'import sys; a, b, d = map(float, sys.argv[1:]); sys.exit(not round(b - a, 2) <= d)' \
        "$1" "$2" "$AID_SLACK"
}

# mean A B: the mean of two printed mR, printed the same way.
mean() { python3 -c 'import sys; print("%.2f" % ((float(sys.argv[1]) + float(sys.argv[2])) / 2))' "$1" "$2"; }

ref_ucm=$(val_mr "$REFERENCE" "$UCM" ucm)
ref_aid=$(val_mr "$REFERENCE" "$AID" rsicd_aid)
# row MODEL UCM AID MEAN VERDICT: one table row; the mean column only under AID_SLACK.
row() {
    if [ "$AID_SLACK" = 0 ]; then echo "| $1 | $2 | $3 | ${5:+$5 }|"; else echo "| $1 | $2 | $3 | $4 | ${5:+$5 }|"; fi
}

if [ "$AID_SLACK" = 0 ]; then
    row model "UCM val (all 210)" "RSICD-on-AID val (all 897)" - "both gain?"
    echo "|---|---|---|---|"
else
    row model "UCM val (all 210)" "RSICD-on-AID val (all 897)" mean \
        "passes (UCM gains, RSICD-on-AID ≥ reference − $AID_SLACK)?"
    echo "|---|---|---|---|---|"
fi
row "$REFERENCE (reference)" "$ref_ucm" "$ref_aid" "$(mean "$ref_ucm" "$ref_aid")" ""
for model in "$@"; do
    [ -f "$model/model.safetensors" ] || { echo "$model: not a model directory" >&2; exit 1; }
    ucm=$(val_mr "$model" "$UCM" ucm)
    if [ "${SKIP_FAILED:-0}" = 1 ] && ! gains "$ucm" "$ref_ucm"; then
        row "$model" "$ucm" - - no
        continue
    fi
    aid=$(val_mr "$model" "$AID" rsicd_aid)
    verdict=no
    gains "$ucm" "$ref_ucm" && holds "$aid" "$ref_aid" && verdict=yes
    row "$model" "$ucm" "$aid" "$(mean "$ucm" "$aid")" "$verdict"
done
