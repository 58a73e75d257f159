"""jpar.futures.Executor against a real two-engine cluster."""

import concurrent.futures as cf
import os
import subprocess
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

import jpar
from jpar.process_executor import executor as make_executor
from jpar.futures import Executor, ProcessPoolExecutor

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]  # conftest: one cluster per module


@pytest.fixture
def ex():
    e = Executor()
    yield e
    e.shutdown(wait=True, cancel_futures=True)


def mul(a, b=1):
    return a * b


def sleep_then(t, value=None):
    time.sleep(t)
    return value


def boom(msg="boom"):
    raise RuntimeError(msg)  # the remote line


def pid():
    return os.getpid()


_state = {}


def init_state(path, tag):
    _state["tag"] = tag
    with open(path, "a") as f:
        f.write(f"{tag} {os.getpid()}\n")


def get_state():
    return _state.get("tag")


def failing_init():
    raise ValueError("error in initializer")


def test_is_a_concurrent_futures_executor():
    assert ProcessPoolExecutor is Executor
    assert issubclass(Executor, cf.Executor)


def test_submit_and_map(ex):
    assert ex.submit(mul, 6, 7).result(timeout=30) == 42
    assert ex.submit(mul, 2, b=8).result(timeout=30) == 16
    assert list(ex.map(mul, range(10), range(10))) == [i * i for i in range(10)]
    assert list(ex.map(mul, range(40), range(40), chunksize=6)) == [i * i for i in range(40)]
    assert list(ex.map(mul, range(1000))) == list(range(1000))
    assert list(ex.map(mul, [])) == []
    with pytest.raises(ValueError):
        ex.map(mul, range(3), chunksize=0)
    with pytest.raises(TypeError):
        ex.submit()


def test_future_is_stdlib_future_with_ref(ex):
    f = ex.submit(mul, 3, 3)
    assert isinstance(f, cf.Future)
    assert f.result(timeout=30) == 9
    assert isinstance(f.ref, jpar.ObjectRef)
    assert jpar.get(jpar.remote(mul).remote(f.ref, 2), timeout=30) == 18   # pass it on, unfetched


def test_exception_is_the_users_type_with_remote_traceback(ex):
    f = ex.submit(boom, "x")
    exc = f.exception(timeout=30)
    assert type(exc) is RuntimeError and exc.args == ("x",)
    assert type(exc.__cause__).__name__ == "_RemoteTraceback"
    assert "raise RuntimeError(msg)  # the remote line" in exc.__cause__.tb
    with pytest.raises(RuntimeError):
        f.result()
    it = ex.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5], chunksize=1)
    assert next(it) == (0, 1) and next(it) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(it)


def test_wait_and_as_completed(ex):
    fast = ex.submit(mul, 2, 21)
    slow = ex.submit(sleep_then, 1.5, "slow")
    done, not_done = cf.wait([fast, slow], return_when=cf.FIRST_COMPLETED, timeout=30)
    assert fast in done and slow in not_done
    order = [f.result() for f in cf.as_completed([slow, fast], timeout=30)]
    assert order == [42, "slow"]
    bad = ex.submit(boom)
    later = ex.submit(sleep_then, 3)
    done, not_done = cf.wait([bad, later], return_when=cf.FIRST_EXCEPTION, timeout=30)
    assert done == {bad} and not_done == {later}


def test_map_timeout(ex):
    results = []
    with pytest.raises(TimeoutError):
        for r in ex.map(sleep_then, [0, 0, 3], timeout=1.5, chunksize=1):
            results.append(r)
    assert results == [None, None]


def mark_then_sleep(path, seconds):
    open(path + ".started", "w").close()
    time.sleep(seconds)
    open(path + ".finished", "w").close()


def test_cancel_queued_and_running(tmp_path):
    marker = str(tmp_path / "call")
    with Executor(max_workers=1) as ex:       # one call at a time: the second waits locally
        running = ex.submit(mark_then_sleep, marker, 30)
        queued = ex.submit(mul, 1, 1)
        assert queued.cancel() and queued.cancelled()
        deadline = time.monotonic() + 30
        while not os.path.exists(marker + ".started"):       # it runs on its engine now
            assert time.monotonic() < deadline, "the call did not start"
            time.sleep(0.01)
        assert running.cancel() and running.cancelled()      # interrupts it on its engine
        done, _ = cf.wait([running, queued], timeout=5)
        assert done == {running, queued}
        with pytest.raises(cf.CancelledError):
            running.result()
        assert ex.submit(mul, 5, 5).result(timeout=10) == 25  # the engine is free again
    assert not os.path.exists(marker + ".finished")


def test_cancel_right_after_submit():
    with Executor(max_workers=2) as ex:
        for _ in range(10):
            f = ex.submit(sleep_then, 30)
            assert f.cancel() and f.cancelled()
        assert sorted(ex.map(mul, range(4), range(4))) == [0, 1, 4, 9]   # both engines free again


def test_shutdown(ex):
    fs = [ex.submit(sleep_then, 0.1, i) for i in range(50)]
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    others = [f for f in fs if not f.cancelled()]
    assert len(cancelled) > 20 and others
    assert all(f.done() and f.exception() is None for f in others)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(mul, 1, 1)


def test_shutdown_wait_waits_for_everything():
    ex = Executor()
    fs = [ex.submit(sleep_then, 0.05, i) for i in range(40)]
    ex.shutdown(wait=True)
    assert [f.result(timeout=0) for f in fs] == list(range(40))


def test_context_manager_and_factory():
    with make_executor(max_workers=2) as ex:
        assert list(ex.map(mul, [1, 2], [3, 4])) == [3, 8]
    with pytest.raises(RuntimeError):
        ex.submit(mul, 1)


def test_bad_arguments():
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(max_workers=bad)
    with pytest.raises(TypeError):
        Executor(initializer=3)


def test_initializer_once_per_engine(tmp_path):
    log = tmp_path / "init.log"
    with Executor(initializer=init_state, initargs=(str(log), "ready")) as ex:
        states = [ex.submit(get_state) for _ in range(20)]
        assert {f.result(timeout=30) for f in states} == {"ready"}
        pids = {f.result() for f in [ex.submit(sleep_then, 0.1, None) for _ in range(6)]}
        del pids
    entries = log.read_text().split("\n")[:-1]
    assert len(entries) == len(set(entries)) and 1 <= len(entries) <= 2


def test_failing_initializer_breaks_the_executor():
    ex = Executor(initializer=failing_init)
    f = ex.submit(mul, 1, 1)
    with pytest.raises(BrokenProcessPool) as info:
        f.result(timeout=30)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(BrokenProcessPool):
        ex.submit(mul, 1, 1)
    ex.shutdown()


def test_done_callbacks_run_off_the_receiver_thread(ex):
    seen = []
    ev = threading.Event()
    remote_mul = jpar.remote(mul)

    def cb(f):
        # blocking on jpar from a done-callback must not deadlock jpar's receiver thread
        seen.append((threading.current_thread().name, jpar.get(remote_mul.remote(f.result(), 2), timeout=30)))
        ev.set()

    ex.submit(mul, 4, 5).add_done_callback(cb)
    assert ev.wait(30)
    assert seen[0][1] == 40 and seen[0][0].startswith("jpar-executor")


def test_many_small_submits(ex):
    fs = [ex.submit(mul, i, 2) for i in range(2000)]
    assert [f.result(timeout=30) for f in fs] == [2 * i for i in range(2000)]


def test_jpar_executor_is_the_function_on_every_access():
    """``jpar.executor`` loads lazily. Its module was ``jpar.executor`` too: importing it (first use,
    or ``import jpar.futures``) rebound the name to the module, so ``jpar.executor()`` raised
    TypeError. The module is ``jpar.process_executor`` now."""
    code = ("import jpar, types\n"
            "import jpar.futures, jpar.joblib\n"
            "first = jpar.executor\n"
            "second = jpar.executor\n"
            "assert callable(first) and callable(second) and first is second, (first, second)\n"
            "assert not isinstance(jpar.executor, types.ModuleType)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
