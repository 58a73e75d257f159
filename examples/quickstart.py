"""The quickstart, end to end on local engines: what `make demo` runs.

Each step prints what it did, so a headless run shows the whole tour.
"""

import time

import jpar


@jpar.remote
def square(x):
    return x * x


@jpar.remote
def add(a, b):
    return a + b


@jpar.remote
def slow(seconds):
    time.sleep(seconds)
    return seconds


@jpar.remote
def fails():
    raise ValueError("this task raised on an engine")


@jpar.remote
def report():
    print("printed on an engine, shown here with its prefix")
    return "ok"


def step(title):
    print(f"\n== {title}")


def main():
    t0 = time.perf_counter()
    ctx = jpar.init()
    t1 = time.perf_counter()
    step("init(): a head and one engine per core")
    print(ctx)
    print(f"started in {t1 - t0:.2f} s; resources {jpar.cluster_resources()}")

    step("tasks: square.remote(i) returns ObjectRefs at once; get() waits for the values")
    refs = [square.remote(i) for i in range(4)]
    print(refs)
    print("get ->", jpar.get(refs))

    step("a DAG: refs as arguments are resolved on the engine")
    print("square(square(2)) ->", jpar.get(square.remote(square.remote(2))))
    total = add.remote(square.remote(3), square.remote(4))
    print("add(square(3), square(4)) ->", jpar.get(total))

    step("put() stores a value once; tasks take its ref")
    data = jpar.put(list(range(1000)))
    print("sum via a task ->", jpar.get(jpar.remote(sum).remote(data)))

    step("wait(): the first ready results, with a timeout")
    many = [slow.remote(s) for s in (0.05, 0.1, 5)]
    ready, not_ready = jpar.wait(many, num_returns=2, timeout=3)
    print(f"{len(ready)} ready {jpar.get(ready)}, {len(not_ready)} still running")

    step("cancel(): the slow one is interrupted on its engine")
    jpar.cancel(not_ready[0])
    try:
        jpar.get(not_ready[0])
    except jpar.TaskCancelledError as exc:
        print("get ->", type(exc).__name__)

    step("errors come back as the original type, with the engine's traceback")
    try:
        jpar.get(fails.remote())
    except ValueError as exc:
        print("caught ValueError:", exc.args[0], "| also a jpar.TaskError:", isinstance(exc, jpar.TaskError))

    step("output printed by a task reaches the driver, prefixed")
    print("get ->", jpar.get(report.remote()))

    step("throughput: 10,000 no-op tasks")
    noop = jpar.remote(lambda: None)
    t = time.perf_counter()
    jpar.get([noop.remote() for _ in range(10_000)])
    print(f"{10_000 / (time.perf_counter() - t):,.0f} tasks/s")

    step("shutdown(): the cluster stops, no process is left")
    jpar.shutdown()
    print("done in", f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
