#!/usr/bin/env bash
# How often two-stage search returns the same top 10 as exhaustive scoring (README,
# "Query benchmark"): builds an index of the real scenes in ../shared/data/geotiff plus the
# 10980x10980 scene of scripts/bench-index.sh, then compares `query --candidates N` with
# `query --exhaustive` for a few queries. Extra arguments go to every query.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ACF_BIN:-target/release/acf-index}
WORK=${ACF_BENCH_DIR:-target/bench-index}
INDEX="$WORK/overlap-index"
[ -f "$WORK/s2like-10980.tif" ] || { echo "run scripts/bench-index.sh first (it builds $WORK/s2like-10980.tif)" >&2; exit 1; }
"$BIN" -q index ../shared/data/geotiff "$WORK/s2like-10980.tif" --out "$INDEX" "$@" || true
"$BIN" info "$INDEX" | head -5
for q in "a river" "many buildings and green trees" "a large area of farmland" "some boats in a harbor" "a road through the forest"; do
    "$BIN" -q query "$q" --index "$INDEX" --exhaustive --format json "$@" > "$WORK/exhaustive.jsonl"
    for n in 100 1000; do
        "$BIN" -q query "$q" --index "$INDEX" --candidates "$n" --format json "$@" > "$WORK/two-stage.jsonl"
        python3 - "$q" "$n" "$WORK/exhaustive.jsonl" "$WORK/two-stage.jsonl" <<'PY'
import json, sys
q, n, a, b = sys.argv[1:]
ids = lambda p: [json.loads(l)["chip_id"] for l in open(p)]
ex, two = ids(a), ids(b)
print(f"{q!r:36} N={n:>5}: top-10 overlap {len(set(ex) & set(two))}/10, same order: {ex == two}")
PY
    done
done
