"""The pure scheduler's cost per no-op task (submit, place, finish, release), no processes.

The head's CPU per task is mostly this plus message decoding. Wall time on a shared 2-core
machine is noisy; for a steady figure count instructions instead:

    .venv/bin/python benchmarks/scheduler_cost.py                      # us per task, median of 5
    .venv/bin/python benchmarks/scheduler_cost.py --transitions        # as while the full stream is read
    .venv/bin/python benchmarks/scheduler_cost.py --summary            # as while a dashboard listens (summary stream)
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/scheduler_cost.py --tasks 8000 --repeat 1   # minus a --tasks 10 run
"""

import argparse
import statistics
import time

from jpar.runtime.wire import protocol as P
from jpar.runtime.head.scheduler import DispatchTask, Scheduler
from jpar.runtime.head.task_summary import TaskSummary


def spec(task_id: int) -> P.TaskSpec:
    return P.TaskSpec(task_id, 1, "noop", b"", (), 1, (("CPU", 1.0),), 3, False, 0, 0, -1, 1)


def run(n: int, transitions: bool, summary: bool = False) -> float:
    """Seconds per task for n tasks submitted in batches of 100 to two engines, finished and released."""
    s = Scheduler(prefetch=64)
    s.transitions = transitions or summary
    if summary:                  # the head's setting while only summary readers listen
        s.full_stream, s.summary = False, TaskSummary()
    s.client_added(1)
    for e in (0, 1):
        s.engine_added(e, "node", {"CPU": 2})
    specs = [spec((1 << 40) | i) for i in range(1, n + 1)]
    dispatched: dict[int, list] = {0: [], 1: []}

    def take(actions) -> None:
        for a in actions:
            if type(a) is DispatchTask:
                dispatched[a.engine_id].append(a.task_id)

    def finish_all() -> None:
        for e in (0, 1):
            ids, dispatched[e] = dispatched[e], []
            take(s.tasks_done(e, [P.DoneRecord(t, 0, 0, ((t, 0, b"N."),), 1e-5) for t in ids]))
            s.release(1, ids)

    t0 = time.perf_counter()
    for k in range(0, n, 100):
        take(s.submit(1, specs[k:k + 100]))
        finish_all()
    while dispatched[0] or dispatched[1]:
        finish_all()
    took = time.perf_counter() - t0
    assert not s.tasks and not s.objects, "every task finished and every object freed"
    return took / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--transitions", action="store_true", help="emit Transition records (the full stream is read)")
    ap.add_argument("--summary", action="store_true", help="count for the summary stream (a dashboard listens)")
    a = ap.parse_args()
    per = statistics.median(run(a.tasks, a.transitions, a.summary) for _ in range(a.repeat))
    mode = "summary" if a.summary else "transitions on" if a.transitions else "transitions off"
    print(f"scheduler: {per * 1e6:.1f} us per task ({a.tasks} tasks, {mode})")


if __name__ == "__main__":
    main()
