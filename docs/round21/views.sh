#!/usr/bin/env bash
# Round 21: test-time views on a model, on ALL val images of UCM-Captions and RSICD-on-AID
# (`acf-index eval --split val --views N --json`), one JSON per (views, dataset) in OUT_DIR.
# Results already on disk are kept, so a stopped run continues; 1 view is the model's
# plain `eval --split val` (for the shipped model: runs/select19/val-reference-*.json).
#
#   docs/round21/views.sh MODEL_DIR OUT_DIR [VIEWS...]        (default views: 2 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { sed -n '2,7p' "$0" >&2; exit 2; }
MODEL=$1 OUT=$2
shift 2
VIEWS=(2 4)
[ $# -ge 1 ] && VIEWS=("$@")
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2} RAYON_NUM_THREADS=${THREADS:-2}
mkdir -p "$OUT"
for v in "${VIEWS[@]}"; do
  for ds in ucm:../shared/data/ucm-captions/dataset_ucm.json rsicd_aid:../shared/data/rsicd-aid/dataset_rsicd_aid.json; do
    name=${ds%%:*} json=${ds#*:}
    file="$OUT/val-views$v-$name.json"
    [ -s "$file" ] && continue
    target/release/acf-index eval --model "$MODEL" --dataset "$json" --split val --views "$v" --json \
      > "$file.part" && mv "$file.part" "$file"
    echo "$(date +%T) $file: mR $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["rows"][0]["recall"]["mr"], 2))' "$file" 2>/dev/null || echo '?')"
  done
done
