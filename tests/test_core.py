"""The core API on a real local cluster (head + 2 engines on 127.0.0.1)."""

import os
import signal
import time

import pytest

import jpar
import jpar.backends.native

pytestmark = pytest.mark.timeout(60)


@jpar.remote
def square(x):
    return x * x


@jpar.remote
def add(a, b):
    return a + b


@jpar.remote
def fail(msg):
    raise ValueError(msg)


@jpar.remote
def pid():
    return os.getpid()


@jpar.remote
def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


@jpar.remote
def rendezvous(directory, n):
    """Returns this engine's pid once ``n`` tasks (on distinct engines) have reached this point."""
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(directory)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {n} tasks met")
        time.sleep(0.01)
    return os.getpid()


def test_issue_example(cluster):
    assert jpar.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert jpar.get(square.remote(square.remote(2))) == 16
    big = list(range(100_000))
    assert jpar.get(jpar.put(big)) == big
    refs = [sleep_then.remote(0), sleep_then.remote(0), sleep_then.remote(30)]
    ready, not_ready = jpar.wait(refs, num_returns=2, timeout=20)
    assert len(ready) == 2 and not_ready == [refs[2]]
    jpar.cancel(refs[2])
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(refs[2], timeout=10)


def test_init_is_idempotent_and_reports_resources(cluster):
    again = jpar.init()
    assert again.address == cluster.address and jpar.is_initialized()
    assert jpar.cluster_resources() == {"CPU": 2.0}
    assert 0.0 <= jpar.available_resources()["CPU"] <= 2.0
    assert "engines=2" in repr(cluster) and "<table>" in cluster._repr_html_()


def test_dag_of_refs_and_kwargs(cluster):
    a, b = jpar.put(3), square.remote(4)
    assert jpar.get(add.remote(a, b=b)) == 19
    chain = square.remote(1)
    for _ in range(20):
        chain = add.remote(chain, 1)
    assert jpar.get(chain) == 21


def test_nested_refs_arrive_as_refs_and_can_be_got(cluster):
    @jpar.remote
    def first(refs):
        assert isinstance(refs[0], jpar.ObjectRef)
        return jpar.get(refs[0]) * 10

    assert jpar.get(first.remote([square.remote(3)])) == 90


def test_tasks_submit_tasks_without_deadlock(cluster):
    @jpar.remote
    def fan(n):
        return sum(jpar.get([square.remote(i) for i in range(n)]))

    # four parents on two engines, each waiting on children: blocked tasks lend their engine
    assert jpar.get([fan.remote(5) for _ in range(4)]) == [30] * 4


def test_get_preserves_order_and_raises_first_error_at_once(cluster):
    slow = sleep_then.remote(20, "late")
    bad = fail.remote("broken")
    with pytest.raises(ValueError, match="broken") as info:
        jpar.get([slow, bad], timeout=15)
    assert jpar.wait([slow], timeout=0) == ([], [slow])     # raised while the earlier ref still ran
    err = info.value
    assert isinstance(err, jpar.TaskError)
    assert "raise ValueError(msg)" in err.remote_traceback
    assert "jpar/engine.py" not in err.remote_traceback
    jpar.cancel(slow)


def test_get_timeout_is_a_timeout_error(cluster):
    ref = sleep_then.remote(20)
    with pytest.raises(TimeoutError):
        jpar.get(ref, timeout=0.2)
    with pytest.raises(jpar.GetTimeoutError):
        jpar.get([ref], timeout=0)
    jpar.cancel(ref)


@jpar.remote
def mark_then_sleep(path, seconds):
    """Says it started (a file appears), sleeps, then says it finished."""
    open(path + ".started", "w").close()
    time.sleep(seconds)
    open(path + ".finished", "w").close()
    return "finished"


def wait_for_file(path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


def test_cancel_running_task_interrupts_it(cluster, tmp_path):
    marker = str(tmp_path / "task")
    ref = mark_then_sleep.remote(marker, 30)
    wait_for_file(marker + ".started")                     # it is running now
    jpar.cancel(ref)
    with pytest.raises(jpar.TaskCancelledError, match=r"mark_then_sleep was cancelled \(jpar.cancel\(\)\)"):
        jpar.get(ref, timeout=10)                          # well before its 30 s sleep ends
    assert jpar.get([square.remote(i) for i in range(4)], timeout=10) == [0, 1, 4, 9]   # engines usable
    assert not os.path.exists(marker + ".finished")        # interrupted, not run to the end


def test_cancel_right_after_submit(cluster, tmp_path):
    """No pause between .remote() and cancel(): the cancel may meet the task queued, dispatched or
    just started, and must stop it in each case (a lost cancel once left it running)."""
    for i in range(10):
        marker = str(tmp_path / f"t{i}")
        ref = mark_then_sleep.remote(marker, 30)
        jpar.cancel(ref)
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(ref, timeout=10)
    # both engines are free again: two tasks that wait for each other both finish
    assert len(set(jpar.get([rendezvous.remote(str(tmp_path / "meet"), 2) for _ in range(2)], timeout=30))) == 2
    assert not any(p.name.endswith(".finished") for p in tmp_path.iterdir())


def test_cancel_waiting_task_and_its_dependents(cluster):
    blocker = sleep_then.remote(30)
    dependent = add.remote(blocker, 1)
    jpar.cancel(blocker)
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(dependent, timeout=10)


def test_failed_dependency_propagates(cluster):
    with pytest.raises(ValueError, match="root cause"):
        jpar.get(add.remote(fail.remote("root cause"), 1), timeout=10)


def test_calling_remote_function_directly_is_a_type_error():
    with pytest.raises(TypeError, match=r"square.remote\(\)"):
        square(3)


def test_unpicklable_argument_fails_at_submit(cluster):
    import threading

    with pytest.raises(jpar.SerializationError, match="positional argument 0"):
        square.remote(threading.Lock())
    assert jpar.get(square.remote(2)) == 4


def test_bad_arguments_to_api_calls(cluster):
    with pytest.raises(TypeError):
        jpar.get(5)
    with pytest.raises(TypeError):
        jpar.get([square.remote(1), 5])
    with pytest.raises(TypeError):
        jpar.put(square.remote(1))
    with pytest.raises(ValueError):
        jpar.wait([square.remote(1)], num_returns=2)
    with pytest.raises(jpar.ConfigError, match="Unknown option"):
        square.options(num_cpu=2)


def test_num_returns(cluster):
    @jpar.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert jpar.get(refs) == [1, 2, 3]
    with pytest.raises(ValueError, match="returned 3 values, but num_returns=2 expected 2"):
        jpar.get(three.options(num_returns=2).remote()[0], timeout=10)


def test_infeasible_request_fails_fast(cluster):
    with pytest.raises(jpar.ResourceError, match="no node can ever provide"):
        jpar.get(square.options(num_cpus=8).remote(2), timeout=10)
    with pytest.raises(jpar.ResourceError):
        jpar.get(square.options(resources={"TPU": 1}).remote(2), timeout=10)


def test_fractional_and_multi_cpu_requests_run(cluster):
    assert jpar.get(square.options(num_cpus=2).remote(3), timeout=20) == 9
    assert jpar.get([square.options(num_cpus=0.5).remote(i) for i in range(4)]) == [0, 1, 4, 9]


def test_retry_exceptions(cluster, tmp_path):
    marker = tmp_path / "attempts"

    @jpar.remote(max_retries=2, retry_exceptions=[OSError])
    def flaky(path):
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) < 3:
            raise OSError("transient")
        return "ok"

    assert jpar.get(flaky.remote(str(marker)), timeout=20) == "ok"
    assert marker.read_text() == "xxx"


def test_functions_defined_in_main_ship_by_value_once(cluster):
    ns = {}
    exec("import jpar\n@jpar.remote\ndef local_fn(x):\n    return x + 100\n", ns)
    ns["local_fn"].__module__ = "__main__"
    assert jpar.get([ns["local_fn"].remote(i) for i in range(3)]) == [100, 101, 102]
    driver = jpar.backends.native.current_driver()
    assert ns["local_fn"]._backend_cache["native"][0] in driver._fn_sent


def test_task_output_is_prefixed_on_the_driver(cluster, capfd):
    @jpar.remote
    def chatty():
        print("hello from a task")
        import sys
        print("to stderr", file=sys.stderr)
        return 1

    assert jpar.get(chatty.remote()) == 1
    deadline = time.monotonic() + 5
    out = err = ""
    while time.monotonic() < deadline and ("hello" not in out or "to stderr" not in err):
        o, e = capfd.readouterr()
        out, err = out + o, err + e
        time.sleep(0.05)
    assert "(chatty pid=" in out and "hello from a task" in out
    assert "to stderr" in err


def test_future_and_await(cluster):
    import asyncio

    assert square.remote(6).future().result(timeout=10) == 36

    async def main():
        return await square.remote(7)

    assert asyncio.run(main()) == 49


def test_engine_killed_under_a_task_retries_then_fails(cluster, tmp_path):
    @jpar.remote(max_retries=1)
    def die_if_first(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "survived"

    @jpar.remote(max_retries=1)
    def always_die():
        os.kill(os.getpid(), signal.SIGKILL)

    path = f"/tmp/jpar-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        assert jpar.get(die_if_first.remote(path), timeout=40) == "survived"
    finally:
        os.unlink(path)
    with pytest.raises(jpar.EngineCrashedError, match="retries"):
        jpar.get(always_die.remote(), timeout=40)
    # the head replaced the dead engines: the cluster still has two and serves (two tasks that each
    # wait until both have started finish only on two live engines)
    pids = jpar.get([rendezvous.remote(str(tmp_path / "meet"), 2) for _ in range(2)], timeout=40)
    assert len(set(pids)) == 2
    assert jpar.cluster_resources()["CPU"] == 2.0


def test_ref_repr_names_its_task_and_engine_without_holding_the_value(cluster):
    ref = square.remote(7)
    assert jpar.get(ref) == 49
    html = ref._repr_html_()
    assert "ready" in html and "from <code>square</code> on engine" in html
    assert repr(ref) == f"ObjectRef({ref.hex()})"
    assert "from <code>" not in jpar.put(1)._repr_html_()      # a put value has no producing task


def test_actor_handle_repr_shows_state_and_methods(cluster):
    @jpar.remote
    class Greeter:
        def hello(self):
            return "hi"

    g = Greeter.remote()
    assert jpar.get(g.hello.remote()) == "hi"
    html = g._repr_html_()
    assert "Actor(Greeter" in html and "alive" in html and "methods: hello" in html
    jpar.kill(g)


def test_cancel_all_tasks_of_one_driver_from_another(cluster):
    from jpar.runtime.driver.driver import Driver
    from jpar.backends.native import NativeBackend, current_driver, set_current_driver

    main = current_driver()
    bystander = Driver(main.conn, main.config)              # another notebook on the same cluster
    admin = Driver(main.conn, main.config, kind="cli")      # the sidebar or `jpar`, cancelling
    try:
        longs = [sleep_then.remote(30, i) for i in range(3)]     # two run, one waits for an engine
        later = add.remote(longs[0], 1)                           # waits for an argument
        main.query("sync", timeout=10)                            # the head has them (same socket, in order)
        set_current_driver(bystander)
        try:
            kept = sleep_then.remote(0.2, "kept")
        finally:
            set_current_driver(main)
        bystander.query("sync", timeout=10)
        assert jpar.hooks.cancel_driver_tasks(main.client_no, driver=NativeBackend(admin)) == 4
        for ref in longs + [later]:
            with pytest.raises(jpar.TaskCancelledError, match=f"all tasks of driver {main.client_no} were cancelled"):
                jpar.get(ref, timeout=10)
        assert bystander.get([kept], timeout=20) == ["kept"]     # its engines were freed, its task ran
        with pytest.raises(LookupError, match="No client"):
            jpar.hooks.cancel_driver_tasks(10_000)
        mine = sleep_then.remote(30)
        assert jpar.hooks.cancel_driver_tasks() == 1              # this process's own driver
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(mine, timeout=10)
        assert jpar.get(square.remote(6), timeout=10) == 36      # and it goes on submitting
    finally:
        bystander.close()
        admin.close()


def test_task_events_are_built_only_while_someone_listens(cluster):
    """The head's stream is an XPUB: with no dashboard or sidebar subscribed it builds no per-task
    events (their cost is the head's); a subscriber gets every transition, and leaving turns it off."""
    noop = jpar.remote(lambda: None)
    jpar.get([noop.remote() for _ in range(20)])
    before = jpar.hooks.status()["events"]
    assert before["listened"] is False
    jpar.get([noop.remote() for _ in range(200)])
    assert jpar.hooks.status()["events"]["published"] - before["published"] < 20   # not ~3 per task
    for _ in range(5):   # once subscribe_events() returns, every task's whole story reaches it
        sub = jpar.hooks.subscribe_events()
        try:
            assert jpar.hooks.status()["events"]["listened"] is True
            refs = [noop.remote() for _ in range(20)]
            jpar.get(refs)
            want, created, done = {r.id for r in refs}, set(), set()
            deadline = time.monotonic() + 10
            while not (want <= done and want <= created) and time.monotonic() < deadline:
                for e in sub.poll(0.5):
                    if e.kind == "task" and e.state == "done":
                        done.add(e.key)
                    elif e.kind == "task" and isinstance(e.info, dict) and "name" in e.info:
                        created.add(e.key)
            assert want <= done and want <= created
        finally:
            sub.close()
    deadline = time.monotonic() + 10
    while jpar.hooks.status()["events"]["listened"] and time.monotonic() < deadline:
        pass   # each status() is a round trip to the head, which reads unsubscriptions every 0.1 s
    assert jpar.hooks.status()["events"]["listened"] is False
