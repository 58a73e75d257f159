"""Process start+join of a no-op: the stdlib's spawn (and fork, for scale) beside jpar's, same run.

Two ways of starting, because a jpar Process start is fast when the head has a warm spare actor
process ready (``JPAR_ACTOR_SPARES``, default 1) and costs an interpreter start when it has not:

- ``spaced``: one Process at a time with a pause between them (a notebook's rhythm): the spare
  used by one is replaced before the next starts;
- ``back-to-back``: start+join in a tight loop: the next start comes before the spare it used
  was replaced.

Run: .venv/bin/python benchmarks/mp_process.py [--n 10] [--pause 1.0]
"""

import argparse
import multiprocessing
import statistics
import time

import jpar
import jpar.multiprocessing as jmp


def noop():
    pass


def timed(make, n: int, pause: float) -> list:
    out = []
    for _ in range(n):
        if pause:
            time.sleep(pause)
        t = time.perf_counter()
        p = make(target=noop)
        p.start()
        p.join()
        out.append(time.perf_counter() - t)
        assert p.exitcode == 0, p.exitcode
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--pause", type=float, default=1.0)
    args = ap.parse_args()
    rows = []
    for method in ("spawn", "fork"):
        ctx = multiprocessing.get_context(method)
        for mode, pause in (("spaced", args.pause), ("back-to-back", 0.0)):
            rows.append((f"stdlib {method}", mode, timed(ctx.Process, args.n, pause)))
    jpar.init(num_engines=2)
    timed(jmp.Process, 2, args.pause)   # the first actor of a cluster starts cold and asks for spares
    for mode, pause in (("spaced", args.pause), ("back-to-back", 0.0)):
        rows.append(("jpar", mode, timed(jmp.Process, args.n, pause)))
    jpar.shutdown()
    spawn = {mode: statistics.median(ts) for name, mode, ts in rows if name == "stdlib spawn"}
    print(f"{'system':14} {'mode':13} {'median ms':>10} {'min ms':>8}  vs spawn")
    for name, mode, ts in rows:
        med = statistics.median(ts)
        print(f"{name:14} {mode:13} {med * 1e3:10.1f} {min(ts) * 1e3:8.1f}  {med / spawn[mode]:.2f}x")


if __name__ == "__main__":
    main()
