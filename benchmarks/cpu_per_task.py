"""CPU time each process spends per no-op task (driver, head, engines) and the end-to-end rate.

Wall-clock rates on a shared 2-core machine are noisy; CPU time per task is not, and it says which
process to optimise. Run: .venv/bin/python benchmarks/cpu_per_task.py [--tasks 20000]
"""

import argparse
import time

import psutil

import jpar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    n = ap.parse_args().tasks
    jpar.init(num_engines=2)
    noop = jpar.remote(lambda: None)
    jpar.get([noop.remote() for _ in range(2000)])               # warm: functions shipped, prefetch sized
    st = jpar.hooks.status()
    procs = {"driver": psutil.Process(), "head": psutil.Process(st["pid"])}
    procs.update({f"engine{e['id']}": psutil.Process(e["pid"]) for e in st["engines"]})

    def cpu() -> dict:
        return {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}

    c0, t0 = cpu(), time.perf_counter()
    jpar.get([noop.remote() for _ in range(n)])
    dt, c1 = time.perf_counter() - t0, cpu()
    per = {k: round((c1[k] - c0[k]) / n * 1e6, 1) for k in c0}
    print(f"{n / dt:,.0f} tasks/s; CPU us per task: {per}; total {sum(per.values()):.1f}")
    jpar.shutdown()


if __name__ == "__main__":
    main()
