#!/usr/bin/env bash
# GPU check: CUDA against CPU, throughput, and a pvig-ti training run, on a machine that has
# PyTorch 2.11's libtorch but no Rust toolchain and no GDAL (DEVELOPERS.md, "GPU").
#
#   scripts/gpu-check.sh pack            # here: build without GDAL, pack device-carry/ (< 64 MiB)
#   scripts/gpu-check.sh run             # there (repo root, device-carry/ carried): checks,
#                                        # throughput, training; results under $OUT (or ./gpu-out)
#
# `pack` settings: PACK_VAL_IMAGES (300 per dataset), PACK_MAX_TRAIN (no cap: the budget decides).
# `run` settings: DEVICE (cuda), TRAIN_SECONDS (300), TRAIN_EPOCHS (30), BENCH_SECONDS (2),
# BENCH_BATCHES (64,256). Tested without a GPU by running the same steps on the CPU, small:
#   PACK_VAL_IMAGES=20 PACK_MAX_TRAIN=40 scripts/gpu-check.sh pack
#   DEVICE=cpu TRAIN_SECONDS=400 TRAIN_EPOCHS=1 BENCH_SECONDS=0 BENCH_BATCHES=4 scripts/gpu-check.sh run
#
# What `run` writes: checks.jsonl (bench devices), bench.jsonl (bench model), train.log,
# metrics.jsonl (validation mR per epoch), the best epoch's model as config.json, vocab.json,
# MODEL_CARD.md and model.safetensors.part-NN (≤ 15 MiB each), and summary.txt. Back here:
#   mkdir m && cp OUT/{config,vocab}.json m/ && cat OUT/model.safetensors.part-* > m/model.safetensors
#   acf-index eval --model m --dataset …/dataset_ucm.json --split test
# Exit code: 1 when a device check fails (nothing is trained then).
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=device-carry
BUDGET_MIB=63
say() { printf '[gpu-check] %s\n' "$*" >&2; }

pack() {
    # Its own target folder: the GDAL build in target/release stays as it is.
    say "cargo build --release --no-default-features --bin acf-index-engine (no GDAL, target/gpu)"
    CARGO_TARGET_DIR=target/gpu cargo build --release --no-default-features --bin acf-index-engine --quiet
    rm -rf "$PACK" && mkdir -p "$PACK"
    cp target/gpu/release/acf-index-engine "$PACK/acf-index-engine"
    strip "$PACK/acf-index-engine" 2>/dev/null || true
    cp scripts/gpu-check.sh "$PACK/gpu-check.sh"
    mkdir -p "$PACK/model" && cp models/default/{config.json,vocab.json} "$PACK/model/"
    # Training config for the GPU run: the pvig-ti preset with what worked on the CPU
    # (summed negatives, every caption each epoch, cosine schedule, word dropout).
    "$PACK/acf-index-engine" model init --config pvig-ti --vocab-from tests/fixtures/ucm-mini/dataset.json \
        --out "$PACK/.preset" --force >/dev/null
    .venv/bin/python - "$PACK/.preset/config.json" "$PACK/pvig-ti.json" <<'EOF'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg["loss"]["negatives"] = "sum"
cfg["training"].update(batch_size=128, learning_rate=5e-4, epochs=30, warmup_sum_epochs=0,
                       captions_per_epoch="all", lr_schedule="cosine", lr_min=1e-5, word_dropout=0.1)
cfg["training_gsd_m"] = [0.3, 8.0]
json.dump(cfg, open(sys.argv[2], "w"), indent=2)
EOF
    rm -rf "$PACK/.preset"
    local used
    used=$(du -sb "$PACK" | cut -f1)
    say "binary and model files: $((used / 1048576)) MiB; images get the rest of ${BUDGET_MIB} MiB"
    .venv/bin/python scripts/gpu_pack_data.py --out "$PACK/data" --budget-bytes $((BUDGET_MIB * 1048576 - used)) \
        --val-images "${PACK_VAL_IMAGES:-300}" ${PACK_MAX_TRAIN:+--max-train "$PACK_MAX_TRAIN"} \
        ../shared/data/ucm-captions/dataset_ucm.json ../shared/data/rsicd-aid/dataset_rsicd_aid.json
    say "packed $(du -sh "$PACK" | cut -f1) into $PACK/ (carry it: run(carry=[\"$PACK\"]))"
}

run() {
    local out=${OUT:-gpu-out} device=${DEVICE:-cuda}
    local train_s=${TRAIN_SECONDS:-300} epochs=${TRAIN_EPOCHS:-30} bench_s=${BENCH_SECONDS:-2}
    mkdir -p "$out"
    local torch_lib
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null \
        || .venv/bin/python -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    local bin=$PACK/acf-index-engine
    chmod +x "$bin"
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "device: $device"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
        fi
        echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
        "$bin" --version
    } > "$out/summary.txt"

    say "1/4 device checks against the CPU (fresh weights of the pvig-nano and pvig-ti configs)"
    local ds=(--dataset "$PACK/data/ucm/ucm.json" --dataset "$PACK/data/rsicd_aid/rsicd_aid.json")
    local failed=0
    : > "$out/checks.jsonl"
    for cfg in "$PACK/model/config.json" "$PACK/pvig-ti.json"; do
        "$bin" bench devices --device "$device" --config "$cfg" --batch 8 --json >> "$out/checks.jsonl" || failed=1
    done
    echo "checks passed: $(grep -c '"pass":true' "$out/checks.jsonl" || true) of $(wc -l < "$out/checks.jsonl")" >> "$out/summary.txt"
    if [ "$failed" = 1 ]; then
        say "a device check failed: see $out/checks.jsonl"; grep '"pass":false' "$out/checks.jsonl" >&2; exit 1
    fi

    say "2/4 throughput: pvig-nano and pvig-ti, batch 64 and 256, float32 and bfloat16"
    "$bin" bench model --device "$device" --configs "$PACK/model/config.json,$PACK/pvig-ti.json" \
        --batches "${BENCH_BATCHES:-64,256}" --min-seconds "$bench_s" --json > "$out/bench.jsonl"

    say "3/4 training pvig-ti for ${train_s} s (at most ${epochs} epochs)"
    rm -rf "$out/run"
    set +e
    timeout -s INT -k 60 "$train_s" "$bin" train --config "$PACK/pvig-ti.json" --epochs "$epochs" \
        "${ds[@]}" --out "$out/run" --device "$device" --val-images "${PACK_VAL_IMAGES:-300}" \
        > "$out/train.log" 2>&1
    echo "train exit: $?" >> "$out/summary.txt"
    set -e
    cp "$out/run/metrics.jsonl" "$out/metrics.jsonl" 2>/dev/null || true

    say "4/4 the best epoch's weights in pieces (evaluate them where the test data is)"
    if [ -f "$out/run/model.safetensors" ]; then
        cp "$out/run/config.json" "$out/run/vocab.json" "$out/run/MODEL_CARD.md" "$out/" 2>/dev/null || true
        split -b 15M -d "$out/run/model.safetensors" "$out/model.safetensors.part-"
        sha256sum "$out/run/model.safetensors" >> "$out/summary.txt"
    else
        echo "no epoch finished: no model" >> "$out/summary.txt"
    fi
    rm -rf "$out/run"
    cat "$out/summary.txt" >&2
}

case "${1:-}" in
    pack) pack ;;
    run) run ;;
    *) sed -n 2,24p "$0" >&2; exit 2 ;;
esac
