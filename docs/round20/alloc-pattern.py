# Round 20: does jemalloc without decay grow when a step's text-dependent tensors change size
# with the batch's longest caption (m)? Run with the trainer's LD_PRELOAD and MALLOC_CONF:
#   .venv/bin/python docs/round20/alloc-pattern.py vary|bucket8|fixed STEPS
import random, sys, torch
torch.set_num_threads(1)
mode = sys.argv[1]; steps = int(sys.argv[2])
B, R, D = 96, 49, 64
rng = random.Random(0)
ms = [18,19,20,20,21,21,21,22,22,23,24,25,26,28,32]
def rss():
    for l in open('/proc/self/status'):
        if l.startswith('VmRSS'): return int(l.split()[1]) // 1024
for s in range(steps):
    m = rng.choice(ms)
    if mode == 'bucket8': m = (m + 7) // 8 * 8
    if mode == 'fixed': m = 32
    a = torch.randn(B, B, m, R)            # similarity of every word to every region
    b = a.softmax(-1) * a                  # attention and its product
    c = torch.randn(B, m, D).sum()
    keep = [torch.empty(rng.randint(1, 4) * 1_000_000) for _ in range(3)]  # other sizes
    del a, b, c, keep
    if s % 50 == 49: print(mode, s + 1, 'rss_mb', rss(), flush=True)
