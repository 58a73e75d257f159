"""What the live dashboard costs: task throughput with a dashboard open vs closed, the kernel CPU its
updater thread spends while 10,000 tasks run, and its update latency.

    .venv/bin/python benchmarks/dashboard_cost.py [--tasks 10000] [--reps 5] [--engines 2]

Throughput is the shared harness's `throughput` row (submit N no-op tasks one by one, then get them
all), measured in one process with the dashboard closed and open, alternating, median of ``--reps``.
The ratio open/closed is the target (>= 0.9). The widget runs without a browser here (its comm sends
nowhere), so JSON encoding in the kernel's IOPub thread is not counted; the browser test
(tests/test_dashboard_browser.py) records the comm delivery time in test-artifacts/latency.txt.
Latency is, per update, the age of the oldest event it carried: head timestamp of a state change ->
the traits are set (the 4 Hz throttle alone accounts for up to 250 ms).
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--engines", type=int, default=2)
    args = ap.parse_args()
    jpar.init(num_engines=args.engines)
    run_tasks(2000)                               # warm up: functions shipped, engines hot
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
    print(f"tasks per run: {args.tasks}, reps: {args.reps}, engines: {args.engines}")
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
