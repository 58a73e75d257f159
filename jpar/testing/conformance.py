"""The suite every backend passes: Ray's programming model, the drop-ins and the front-end hooks,
observed only through the public API (``jpar.*``, ``jpar.hooks``). See :mod:`jpar.testing`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pathlib
import tempfile
import threading
import time

import pytest

import jpar
from jpar import backends, hooks
from jpar.testing.plugin import requires

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- what the tasks run
@jpar.remote
def add(a, b=0):
    return a + b


@jpar.remote
def pair(x):
    return x, x * 10


@jpar.remote(num_returns=2)
def split(x):
    return x, -x


@jpar.remote
def total(*xs):
    return sum(xs)


@jpar.remote
def fan_out(n):
    """A task that submits tasks and waits for them: nested tasks."""
    return sum(jpar.get([add.remote(i, 1) for i in range(n)], timeout=60))


@jpar.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@jpar.remote
def fail(message):
    raise ValueError(message)


@jpar.remote
def where_ref_resolved(value):
    """What a task sees for a ref argument: the value itself, resolved on the engine."""
    return type(value).__name__, len(value)


@jpar.remote
def chatty(text):
    print(text)
    return len(text)


@jpar.remote
def fail_first_time(marker):
    path = pathlib.Path(marker)
    if not path.exists():
        path.write_text("failed once")
        os._exit(1)     # the engine process dies: a system failure, retried by max_retries
    return "second try"


@jpar.remote
def nums_in(box):
    """A ref inside a container arrives as a ref: the task gets its value itself."""
    return jpar.get(box[0], timeout=60) + 1


@jpar.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, by=1):
        self.n += by
        return self.n

    def value(self):
        return self.n

    def boom(self):
        raise KeyError("no such thing")


def square(x):
    return x * x


# ---------------------------------------------------------------- the cluster
def test_init_is_idempotent_and_names_its_backend(jpar_cluster):
    name = backends.current().name
    assert jpar.init() is not None and backends.current().name == name
    assert f"backend={name!r}" in repr(jpar_cluster)
    res = jpar.cluster_resources()
    assert res.get("CPU", 0) >= 2, res
    assert jpar.is_initialized()


# ---------------------------------------------------------------- tasks, refs, the DAG
def test_tasks_and_options(jpar_cluster):
    assert jpar.get(add.remote(1, 2), timeout=60) == 3
    assert jpar.get(add.remote(1, b=5), timeout=60) == 6
    assert jpar.get([add.remote(i, i) for i in range(20)], timeout=60) == [2 * i for i in range(20)]
    assert jpar.get(add.options(num_cpus=1).remote(2, 2), timeout=60) == 4
    refs = split.remote(7)
    assert isinstance(refs, list) and len(refs) == 2
    assert jpar.get(refs, timeout=60) == [7, -7]
    a, b = pair.options(num_returns=2).remote(3)
    assert jpar.get([a, b], timeout=60) == [3, 30]


def test_refs_as_arguments_build_a_dag_resolved_on_the_engines(jpar_cluster):
    x = add.remote(1, 1)
    y = add.remote(x, 10)
    z = total.remote(x, y, add.remote(y, 100))
    assert jpar.get(z, timeout=60) == 2 + 12 + 112
    big = jpar.put(b"x" * 3_000_000)
    assert jpar.get(where_ref_resolved.remote(big), timeout=60) == ("bytes", 3_000_000)
    assert jpar.get(nums_in.remote([jpar.put(41)]), timeout=60) == 42


def test_nested_tasks(jpar_cluster):
    assert jpar.get(fan_out.remote(5), timeout=90) == sum(range(1, 6))


def test_put_get_wait(jpar_cluster):
    ref = jpar.put({"a": [1, 2, 3]})
    assert jpar.get(ref, timeout=30) == {"a": [1, 2, 3]}
    slow = sleep_then.remote(5, "slow")
    with pytest.raises(jpar.GetTimeoutError):
        jpar.get(slow, timeout=0.2)
    fast = [add.remote(i) for i in range(3)]
    ready, rest = jpar.wait(fast + [slow], num_returns=3, timeout=60)
    assert set(ready) == set(fast) and rest == [slow]
    ready, rest = jpar.wait([slow], num_returns=1, timeout=0.1)
    assert ready == [] and rest == [slow]
    jpar.cancel(slow)


def test_errors_keep_their_type_and_remote_traceback(jpar_cluster):
    with pytest.raises(ValueError, match="bad input") as info:
        jpar.get(fail.remote("bad input"), timeout=60)
    assert isinstance(info.value, jpar.TaskError)
    assert "fail" in str(info.value) and "raise ValueError(message)" in str(info.value)
    dependent = add.remote(fail.remote("upstream"), 1)
    with pytest.raises(ValueError, match="upstream"):
        jpar.get(dependent, timeout=60)


def test_await_ref(jpar_cluster):
    async def main():
        return await add.remote(20, 22)

    assert asyncio.run(main()) == 42
    fut = add.remote(1, 1).future()
    assert isinstance(fut, concurrent.futures.Future) and fut.result(timeout=60) == 2


def test_max_retries_reruns_a_task_whose_engine_died(jpar_cluster):
    with tempfile.TemporaryDirectory() as d:
        marker = os.path.join(d, "marker")
        assert jpar.get(fail_first_time.options(max_retries=2).remote(marker), timeout=90) == "second try"


def test_cancel_queued_and_running(jpar_cluster):
    running = [sleep_then.remote(5, i) for i in range(4)]      # more than the engines: some stay queued
    for r in running:
        jpar.cancel(r)                                           # never raises
    for r in running:
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(r, timeout=60)
    assert jpar.get(add.remote(1, 1), timeout=60) == 2          # the cluster goes on


@requires("interrupt_running")
def test_cancel_interrupts_a_running_task(jpar_cluster):
    r = sleep_then.remote(60, "never")
    ready, _ = jpar.wait([r], num_returns=1, timeout=1.0)        # running by now, or about to be
    assert ready == []
    t0 = time.monotonic()
    jpar.cancel(r)
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(r, timeout=60)
    done = jpar.get([add.remote(i) for i in range(4)], timeout=30)   # engines are free again
    assert done == [0, 1, 2, 3] and time.monotonic() - t0 < 50


# ---------------------------------------------------------------- actors
def test_actors_keep_state_and_order_per_caller(jpar_cluster):
    c = Counter.remote(10)
    refs = [c.incr.remote() for _ in range(50)]
    assert jpar.get(refs, timeout=60) == list(range(11, 61))
    assert jpar.get(c.value.remote(), timeout=60) == 60
    with pytest.raises(KeyError, match="no such thing"):
        jpar.get(c.boom.remote(), timeout=60)
    assert jpar.get(c.incr.remote(5), timeout=60) == 65           # an error does not end the actor


def test_actor_call_refs_are_refs_like_any_other(jpar_cluster):
    """An actor call's ref is an argument of tasks and of other calls, travels inside values, and
    is waited for and awaited as a task's ref is."""
    c = Counter.remote(0)
    assert jpar.get(c.value.remote(), timeout=60) == 0          # the actor is up: its calls go straight to it
    first = c.incr.remote(2)
    assert jpar.get(add.remote(first, 1), timeout=60) == 3                 # a task's argument
    assert jpar.get(nums_in.remote([c.incr.remote(3)]), timeout=60) == 6    # inside a value
    assert jpar.get(c.incr.remote(first), timeout=60) == 7                 # another call's argument
    later = c.incr.remote()
    ready, rest = jpar.wait([later, sleep_then.remote(10, 0)], num_returns=1, timeout=60)
    assert ready == [later] and len(rest) == 1
    assert later.future().result(timeout=60) == 8
    with pytest.raises(KeyError, match="no such thing"):
        jpar.get(add.remote(c.boom.remote()), timeout=60)                   # its error reaches the task
    for r in rest:
        jpar.cancel(r)


def test_named_actor_and_kill(jpar_cluster):
    name = f"counter-{os.getpid()}-{time.monotonic_ns()}"
    c = Counter.options(name=name).remote(1)
    assert jpar.get(c.incr.remote(), timeout=60) == 2
    again = jpar.get_actor(name)
    assert jpar.get(again.incr.remote(), timeout=60) == 3
    with pytest.raises(ValueError):
        jpar.get_actor(name + "-missing")
    jpar.kill(c)
    with pytest.raises(jpar.ActorDiedError):
        jpar.get(c.value.remote(), timeout=60)


def test_actor_handles_pass_to_tasks(jpar_cluster):
    @jpar.remote
    def bump(counter, times):
        return jpar.get([counter.incr.remote() for _ in range(times)], timeout=60)[-1]

    c = Counter.remote()
    assert jpar.get(bump.remote(c, 3), timeout=90) == 3
    assert jpar.get(c.value.remote(), timeout=60) == 3


# ---------------------------------------------------------------- the drop-ins
def test_pool_executor_and_joblib(jpar_cluster):
    from jpar.multiprocessing import Pool

    with Pool(2) as pool:
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.apply_async(square, (7,)).get(timeout=60) == 49
        assert sorted(pool.imap_unordered(square, range(10))) == [x * x for x in range(10)]
    with jpar.executor() as ex:
        assert list(ex.map(square, range(10))) == [x * x for x in range(10)]
        assert ex.submit(square, 9).result(timeout=60) == 81
    import joblib

    from jpar import joblib as _registers_the_backend  # noqa: F401
    with joblib.parallel_backend("jpar"):
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(10)) == [i * i for i in range(10)]


# ---------------------------------------------------------------- what front ends see
def test_output_goes_to_the_handler_under_the_submitting_task(jpar_cluster):
    got: list = []
    seen = threading.Event()
    contexts = {}

    def on_submit(task_id):
        contexts[task_id] = f"ctx-{task_id}"
        return contexts[task_id]

    def handler(chunk, context):
        got.append((chunk.task_id, chunk.stream, chunk.text, context))
        if "hello conformance" in chunk.text:
            seen.set()

    hooks.set_front_end(on_submit, handler)
    try:
        ref = chatty.remote("hello conformance")
        assert jpar.get(ref, timeout=60) == len("hello conformance")
        assert seen.wait(30), got
        tid, stream, text, context = next(g for g in got if "hello conformance" in g[2])
        assert tid == ref.id and stream == "stdout" and context == contexts[ref.id]
    finally:
        hooks.set_front_end(None, None)


def test_hooks_cancel_by_task_id_and_report_done(jpar_cluster):
    ids = []
    hooks.set_front_end(lambda tid: ids.append(tid), None)
    try:
        quick = add.remote(1, 1)
        slow = sleep_then.remote(5, "x")
        assert jpar.get(quick, timeout=60) == 2
        assert hooks.task_ids_done([quick.id, slow.id]) == [quick.id]
        assert set(hooks.pending_tasks()) >= {slow.id}
        hooks.cancel_tasks([slow.id])
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(slow, timeout=60)
        assert quick.id in ids and slow.id in ids
    finally:
        hooks.set_front_end(None, None)


def test_status_and_events_describe_the_cluster(jpar_cluster):
    st = hooks.status(timeout=30)
    engines = st["engines"]
    assert len(engines) >= 2
    for e in engines:
        assert {"id", "pid", "node", "cpu", "rss"} <= set(e), e
        assert e["rss"] > 0
    sub = hooks.subscribe_events()
    try:
        ref = add.remote(2, 3)
        assert jpar.get(ref, timeout=60) == 5
        states = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "done" not in states:
            states |= {e.state for e in sub.poll(0.5) if e.kind == "task" and e.key == ref.id}
        assert "done" in states, states
    finally:
        sub.close()
    assert isinstance(hooks.store_statistics(timeout=30), dict)


# ---------------------------------------------------------------- declared gaps
def test_declared_gaps_raise_unsupported_on_backend(jpar_cluster):
    """Every capability a backend declares missing raises UnsupportedOnBackend where it is asked for."""
    b = backends.current()
    caps = b.capabilities
    probes = {
        "actor_restart": lambda: Counter.options(max_restarts=1).remote(),
        "actor_concurrency": lambda: Counter.options(max_concurrency=4).remote(),
        "placement": lambda: add.options(placement=0).remote(1, 1),
        "add_engines": lambda: hooks.add_engines(1),
    }
    for flag, probe in probes.items():
        if not getattr(caps, flag):
            with pytest.raises(jpar.UnsupportedOnBackend, match=b.name):
                probe()
