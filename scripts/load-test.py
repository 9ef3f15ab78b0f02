#!/usr/bin/env python3
"""Bounded load test of a running `acf-index serve` on 127.0.0.1: C concurrent clients send
searches for S seconds (queries from tests/fixtures/analyst-queries.txt, round robin) and the
script prints errors and latency percentiles. Standard library only.

    scripts/load-test.py http://127.0.0.1:8080 --clients 8 --seconds 30
"""
import argparse, json, pathlib, statistics, threading, time, urllib.parse, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("base")
ap.add_argument("--clients", type=int, default=8)
ap.add_argument("--seconds", type=float, default=30)
ap.add_argument("--k", type=int, default=10)
args = ap.parse_args()
if not args.base.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
    raise SystemExit("load-test.py only runs against a server on this machine")
queries = [l.strip() for l in (pathlib.Path(__file__).parent.parent / "tests/fixtures/analyst-queries.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]
lat, errors, codes, lock = [], [], {}, threading.Lock()
end = time.time() + args.seconds

def client(i):
    n = i
    while time.time() < end:
        q = queries[n % len(queries)]; n += args.clients
        url = f"{args.base}/api/search?" + urllib.parse.urlencode({"q": q, "k": args.k})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                json.load(r); code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        except Exception as e:  # connection errors count as errors
            with lock: errors.append(repr(e))
            continue
        ms = (time.perf_counter() - t) * 1e3
        with lock:
            codes[code] = codes.get(code, 0) + 1
            if code == 200: lat.append(ms)
            elif code >= 500: errors.append(f"HTTP {code} for {q!r}")

threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
[t.start() for t in threads]; [t.join() for t in threads]
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else float("nan")
print(json.dumps({"clients": args.clients, "seconds": args.seconds, "requests": sum(codes.values()),
                  "status_codes": codes, "errors": len(errors), "first_errors": errors[:3],
                  "throughput_rps": round(len(lat) / args.seconds, 1),
                  "p50_ms": round(pct(50), 1), "p90_ms": round(pct(90), 1), "p99_ms": round(pct(99), 1),
                  "max_ms": round(lat[-1], 1) if lat else None}))
raise SystemExit(1 if errors else 0)
