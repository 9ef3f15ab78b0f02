#!/usr/bin/env bash
# Round 24: what the caption-bank hubness prior costs a search. `bench query` on a synthetic
# index of 10,000 chips (N = 1,000 candidates, the stage-2 work does not depend on the index
# size), alternating the shipped model (h 3, β 5) and a copy of it with the prior off, RUNS
# times each. Usage: docs/round24/bench.sh [RUNS]   (default 3; output on stdout)
set -euo pipefail
RUNS=${1:-3}
B=${ACF:-target/release/acf-index}
off=target/bench-noprior
mkdir -p "$off"
cp models/default/{vocab.json,model.safetensors} "$off/"
python3 - "$off/config.json" <<'PY'
import json, sys
c = json.load(open("models/default/config.json"))
c["scoring"]["hubness_prior"] = 0.0
c["scoring"]["hubness_sharpness"] = 0.0
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
echo "$(date -u +%FT%TZ) $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for i in $(seq "$RUNS"); do
  for m in models/default "$off"; do
    echo "== run $i, $m"
    $B bench query --chips 10000 --warm-runs 10 --model "$m" --dir target/bench-query 2>&1 | grep -E "^ *(mode|cli|process|served) "
  done
done
