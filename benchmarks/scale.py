"""Scale, measured: memory per queued task in the head and the driver, and how many actors start in 60 s.

(a) A 1-engine cluster runs a blocker (a task that waits on a socket this script holds), then
    ``--tasks`` tiny tasks are submitted behind it. Once the head reports them all queued, the RSS
    growth of the head process and of this (driver) process, divided by the task count, is the
    memory per queued task. The driver's figure includes the ObjectRefs the script holds (one per
    task, as a user's list of refs would); it is also given without them. A breakdown of the head's
    per-task records (the scheduler fed the same specs in this process, under ``tracemalloc``) shows
    where the bytes go.
(b) ``--actors`` actors are requested at once on a fresh cluster; the number whose first call has
    answered after ``--window`` seconds is reported, with the time ``shutdown()`` takes.

Results go to ``benchmarks/results/scale/<tag>.json`` and a table is printed::

    .venv/bin/python benchmarks/scale.py                       # 1M tasks, actors for 60 s
    .venv/bin/python benchmarks/scale.py --tasks 200000 --actors 100 --window 30 --tag quick

A measurement, never a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import sys
import time
import tracemalloc

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jpar  # noqa: E402
import jpar.backends.native  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@jpar.remote
def noop(i):
    return i


@jpar.remote
def blocker(port):
    import socket as _socket

    with _socket.create_connection(("127.0.0.1", port)) as c:
        c.recv(1)              # returns when the benchmark sends a byte or closes the socket
    return "released"


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def _queued(timeout: float = 30.0) -> int:
    return jpar.hooks.status(timeout=timeout)["scheduler"]["tasks"].get("queued", 0)


def queued_tasks(n: int, batch: int) -> dict:
    """(a): RSS per queued task in the head and the driver, with ``n`` tasks behind a blocker."""
    jpar.init(num_engines=1)
    try:
        head_pid = jpar.backends.native.current_driver().conn["pid"]
        jpar.get([noop.remote(i) for i in range(1000)], timeout=120)     # warm: function shipped, pools grown
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(120)
        block = blocker.remote(srv.getsockname()[1])
        conn, _ = srv.accept()                                            # the engine is busy from now on
        gc.collect()
        time.sleep(1.0)                                                   # let the head's metrics settle
        head0, drv0 = rss(head_pid), rss(os.getpid())
        t0 = time.monotonic()
        refs = []
        for start in range(0, n, batch):
            refs.extend(noop.remote(i) for i in range(start, min(n, start + batch)))
        submit_s = time.monotonic() - t0
        deadline = time.monotonic() + 600
        while _queued() < n and time.monotonic() < deadline:              # the head has them all
            time.sleep(0.5)
        queued = _queued()
        gc.collect()
        head1, drv1 = rss(head_pid), rss(os.getpid())
        ref_bytes = sys.getsizeof(refs[0]) + 8                            # one ref object + its list slot
        out = {
            "tasks": n, "queued_seen_by_head": queued, "submit_s": round(submit_s, 1),
            "submit_rate_per_s": round(n / submit_s),
            "head_rss_mib": [round(head0 / 2**20), round(head1 / 2**20)],
            "driver_rss_mib": [round(drv0 / 2**20), round(drv1 / 2**20)],
            "head_bytes_per_task": round((head1 - head0) / n),
            "driver_bytes_per_task": round((drv1 - drv0) / n),
            "driver_bytes_per_task_without_user_refs": round((drv1 - drv0) / n - ref_bytes),
            "user_ref_bytes": ref_bytes,
        }
        conn.sendall(b"x")
        conn.close()
        srv.close()
        t1 = time.monotonic()
        assert jpar.get(block, timeout=120) == "released"
        assert jpar.get(refs[-1], timeout=1800) == n - 1
        out["drain_s"] = round(time.monotonic() - t1, 1)
        del refs
    finally:
        t2 = time.monotonic()
        jpar.shutdown()
    out["shutdown_s"] = round(time.monotonic() - t2, 1)
    return out


def head_record_breakdown(n: int = 100_000) -> dict:
    """Bytes per queued task in the scheduler alone (this process, tracemalloc), and what the
    records it keeps per task cost: where the head's per-task memory goes.

    The specs are decoded from one pickled batch inside the measurement, as the head receives them
    (``protocol.decode`` unpickles plain tuples into TaskSpecs), and dropped after ``submit`` as the
    head drops the message: what remains is what the head keeps per queued task."""
    import pickle

    from jpar.runtime.head.scheduler import Scheduler
    from jpar.runtime.head.scheduler_state import Obj, Queued, Task
    from jpar.runtime.wire import protocol as P

    s = Scheduler()
    s.transitions = False
    s.client_added(1)
    fn_id = (1 << 55) | 12345                       # like remote_function's 56-bit code hash
    body = pickle.dumps([((1 << 40) | (i + 1), fn_id, "noop", pickle.dumps(((i,), {}), protocol=5), (), 1,
                          (("CPU", 1.0),), 3, False, 0, 0, -1) for i in range(n)], protocol=5)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    specs = [P.TaskSpec._make(t) for t in pickle.loads(body)]
    s.submit(1, specs)                  # no engine: every task stays queued
    del specs
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per_task = sum(st.size_diff for st in after.compare_to(before, "filename")) / n
    tid, q = next(iter(s.tasks.items()))
    assert type(q) is Queued and s.objects[tid] is q            # one record for the task and its return object
    full = s._promote(q)                                         # what placing it (or a request for it) builds
    assert isinstance(full, Task) and isinstance(s.objects[tid], Obj)
    sizes = {
        "scheduler_total_per_task": round(per_task),
        "Queued record (slots; the task and its return object)": sys.getsizeof(q),
        "pickled arguments (bytes)": sys.getsizeof(q.args),
        "task id int (also the return object's id)": sys.getsizeof(tid),
        "tasks + objects dict entries + ready deque slot (approx.)": 2 * 3 * 8 * 2 + 8,
        "shared per call site (Queued.proto, demand form)": 0,
        "once placed: Task record (slots)": sys.getsizeof(full),
        "once placed: Obj record (slots)": sys.getsizeof(s.objects[tid]),
        "once placed: TaskSpec tuple (12 fields)": sys.getsizeof(full.spec),
    }
    return sizes


@jpar.remote
class Idle:
    def ping(self):
        return os.getpid()


def actors_in_window(count: int, window: float) -> dict:
    """(b): of ``count`` actors requested at once, how many answer within ``window`` seconds."""
    jpar.init(num_engines=1)
    try:
        t0 = time.monotonic()
        handles = [Idle.remote() for _ in range(count)]
        refs = [h.ping.remote() for h in handles]
        ready, _ = jpar.wait(refs, num_returns=len(refs), timeout=window)
        up_s = time.monotonic() - t0
        mem = psutil.virtual_memory()
        out = {"requested": count, "window_s": window, "answered": len(ready), "elapsed_s": round(up_s, 1),
               "machine_available_mib_after": round(mem.available / 2**20)}
        del handles, refs, ready
    finally:
        t1 = time.monotonic()
        jpar.shutdown()
    out["shutdown_s"] = round(time.monotonic() - t1, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000, help="tasks queued behind the blocker (default 1M)")
    ap.add_argument("--batch", type=int, default=10_000, help="submit in slices of this many")
    ap.add_argument("--actors", type=int, default=1000, help="actors requested at once (default 1000)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds the actors get to start (default 60)")
    ap.add_argument("--skip", choices=["tasks", "actors"], action="append", default=[])
    ap.add_argument("--tag", default=time.strftime("%Y-%m-%d-%H%M"))
    args = ap.parse_args(argv)
    res: dict = {"machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
                             "python": platform.python_version(), "load_avg": os.getloadavg()},
                 "args": vars(args)}
    if "tasks" not in args.skip:
        res["queued_tasks"] = queued_tasks(args.tasks, args.batch)
    if "actors" not in args.skip:
        res["actors"] = actors_in_window(args.actors, args.window)
    res["head_record_breakdown"] = head_record_breakdown()   # last: what it frees would hide the driver's growth
    outdir = os.path.join(HERE, "results", "scale")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, f"{args.tag}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(render(res))
    print(f"written: {os.path.relpath(path)}")
    return 0


def render(res: dict) -> str:
    lines = ["| measure | value | goal |", "|---|---|---|"]
    q = res.get("queued_tasks")
    if q:
        lines += [f"| head bytes per queued task ({q['tasks']:,} tasks) | {q['head_bytes_per_task']} | <= 300 |",
                  f"| driver bytes per queued task (with the user's refs) | {q['driver_bytes_per_task']} | <= 200 |",
                  f"| driver bytes per queued task (without them, {q['user_ref_bytes']} B each) | "
                  f"{q['driver_bytes_per_task_without_user_refs']} | |",
                  f"| submit rate | {q['submit_rate_per_s']:,}/s | |",
                  f"| head RSS before/after (MiB) | {q['head_rss_mib'][0]} / {q['head_rss_mib'][1]} | |",
                  f"| driver RSS before/after (MiB) | {q['driver_rss_mib'][0]} / {q['driver_rss_mib'][1]} | |",
                  f"| run them all after the blocker / shutdown (s) | {q['drain_s']} / {q['shutdown_s']} | |"]
    a = res.get("actors")
    if a:
        lines += [f"| actors answering within {a['window_s']:.0f} s (of {a['requested']}) | {a['answered']} | |",
                  f"| shutdown with them (s) | {a['shutdown_s']} | |"]
    b = res.get("head_record_breakdown")
    if b:
        lines += ["", "| scheduler record (head, per queued task) | bytes |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in b.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
