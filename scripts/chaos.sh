#!/usr/bin/env bash
# Chaos trials for `acf-index index` (not run in CI): K runs, each stopped at a random moment
# by kill -9 or SIGTERM, then checked as a reader would see it (info and query succeed, every
# scene whole, no chip twice), rerun, and compared with an uninterrupted index (same chip
# ids, features within 1e-4). Half the trials re-index a changed scene, so a kill can land
# while an old version is being replaced.
#
#   scripts/chaos.sh [K=50] [BIN=target/release/acf-index]
set -euo pipefail
cd "$(dirname "$0")/.."
K=${1:-50}
BIN=${2:-target/release/acf-index}
PY=.venv/bin/python
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
for f in cogeo.tif RGB.byte.tif naip-4band-150x200.tif l8-uint16-300x260.tif rmnp-rgb.tif; do
    cp "tests/fixtures/geotiff/$f" "$work/src/$f"
done
cores=$(nproc --all)
export OMP_NUM_THREADS=1
index() { "$BIN" -q index --device cpu --readers 1 --batch 8 --out "$1" "$work/src" >/dev/null 2>&1; }

# What a reader sees: every scene whole, no chip twice, features; prints JSON.
check() {
    "$PY" - "$1" <<'EOF'
import glob, json, os, sys
import pyarrow.parquet as pq
index = sys.argv[1]
rows, whole = {}, True
for path in glob.glob(os.path.join(index, "scenes", "*.json")):
    r = json.load(open(path))
    if r["status"] != "ok" or not r.get("part"):
        continue
    t = pq.read_table(os.path.join(index, r["part"]), columns=["chip_id", "global"])
    whole &= t.num_rows == r["chips"]
    for cid, g in zip(t.column("chip_id").to_pylist(), t.column("global").to_pylist()):
        whole &= cid not in rows
        rows[cid] = g[:8]
print(json.dumps({"whole": whole, "rows": rows}))
EOF
}

index "$work/clean"
check "$work/clean" > "$work/clean.json"
equal=0
for trial in $(seq 1 "$K"); do
    out="$work/t$trial"
    if (( trial % 2 == 0 )); then
        index "$out"
        touch -d "@$(( $(date +%s) + trial ))" "$work/src/cogeo.tif"   # a changed scene
    fi
    signal=$([ $((RANDOM % 2)) -eq 0 ] && echo KILL || echo TERM)
    delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + (r % 300) / 100 }')
    "$BIN" -q index --device cpu --readers 1 --batch 8 --out "$out" "$work/src" >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -s "$signal" "$pid" 2>/dev/null || true
    set +e; wait "$pid" 2>/dev/null; code=$?; set -e
    # A reader at this moment: info works, query answers (or, before any scene was committed,
    # says the index holds no chips), and every scene it sees is whole.
    reader_ok=1
    if [ -f "$out/index.json" ]; then
        "$BIN" -q info "$out" >/dev/null 2>&1 || reader_ok=0
        q=$("$BIN" -q query --device cpu --index "$out" "trees" 2>&1 >/dev/null) || {
            grep -q "holds no chips" <<<"$q" || reader_ok=0
        }
        [ "$(check "$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["whole"])')" = True ] || reader_ok=0
    fi
    index "$out"
    # The clean reference after a changed scene is the same content: features must match.
    same=$(check "$out" | "$PY" -c '
import json, sys
a = json.load(sys.stdin); b = json.load(open(sys.argv[1]))
ok = a["whole"] and a["rows"].keys() == b["rows"].keys() and all(
    max(abs(x - y) for x, y in zip(a["rows"][k], b["rows"][k])) < 1e-4 for k in a["rows"])
print(ok)' "$work/clean.json")
    if [ "$reader_ok" = 1 ] && [ "$same" = True ]; then
        equal=$((equal + 1))
    else
        echo "trial $trial: $signal after ${delay}s (exit $code): reader_ok=$reader_ok equal=$same" >&2
    fi
    rm -rf "$out"
done
echo "$equal/$K trials equal (kill -9 or SIGTERM at a random moment, then a rerun) on a ${cores}-core machine, one encoder thread"
[ "$equal" -eq "$K" ]
