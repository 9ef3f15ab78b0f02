#!/usr/bin/env bash
# Round 15: keeps the b128b trainer running under jemalloc with no decay, and
# restarts it (SIGTERM = checkpoint after the batch, then --resume) when its resident memory
# passes LIMIT_KB, since jemalloc without decay grows ~165 MB/min here (fragmentation).
cd "$(dirname "$0")/../.."
LIMIT_KB=${LIMIT_KB:-17000000}
start() {
  MALLOC_CONF=oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1 \
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2 \
  LD_LIBRARY_PATH=$PWD/.venv/libtorch/lib nohup target/release/acf-index train --resume --out runs/b128b --keep-epochs \
    --checkpoint-minutes 3 --dataset ../shared/data/ucm-captions/dataset_ucm.json \
    --dataset ../shared/data/rsicd-aid/dataset_rsicd_aid.json --log-format json >> runs/b128b.log 2>&1 &
  echo "$(date +%T) started $!"
}
while [ ! -f runs/b128b/epochs/epoch-012/model.safetensors ]; do
  P=$(pgrep -f "acf-index train --resume --out runs/b128b")
  if [ -z "$P" ]; then
    [ -f runs/b128b/epochs/epoch-012/model.safetensors ] && break
    [ -f runs/watchdog.stop ] && { echo "$(date +%T) stop file: not restarting"; exit 0; }
    start
  else
    rss=$(awk '/VmRSS/ {print $2}' /proc/$P/status 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$LIMIT_KB" ]; then
      echo "$(date +%T) rss ${rss} kB > ${LIMIT_KB}: SIGTERM $P"
      kill -TERM "$P"; while kill -0 "$P" 2>/dev/null; do sleep 2; done
    fi
  fi
  sleep 20
done
echo "$(date +%T) epoch 12 written"
