#!/usr/bin/env bash
# Sets up whatever is missing (scripts/setup.sh), then runs the main job on the bundled examples.
# Until `index`/`query` land, the main job ranks the bundled example images for a few captions
# with models/default (or a freshly initialised, untrained model if that is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=target/release/acf-index
model=models/default
if [ ! -f "$model/model.safetensors" ]; then
    model=target/example-model
    [ -f "$model/model.safetensors" ] || "$bin" model init --config pvig-nano --vocab-from examples/images.json --out "$model" --force
    echo "note: no trained model in models/default yet; using the untrained $model (rankings are not meaningful)" >&2
fi
"$bin" doctor
for text in "many planes parked at the airport" "a tennis court surrounded by trees" "boats in a harbor"; do
    echo
    echo "== $text"
    "$bin" rank --model "$model" --text "$text" examples/images/*.jpg
done
