#!/usr/bin/env python3
"""Training speed over stretches of steps, from a run's logs alone (round 15).

A batch line of OUT/metrics.jsonl carries images_per_s = images this process has trained in
this epoch / wall time since it started the epoch, so each step's wall time can be recovered
(t_k = images_k / ips_k; step k took t_k - t_(k-1)). A count restarts at every epoch and at
every resume (the trainer's log says "training ... from epoch E batch B"). A stretch's rate is
its images over its steps' wall time; the first two steps of each count (start-up, first
batch) are left out, and validation, which runs between epochs, is never inside a step.

    python3 docs/round15/step-rates.py METRICS.jsonl TRAIN.log BATCH FIRST-LAST [FIRST-LAST ...]
"""
import json
import re
import sys

metrics, log, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
resumes = {
    (int(e), int(b) + 1)
    for e, b in re.findall(r"training \S+ from epoch (\d+) batch (\d+)", open(log).read())
}
lines = [json.loads(l) for l in open(metrics)]
batches = [r for r in lines if r.get("kind") == "batch"]
tail_batch = max(r["batch"] for r in batches)  # its size is unknown (short): left out
step_time = {}  # step -> (wall seconds, images), counted steps only
images, seconds_before, position = 0, 0.0, 0
for r in batches:
    if r["batch"] == 1 or (r["epoch"], r["batch"]) in resumes:
        images, seconds_before, position = 0, 0.0, 0
    position += 1
    if r["batch"] == tail_batch:
        continue
    images += batch_size
    t = images / r["images_per_s"]
    if position > 2:
        step_time[r["step"]] = (t - seconds_before, batch_size)
    seconds_before = t

print("| steps | counted | images/s | median s/step |")
print("|---|---|---|---|")
for stretch in sys.argv[4:]:
    first, last = (int(x) for x in stretch.split("-"))
    picked = [step_time[s] for s in range(first, last + 1) if s in step_time]
    secs = sorted(t for t, _ in picked)
    rate = sum(n for _, n in picked) / sum(secs)
    print(f"| {first}–{last} | {len(picked)} | {rate:.1f} | {secs[len(secs) // 2]:.2f} |")
