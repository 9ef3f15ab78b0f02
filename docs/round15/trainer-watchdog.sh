#!/usr/bin/env bash
# Round 15: keeps a `train --keep-epochs` run going under jemalloc with no decay (fast here,
# README "Training and evaluation", but its resident memory creeps up) by restarting it when
# its resident memory passes LIMIT_KB: SIGTERM (a checkpoint after the current batch), then
# `train --resume`. Stops once OUT/epochs/epoch-LAST exists, or when OUT/watchdog.stop does.
#
#   OUT=runs/b128b LAST=012 LIMIT_KB=17000000 docs/round15/trainer-watchdog.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT} LAST=${LAST:?set LAST (e.g. 012)} LIMIT_KB=${LIMIT_KB:-17000000}
start() {
  MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1 \
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2 \
  LD_LIBRARY_PATH=$PWD/.venv/libtorch/lib nohup target/release/acf-index train --resume --out "$OUT" --keep-epochs \
    --checkpoint-minutes 3 --dataset ../shared/data/ucm-captions/dataset_ucm.json \
    --dataset ../shared/data/rsicd-aid/dataset_rsicd_aid.json --log-format json >> "$OUT.log" 2>&1 &
  echo "$(date +%T) started $!"
}
while [ ! -f "$OUT/epochs/epoch-$LAST/model.safetensors" ]; do
  P=$(pgrep -f "acf-index train .*--out $OUT( |\$)" | head -1)
  if [ -z "$P" ]; then
    [ -f "$OUT/epochs/epoch-$LAST/model.safetensors" ] && break
    [ -f "$OUT/watchdog.stop" ] && { echo "$(date +%T) $OUT/watchdog.stop: not restarting"; exit 0; }
    start
  else
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$P/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$LIMIT_KB" ]; then
      echo "$(date +%T) rss ${rss} kB > ${LIMIT_KB}: SIGTERM $P"
      kill -TERM "$P"; while kill -0 "$P" 2>/dev/null; do sleep 2; done
    fi
  fi
  sleep 20
done
echo "$(date +%T) epoch $LAST written"
