# Sourced by scripts/training-ablations.sh and scripts/negative-masking.sh (from the repo
# root, with WORK set): sets JOBS (default 2), UCM (the UCM-Captions JSON) and BIN, gives each
# run one thread, checks that the binary and the dataset exist, and creates WORK.
# run_all then trains the configs WORK/NAME.json, JOBS at a time, each into WORK/out-NAME,
# and evaluates each best-validation model on DATASET's test split (WORK/out-NAME/test.json).
# run_all needs DATASET and EPOCHS; INIT_FROM (optional) names a model that each run
# fine-tunes instead of starting from random weights.
# A run with test.json is skipped and one with a checkpoint resumes, so a stopped script
# continues. A run that fails names itself in WORK/failed (a background job's exit status is
# lost once `wait -n` has reaped it), and run_all returns 1 after the others finish.

JOBS=${JOBS:-2}
UCM=${UCM:-../shared/data/ucm-captions/dataset_ucm.json}
BIN=target/release/acf-index
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RAYON_NUM_THREADS=1
[ -x "$BIN" ] || { echo "no $BIN: run scripts/setup.sh first" >&2; exit 1; }
[ -f "$UCM" ] || { echo "no UCM-Captions dataset at $UCM (set UCM=...)" >&2; exit 1; }
mkdir -p "$WORK"

one_run() {
    local name=$1 out="$WORK/out-$1"
    [ -f "$out/test.json" ] && { echo "$name: done already"; return; }
    local start=()
    [ -n "${INIT_FROM:-}" ] && start=(--init-from "$INIT_FROM")
    [ -d "$out/checkpoint" ] && start=(--resume)
    echo "$name: training ($EPOCHS epochs) -> $out"
    "$BIN" train --dataset "$DATASET" --config "$WORK/$name.json" --out "$out" --val-images 0 \
        --log-format json "${start[@]}" >"$WORK/$name.log" 2>&1 &&
        "$BIN" eval --model "$out" --dataset "$DATASET" --split test --json >"$out/test.json.part" 2>>"$WORK/$name.log" &&
        mv "$out/test.json.part" "$out/test.json" &&
        echo "$name: finished" ||
        { echo "$name: FAILED (see $WORK/$name.log)"; echo "$name" >>"$WORK/failed"; }
}

# run_all NAME...: every run, JOBS at a time.
run_all() {
    rm -f "$WORK/failed"
    local name
    for name in "$@"; do
        one_run "$name" &
        while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    done
    wait
    [ ! -f "$WORK/failed" ]
}
