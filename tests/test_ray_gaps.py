"""What Ray programs rely on beyond the core calls: a cluster started on first use, ActorPool with
multi-return methods and ignored timeouts, ``is_canceled()``, harmless Ray options on methods,
``jpar.util`` and ``jpar.actor`` there as ``ray.util`` and ``ray.actor`` are."""

import os
import subprocess
import sys
import textwrap

import pytest

import jpar

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(120)
PY = sys.executable


@jpar.remote
def double(x):
    return 2 * x


@jpar.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self, k):
        self.n += k
        return self.n


@pytest.fixture
def no_cluster():
    """Starts with no cluster in this process; stops whatever the test started."""
    assert not jpar.is_initialized()
    yield
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []
    assert not jpar.is_initialized()


def run_py(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=90,
                          env=dict(os.environ, **env), cwd=os.path.dirname(os.path.dirname(__file__)))


# ---------------------------------------------------------------- start on first use
def test_put_starts_a_cluster_on_first_use_and_init_returns_that_one(no_cluster):
    ref = jpar.put(41)
    assert jpar.is_initialized()
    procs = jpar_children()
    assert len(procs) == 1 + (os.cpu_count() or 1)       # a head and one engine per core, as init() starts
    ctx = jpar.init()                                    # no arguments: the same cluster, silently
    assert jpar_children() == procs and jpar.get(double.remote(ref), timeout=30) == 82
    with pytest.warns(RuntimeWarning, match=r"started on first use.*jpar.shutdown\(\)"):
        again = jpar.init(num_cpus=4)                    # Ray keeps the running cluster too
    assert again.address == ctx.address and len(jpar.hooks.engines()) == len(procs) - 1
    with pytest.raises(RuntimeError, match="init twice by accident"):
        jpar.init(ignore_reinit_error=False)             # Ray's answer when asked not to ignore it


@pytest.mark.parametrize("first_call", ["get", "wait", "remote", "actor"])
def test_every_first_use_starts_a_cluster(first_call):
    code = f"""
        import jpar as ray
        assert not ray.is_initialized()

        @ray.remote
        def one():
            return 1

        @ray.remote
        class A:
            def f(self):
                return 2

        first = {first_call!r}
        if first == "get":
            assert ray.get([]) == []
        elif first == "wait":
            assert ray.wait([], num_returns=0) == ([], [])
        elif first == "remote":
            assert ray.get(one.remote()) == 1
        else:
            assert ray.get(A.remote().f.remote()) == 2
        assert ray.is_initialized()
        print("ok", ray.cluster_resources())
        ray.shutdown()
        assert not ray.is_initialized()
        """
    out = run_py(code)
    assert out.returncode == 0 and out.stdout.startswith("ok {'CPU'"), out.stderr


def test_auto_init_can_be_switched_off(no_cluster, monkeypatch):
    monkeypatch.setenv("JPAR_AUTO_INIT", "0")
    with pytest.raises(jpar.NotInitializedError, match=r"jpar.put\(\) needs a cluster"):
        jpar.put(1)
    with pytest.raises(jpar.NotInitializedError):
        double.remote(1)
    assert not jpar.is_initialized() and jpar_children() == []
    monkeypatch.setenv("JPAR_AUTO_INIT", "maybe")
    with pytest.raises(jpar.ConfigError, match="JPAR_AUTO_INIT='maybe' is not a valid bool"):
        jpar.put(1)


def test_read_only_calls_start_nothing(no_cluster):
    with pytest.raises(jpar.NotInitializedError):
        jpar.cluster_resources()
    assert not jpar.is_initialized()


# ---------------------------------------------------------------- ActorPool
@jpar.remote
class Pair:
    @jpar.method(num_returns=2)
    def split(self, x):
        return x, -x

    def wait_for(self, fifo):
        with open(fifo) as f:   # blocks until the test opens the pipe to write, returns when it closes it
            return f.read()


def test_actor_pool_takes_methods_with_several_returns(cluster):
    from jpar.util import ActorPool

    pool = ActorPool([Pair.remote(), Pair.remote()])
    assert sorted(pool.map(lambda a, v: a.split.remote(v), [1, 2, 3])) == [[1, -1], [2, -2], [3, -3]]
    assert list(pool.map(lambda a, v: a.split.remote(v), [4, 5])) == [[4, -4], [5, -5]]
    assert sorted(pool.map_unordered(lambda a, v: a.split.remote(v), [6, 7])) == [[6, -6], [7, -7]]


def test_get_next_unordered_ignores_a_timed_out_task_when_asked(cluster, tmp_path):
    from jpar.util import ActorPool

    gate = str(tmp_path / "gate")
    os.mkfifo(gate)
    pool = ActorPool([Pair.remote()])
    pool.submit(lambda a, v: a.wait_for.remote(v), gate)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.2)                     # not ignored: still pending
    assert pool.has_next()
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next_unordered(timeout=0.2, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()               # given up; its actor is back in the pool
    with open(gate, "w") as f:                                   # lets the ignored call end
        f.write("go")
    pool.submit(lambda a, v: a.split.remote(v), 9)               # runs after the ignored call
    assert pool.get_next_unordered(timeout=30) == [9, -9]


# ---------------------------------------------------------------- runtime context, options, modules
@jpar.remote
def note_cancel(started, seen):
    import time

    try:
        with open(started, "w") as f:   # the test reads this pipe: it returns once the task runs
            f.write("started")
        while True:
            time.sleep(0.01)
    except BaseException:   # the interruption a cancel raises: the task can ask why
        with open(seen, "w") as f:
            f.write(str(jpar.get_runtime_context().is_canceled()))
        raise


@jpar.remote
def not_cancelled():
    return jpar.get_runtime_context().is_canceled()


def test_is_canceled(cluster, tmp_path):
    assert jpar.get(not_cancelled.remote(), timeout=30) is False
    with pytest.raises(RuntimeError, match="inside a task"):
        jpar.get_runtime_context().is_canceled()
    started, seen = str(tmp_path / "started"), str(tmp_path / "seen")
    os.mkfifo(started)
    os.mkfifo(seen)
    ref = note_cancel.remote(started, seen)
    with open(started) as f:
        assert f.read() == "started"
    jpar.cancel(ref)
    with pytest.raises(jpar.TaskCancelledError):
        jpar.get(ref, timeout=30)
    with open(seen) as f:
        assert f.read() == "True"


def test_methods_accept_harmless_ray_options_as_tasks_do(cluster):
    @jpar.remote
    class Quiet:
        @jpar.method(enable_task_events=False)
        def f(self):
            return 1

        @jpar.method(num_returns=2, enable_task_events=True)
        def g(self):
            return 1, 2

    q = Quiet.remote()
    assert jpar.get(q.f.remote(), timeout=30) == 1 and jpar.get(q.g.remote(), timeout=30) == [1, 2]
    assert jpar.get(q.f.options(enable_task_events=False).remote(), timeout=30) == 1
    assert jpar.get(double.options(enable_task_events=False).remote(2), timeout=30) == 4
    with pytest.raises(jpar.ConfigError, match=r"Unknown option\(s\) \['concurrency_group'\] for an actor method"):
        jpar.method(concurrency_group="io")
    with pytest.raises(jpar.ConfigError, match="Unknown option"):
        q.f.options(bogus=1)
    with pytest.raises(jpar.ConfigError, match="enable_task_events"):
        jpar.method(enable_task_events="no")
    with pytest.raises(jpar.ConfigError):
        jpar.method(num_returns=0)


def test_util_and_actor_modules_are_there_as_in_ray():
    out = run_py("""
        import sys
        import jpar
        assert "jpar.util" not in sys.modules          # loaded on first use, not by import jpar
        pool_class = jpar.util.ActorPool               # no `import jpar.util` needed, as with ray.util
        from jpar.util import ActorPool
        assert pool_class is ActorPool and jpar.util.queue.Queue is jpar.util.Queue
        import jpar.actor
        from jpar.actor import ActorClass, ActorHandle, ActorMethod, method
        assert jpar.actor.ActorHandle is jpar.ActorHandle
        print("ok")
        """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
