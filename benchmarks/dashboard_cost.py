"""What the live dashboard costs: task throughput with a dashboard open vs closed, the kernel CPU its
updater thread spends while 10,000 tasks run, and its update latency.

    .venv/bin/python benchmarks/dashboard_cost.py [--tasks 10000] [--reps 5] [--engines 2] [--backend dask]
    .venv/bin/python benchmarks/dashboard_cost.py --model       # the widget's model alone, no cluster

Throughput is the shared harness's `throughput` row (submit N no-op tasks one by one, then get them
all), measured in one process with the dashboard closed and open, alternating, median of ``--reps``.
The ratio open/closed is the target (>= 0.9). The widget runs without a browser here (its comm sends
nowhere), so JSON encoding in the kernel's IOPub thread is not counted; the browser test
(tests/test_dashboard_browser.py) records the comm delivery time in test-artifacts/latency.txt.
Latency is, per update, the age of the oldest event it carried: head timestamp of a state change ->
the traits are set (the 4 Hz throttle alone accounts for up to 250 ms).

``--backend dask|ray`` measures the same on a LocalCluster / local Ray that jpar starts (the
dashboard then follows the engine's events: Dask's worker events, Ray's sink actor); the target is
the same 0.9.

``--model`` times the pure parts on the sizes tests/test_dashboard.py checks for correctness: the
DAG layout of 200 nodes (was ~1 ms here; budget 100 ms) and DashboardModel applying the 300,000
events of 100,000 tasks (~1 us per event; budget 3 s) and taking its snapshots (budget 50 ms).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import jpar


@jpar.remote
def noop():
    return None


def run_tasks(n: int) -> float:
    t0 = time.perf_counter()
    refs = [noop.remote() for _ in range(n)]
    jpar.get(refs)
    return n / (time.perf_counter() - t0)


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def model_costs(reps: int) -> None:
    """Layout of 200 nodes; 100,000 tasks through DashboardModel (apply, then the three snapshots)."""
    from jpar.notebook import dag_layout
    from jpar.notebook.dashboard import DashboardModel
    from jpar.runtime.wire.protocol import Event

    nodes = list(range(200))
    edges = [(i, i + 1) for i in range(0, 199, 2)] + [(i, i + 3) for i in range(0, 190, 5)]
    layout = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dag_layout.layered_layout(nodes, edges)
        layout.append(time.perf_counter() - t0)
    n, now = 100_000, time.time()
    batch = [Event(now, "task", i, "queued", {"name": f"f{i % 7}", "deps": (i - 1,) if i % 3 else (), "parent": 0,
                                               "owner": 1}) for i in range(1, n + 1)]
    batch += [Event(now, "task", i, s, {"engine": i % 2} if s == "running" else None)
              for i in range(1, n + 1) for s in ("running", "done")]
    apply_s, snap_s = [], []
    for _ in range(reps):
        m = DashboardModel()
        t0 = time.perf_counter()
        m.apply(batch)
        apply_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m.snapshot_graph()
        m.snapshot_states(time.time())
        m.snapshot_totals(time.monotonic())
        snap_s.append(time.perf_counter() - t0)
    print(f"layout of 200 nodes: median {statistics.median(layout) * 1e3:.1f} ms (budget 100 ms)")
    print(f"model, {len(batch):,} events of {n:,} tasks: apply median {statistics.median(apply_s):.2f} s "
          f"({statistics.median(apply_s) / len(batch) * 1e6:.2f} us/event; budget 3 s), "
          f"snapshots median {statistics.median(snap_s) * 1e3:.1f} ms (budget 50 ms)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--backend", default="native", choices=("native", "dask", "ray"))
    ap.add_argument("--model", action="store_true", help="time the widget's model and layout only (no cluster)")
    args = ap.parse_args()
    if args.model:
        model_costs(args.reps)
        return 0
    jpar.init(num_engines=args.engines, **({} if args.backend == "native" else {"backend": args.backend}))
    run_tasks(min(2000, args.tasks))              # warm up: functions shipped, engines hot
    closed, opened, widget_cpu, proc_cpu_open, proc_cpu_closed, latencies = [], [], [], [], [], []
    for rep in range(args.reps):
        order = ("closed", "open") if rep % 2 == 0 else ("open", "closed")
        for mode in order:
            if mode == "closed":
                c0 = process_cpu()
                closed.append(run_tasks(args.tasks))
                proc_cpu_closed.append(process_cpu() - c0)
                continue
            board = jpar.dashboard()
            time.sleep(0.5)                        # first status refresh and publish out of the way
            s0 = board.statistics()
            c0 = process_cpu()
            opened.append(run_tasks(args.tasks))
            deadline = time.monotonic() + 10
            while board.model.finished < args.tasks and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)                        # the last throttled update
            proc_cpu_open.append(process_cpu() - c0)
            s1 = board.statistics()
            widget_cpu.append(s1.cpu_s - s0.cpu_s)
            latencies.extend(s1.latency_s[len(s0.latency_s):])
            board.close()
    jpar.shutdown()
    med_c, med_o = statistics.median(closed), statistics.median(opened)
    lat = sorted(latencies)
    print(f"backend: {args.backend}, tasks per run: {args.tasks}, reps: {args.reps}, engines: {args.engines}")
    print(f"throughput closed: {med_c:,.0f} tasks/s  (runs: {', '.join(f'{x:,.0f}' for x in closed)})")
    print(f"throughput open:   {med_o:,.0f} tasks/s  (runs: {', '.join(f'{x:,.0f}' for x in opened)})")
    print(f"ratio open/closed: {med_o / med_c:.2f}  (target >= 0.9)")
    print(f"widget updater thread CPU per {args.tasks} tasks: {statistics.median(widget_cpu) * 1e3:.0f} ms "
          f"(runs: {', '.join(f'{x * 1e3:.0f}' for x in widget_cpu)})")
    print(f"kernel process CPU per run: open {statistics.median(proc_cpu_open):.2f} s, "
          f"closed {statistics.median(proc_cpu_closed):.2f} s")
    if lat:
        print(f"update latency (oldest event -> traits set): median {lat[len(lat) // 2] * 1e3:.0f} ms, "
              f"p90 {lat[int(len(lat) * 0.9)] * 1e3:.0f} ms, max {lat[-1] * 1e3:.0f} ms over {len(lat)} updates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
