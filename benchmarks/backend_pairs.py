"""jpar's overhead on Dask or Ray, measured in pairs: each workload through jpar and on the engine
alone, alternating in one process on one cluster, median of ``--reps``.

    .venv/bin/python benchmarks/backend_pairs.py --backend dask [--reps 7]
    .venv/bin/python benchmarks/backend_pairs.py --backend ray

``run.py`` runs each (system, workload) in a child of its own, one after the other; on a machine
that others share, the load changes between two children more than jpar's cost does (the same row
moved 1.0x -> 2x between runs). Here both sides of a row see the same load, a few seconds apart, so
the ratio is jpar's own cost. (jpar releases a collected ref's value at its next call, so a row
of one call would pay for the row before it: each row repeats its call.) The workloads are the
shared harness's (smaller): 20 no-op round trips, 1000 no-op tasks submitted then gathered, a chain of 50 dependent tasks, a 10 MB array passed
by value and through a ref made once, 100 sequential and 500 pipelined actor calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import jpar


def noop(x=None):
    return x


def total(a):
    return float(a.sum())


class Counter:
    def __init__(self):
        self.n = 0

    def inc(self):
        self.n += 1
        return self.n


def jpar_side(arr) -> dict:
    f, t = jpar.remote(noop), jpar.remote(total)
    actor = jpar.remote(Counter).remote()
    ref = jpar.put(arr)
    jpar.get([f.remote(), t.remote(ref), actor.inc.remote()])

    def chain(n=50):
        x = f.remote(0)
        for _ in range(n):
            x = f.remote(x)
        return jpar.get(x)

    return {"latency (20 round trips)": lambda: [jpar.get(f.remote()) for _ in range(20)],
            "throughput (1000 tasks)": lambda: jpar.get([f.remote(i) for i in range(1000)]),
            "chain of 50": chain,
            "10 MB array as arg": lambda: jpar.get(t.remote(arr)),
            "10 MB through a ref": lambda: jpar.get(t.remote(ref)),
            "100 sequential actor calls": lambda: [jpar.get(actor.inc.remote()) for _ in range(100)],
            "500 pipelined actor calls": lambda: jpar.get([actor.inc.remote() for _ in range(500)])}


def dask_side(arr) -> dict:
    client = jpar.backends.current().client
    af = client.submit(Counter, actor=True)
    actor = af.result()
    actor._client, actor._future = client, af       # bind the proxy to this (non-default) client
    fut = client.scatter(arr)

    def chain(n=50):
        x = client.submit(noop, 0, pure=False)
        for _ in range(n):
            x = client.submit(noop, x, pure=False)
        return x.result()

    return {"latency (20 round trips)": lambda: [client.submit(noop, pure=False).result() for _ in range(20)],
            "throughput (1000 tasks)": lambda: client.gather([client.submit(noop, i, pure=False) for i in range(1000)]),
            "chain of 50": chain,
            "10 MB array as arg": lambda: client.submit(total, arr, pure=False).result(),
            "10 MB through a ref": lambda: client.submit(total, fut, pure=False).result(),
            "100 sequential actor calls": lambda: [actor.inc().result() for _ in range(100)],
            "500 pipelined actor calls": lambda: [c.result() for c in [actor.inc() for _ in range(500)]]}


def ray_side(arr) -> dict:
    import ray

    f, t = ray.remote(noop), ray.remote(total)
    actor = ray.remote(Counter).remote()
    ref = ray.put(arr)
    ray.get([f.remote(), t.remote(ref), actor.inc.remote()])

    def chain(n=50):
        x = f.remote(0)
        for _ in range(n):
            x = f.remote(x)
        return ray.get(x)

    return {"latency (20 round trips)": lambda: [ray.get(f.remote()) for _ in range(20)],
            "throughput (1000 tasks)": lambda: ray.get([f.remote(i) for i in range(1000)]),
            "chain of 50": chain,
            "10 MB array as arg": lambda: ray.get(t.remote(arr)),
            "10 MB through a ref": lambda: ray.get(t.remote(ref)),
            "100 sequential actor calls": lambda: [ray.get(actor.inc.remote()) for _ in range(100)],
            "500 pipelined actor calls": lambda: ray.get([actor.inc.remote() for _ in range(500)])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", required=True, choices=("dask", "ray"))
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    jpar.init(backend=args.backend, num_engines=2)
    arr = np.random.rand(10_000_000 // 8)
    ours = jpar_side(arr)
    theirs = (dask_side if args.backend == "dask" else ray_side)(arr)
    times: dict = {k: ([], []) for k in ours}
    for rep in range(args.reps):
        for name in ours:
            pair = (ours[name], theirs[name]) if rep % 2 == 0 else (theirs[name], ours[name])
            for fn in pair:
                t0 = time.perf_counter()
                fn()
                times[name][0 if fn is ours[name] else 1].append(time.perf_counter() - t0)
    jpar.shutdown()
    print(f"backend: {args.backend}, reps: {args.reps}, median seconds, jpar / engine alone")
    for name, (j, e) in times.items():
        mj, me = statistics.median(j), statistics.median(e)
        print(f"  {name:28s} jpar {mj * 1e3:9.2f} ms   {args.backend} {me * 1e3:9.2f} ms   {mj / me:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
