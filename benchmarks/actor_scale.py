"""How many actors start in a given time, what each costs in memory, and how long shutdown takes.

Each actor is one process. The script asks for ``--actors`` actors at once, counts how many
answer a call within ``--window`` seconds, measures the memory of the actor processes, then
times ``jpar.shutdown()`` and counts the actor processes still alive ``--after`` seconds later::

    .venv/bin/python benchmarks/actor_scale.py                  # 300 actors, 60 s window
    .venv/bin/python benchmarks/actor_scale.py --actors 1000    # needs ~30 GB of memory (see docs/actors.md)

Prints one JSON object. A measurement, never a test: numbers vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jpar  # noqa: E402


@jpar.remote
class Idle:
    def pid(self) -> int:
        return os.getpid()


def actor_processes() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "jpar.runtime.engine.engine" in " ".join(p.cmdline()) and p.ppid() != os.getpid():
                out.append(p)
        except psutil.Error:
            pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=300)
    ap.add_argument("--window", type=float, default=60.0, help="seconds to wait for actors to answer")
    ap.add_argument("--after", type=float, default=5.0, help="seconds after shutdown to count survivors")
    ap.add_argument("--engines", type=int, default=1)
    args = ap.parse_args()

    jpar.init(num_engines=args.engines)
    head = next(p for p in psutil.Process().children() if "jpar.runtime.head.controller" in " ".join(p.cmdline()))
    t0 = time.monotonic()
    actors = [Idle.remote() for _ in range(args.actors)]
    refs = [a.pid.remote() for a in actors]
    ready, _ = jpar.wait(refs, num_returns=len(refs), timeout=args.window)
    started_s = time.monotonic() - t0
    pids = jpar.get(ready)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    rss = sorted(p.memory_info().rss for p in procs)
    uss = []
    for p in procs[:20]:   # USS needs a page walk: sample a few
        try:
            uss.append(p.memory_full_info().uss)
        except psutil.Error:
            pass
    everything = [head] + head.children(recursive=True)
    del actors, refs, ready
    t1 = time.monotonic()
    jpar.shutdown()
    shutdown_s = time.monotonic() - t1
    _, alive = psutil.wait_procs(everything, timeout=args.after)
    survivors = len(alive)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    mib = 1 << 20
    print(json.dumps({
        "actors_requested": args.actors,
        "actors_up": len(pids),
        "window_s": args.window,
        "time_to_answer_s": round(started_s, 2),
        "actor_rss_median_mib": round(rss[len(rss) // 2] / mib, 1) if rss else None,
        "actor_uss_median_mib": round(sorted(uss)[len(uss) // 2] / mib, 1) if uss else None,
        "shutdown_s": round(shutdown_s, 2),
        f"processes_alive_{args.after:g}s_after_shutdown": survivors,
        "cpus": os.cpu_count(),
        "memory_total_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
