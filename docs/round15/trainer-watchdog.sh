#!/usr/bin/env bash
# Round 15: keeps a `train --keep-epochs` run going under jemalloc with no decay (fast here,
# README "Training and evaluation", but its resident memory creeps up) by restarting it when
# its resident memory passes LIMIT_KB (VmRSS, kB): SIGTERM (a checkpoint after the current
# batch), then `train --resume`. The trainer is found through its lock, OUT/.lock (held while
# it runs, with its pid inside), so a wrapper process or another spelling of OUT cannot fool
# it. Stops once OUT/epochs/epoch-LAST exists, when OUT/watchdog.stop exists (checked every
# round: with a trainer running, the watchdog just leaves it alone), or after 5 starts in a
# row that did not live a minute.
#
#   OUT=runs/b256 LAST=008 LIMIT_KB=20500000 docs/round15/trainer-watchdog.sh
#
# CONF overrides jemalloc's MALLOC_CONF (default oversize_threshold:0,dirty_decay_ms:-1,
# muzzy_decay_ms:-1); PRELOAD the library's path. DATASETS (space-separated paths; default
# UCM-Captions and RSICD-on-AID) must name the datasets the run was started with.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT} LAST=${LAST:?set LAST (e.g. 008)} LIMIT_KB=${LIMIT_KB:-17000000}
OUT=${OUT%/}
PRELOAD=${PRELOAD:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}
CONF=${CONF:-oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1}
[ -f "$PRELOAD" ] || { echo "no $PRELOAD (Debian: apt-get install libjemalloc2)" >&2; exit 1; }
DATASETS=${DATASETS:-../shared/data/ucm-captions/dataset_ucm.json ../shared/data/rsicd-aid/dataset_rsicd_aid.json}
dataset_args=()
for d in $DATASETS; do
  [ -f "$d" ] || { echo "no dataset at $d" >&2; exit 1; }
  dataset_args+=(--dataset "$d")
done
trainer_pid() {  # prints the running trainer's pid, or nothing
  [ -f "$OUT/.lock" ] || return 0
  flock -n "$OUT/.lock" true 2>/dev/null && return 0
  cat "$OUT/.lock"
}
start() {
  MALLOC_CONF="$CONF" LD_PRELOAD="$PRELOAD" \
  OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 RAYON_NUM_THREADS=2 \
  nohup target/release/acf-index train --resume --out "$OUT" --keep-epochs \
    --checkpoint-minutes 3 "${dataset_args[@]}" --log-format json >> "$OUT.log" 2>&1 &
  echo "$(date +%T) started $!"
}
quick_failures=0
while [ ! -f "$OUT/epochs/epoch-$LAST/model.safetensors" ]; do
  [ -f "$OUT/watchdog.stop" ] && { echo "$(date +%T) $OUT/watchdog.stop: watchdog ends"; exit 0; }
  P=$(trainer_pid)
  if [ -z "$P" ]; then
    [ -f "$OUT/epochs/epoch-$LAST/model.safetensors" ] && break
    [ "$quick_failures" -ge 5 ] && { echo "$(date +%T) 5 starts in a row died within a minute: giving up (see $OUT.log)"; exit 1; }
    start; started_at=$SECONDS
  else
    [ "$((SECONDS - ${started_at:-0}))" -ge 60 ] && quick_failures=0
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$P/status" 2>/dev/null || echo 0)
    if [ "${rss:-0}" -gt "$LIMIT_KB" ]; then
      echo "$(date +%T) rss ${rss} kB > ${LIMIT_KB}: SIGTERM $P"
      kill -TERM "$P"; while kill -0 "$P" 2>/dev/null; do sleep 2; done
    fi
  fi
  sleep 20
  [ -z "$(trainer_pid)" ] && [ "$((SECONDS - ${started_at:-0}))" -lt 60 ] && quick_failures=$((quick_failures + 1))
done
echo "$(date +%T) epoch $LAST written"
