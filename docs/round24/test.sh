#!/usr/bin/env bash
# Round 24's test read: the chosen (h, β) on the test split of both datasets, once.
# Usage: docs/round24/test.sh MODEL_DIR OUT   (MODEL_DIR: a calibrated copy with h and β set)
set -euo pipefail
MODEL=$1; OUT=$2
B=${ACF:-target/release/acf-index}
mkdir -p "$OUT"
for key in ucm rsicd_aid; do
  ds=../shared/data/ucm-captions/dataset_ucm.json
  [ "$key" = rsicd_aid ] && ds=../shared/data/rsicd-aid/dataset_rsicd_aid.json
  $B eval --model "$MODEL" --dataset $ds --split test --ablate --json --quiet > "$OUT/test-ablate-$key.json.tmp"
  mv "$OUT/test-ablate-$key.json.tmp" "$OUT/test-ablate-$key.json"
  echo "$(date -u +%H:%M:%S) test $key done"
done
