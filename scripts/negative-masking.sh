#!/usr/bin/env bash
# Does masking duplicate captions (loss.mask_duplicate_captions) help, and does it make the
# spec's hardest negatives usable? Four short fine-tunes of the shipped model on
# UCM-Captions train (1,680 images; the captions that repeat word for word across images),
# one caption per image per epoch (27 steps of 64), EPOCHS epochs, Adam from LR cosine to 1e-5,
# word dropout 0.1, seed 42; everything else is models/default/config.json:
#   sum        summed negatives, no mask (the round 2–4 recipe: the control)
#   sum-mask   summed negatives, duplicate captions masked
#   hard       hardest negatives, no mask (the spec's default)
#   hard-mask  hardest negatives, duplicate captions masked
# Each run is validated on all 210 UCM val images after each epoch (OUT/metrics.jsonl) and its
# best-validation model evaluated on the 210 UCM test images (OUT/test.json); the shipped
# model's own val/test numbers are the "before" row (WORK/before-val.json, before-test.json).
#
#   scripts/negative-masking.sh [WORKDIR]        (default /tmp/acf-masking)
#   env: EPOCHS (2), LR (2e-4), RUNS ("sum sum-mask hard hard-mask"), JOBS (2 at once, one
#        thread each), UCM (default ../shared/data/ucm-captions/dataset_ucm.json)
# Then: scripts/training-ablation-table.py WORKDIR   (markdown tables)
# Runs that already have OUT/test.json are skipped, so a stopped run of this script continues.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/acf-masking}
EPOCHS=${EPOCHS:-2}
LR=${LR:-2e-4}
RUNS=${RUNS:-"sum sum-mask hard hard-mask"}
source scripts/train-runs.sh   # JOBS, UCM, BIN, one thread per run, checks

EPOCHS=$EPOCHS LR=$LR WORK=$WORK .venv/bin/python - <<'EOF'
import copy, json, os
base = json.load(open("models/default/config.json"))
base["training"].update(learning_rate=float(os.environ["LR"]), epochs=int(os.environ["EPOCHS"]),
                        lr_schedule="cosine", lr_min=1e-5, captions_per_epoch="one", seed=42,
                        warmup_sum_epochs=0, word_dropout=0.1)
variants = {"sum": ("sum", False), "sum-mask": ("sum", True), "hard": ("hardest", False),
            "hard-mask": ("hardest", True)}
for name, (negatives, mask) in variants.items():
    c = copy.deepcopy(base)
    c["loss"].update(negatives=negatives, mask_duplicate_captions=mask)
    with open(os.path.join(os.environ["WORK"], f"{name}.json"), "w") as f:
        json.dump(c, f, indent=2)
EOF

for split in val test; do
    [ -f "$WORK/before-$split.json" ] ||
        { "$BIN" eval --model models/default --dataset "$UCM" --split "$split" --json >"$WORK/before-$split.json.part" &&
          mv "$WORK/before-$split.json.part" "$WORK/before-$split.json"; } &
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
done
wait
for split in val test; do
    [ -f "$WORK/before-$split.json" ] || { echo "evaluating models/default on the $split split failed" >&2; exit 1; }
done
DATASET=$UCM INIT_FROM=models/default
# shellcheck disable=SC2086 # RUNS is a list of names
run_all $RUNS
