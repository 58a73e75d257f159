"""jpar.multiprocessing.Pool against a real two-engine cluster: API, errors, balancing."""

import collections
import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import jpar
import jpar.multiprocessing as jmp
from jpar.multiprocessing import Pool
from jpar.pool import default_chunksize

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("cluster")]  # conftest: one cluster per module

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool():
    p = Pool()
    yield p
    p.terminate()
    p.join()


# Task bodies: module-level, so engines import them from this file (jpar.init ships sys.path).

def sqr(x, wait=0.0):
    time.sleep(wait)
    return x * x


def slow_sqr(x):
    time.sleep(1.0)
    return x * x


def mul(a, b):
    return a * b


def pid(_=None):
    return os.getpid()


def fail_on(x, bad=3):
    if x == bad:
        raise KeyError(f"item {x}")
    return x


def spans(x, wait):
    t0 = time.time()
    time.sleep(wait)
    return x, os.getpid(), t0, time.time()


def record_init(path, tag):
    with open(path, "a") as f:
        f.write(f"{tag} {os.getpid()}\n")


def gen(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise OverflowError("generator failed")
        yield i


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


# -- the API, as the stdlib has it ---------------------------------------------------------------

def test_map_and_friends(pool):
    assert pool.map(sqr, range(10)) == [x * x for x in range(10)]
    assert pool.map(sqr, [3, 1, 2], chunksize=1) == [9, 1, 4]
    assert pool.map(sqr, (i for i in range(7))) == [x * x for x in range(7)]
    assert pool.starmap(mul, [(1, 2), (3, 4)]) == [2, 12]
    assert pool.map_async(sqr, range(5)).get(timeout=30) == [0, 1, 4, 9, 16]
    assert pool.starmap_async(mul, zip(range(5), range(5))).get(timeout=30) == [0, 1, 4, 9, 16]
    assert pool.apply(sqr, (5,)) == 25
    assert pool.apply(sqr, (), {"x": 3}) == 9
    assert pool.apply_async(mul, (6, 7)).get(timeout=30) == 42
    assert list(pool.imap(sqr, range(20), chunksize=3)) == [x * x for x in range(20)]
    assert sorted(pool.imap_unordered(sqr, range(20))) == [x * x for x in range(20)]
    assert pool.map(sqr, []) == []
    assert list(pool.imap(sqr, [])) == []
    assert list(pool.imap_unordered(sqr, iter([]))) == []


def test_big_map_is_correct(pool):
    n = 100_000
    assert pool.map(sqr, range(n)) == [x * x for x in range(n)]
    assert list(pool.imap(sqr, range(n))) == [x * x for x in range(n)]


def test_a_map_ships_its_function_once_with_the_globals_of_that_call(pool):
    """A function pickled by value (defined in a notebook) is pickled once per map call, not per
    chunk, and each call still sees the globals as they are then, like the stdlib pool."""
    ns = {"factor": 2}
    exec("def scale(x):\n    return x * factor", ns)
    scale = ns["scale"]
    assert pool.map(scale, range(40)) == [2 * x for x in range(40)]          # ~10 chunks
    assert list(pool.imap(scale, range(40), chunksize=3)) == [2 * x for x in range(40)]
    ns["factor"] = 3
    assert pool.map(scale, range(40)) == [3 * x for x in range(40)]
    assert list(pool.imap(scale, iter(range(40)))) == [3 * x for x in range(40)]   # unknown length


def test_default_chunksize_is_about_four_per_worker():
    assert default_chunksize(100_000, 2) == 12_500
    assert default_chunksize(10, 2) == 2
    assert default_chunksize(1, 8) == 1
    assert default_chunksize(0, 2) == 1


def sqr_and_task(x):
    return x * x, jpar.get_runtime_context().get_task_id()


def test_imap_over_generator_adapts_chunks_and_keeps_order(pool):
    n = 20_000
    out = list(pool.imap(sqr_and_task, gen(n)))
    assert [v for v, _ in out] == [x * x for x in range(n)]
    sizes = collections.Counter(t for _, t in out)
    # chunks grow from 1 item: fewer tasks than items, some with many items (how many depends on the
    # machine's speed: each chunk aims at TARGET_CHUNK_SECONDS of work; the rule is tested below)
    assert 1 < len(sizes) < n and max(sizes.values()) > 1, sizes
    assert sorted(pool.imap_unordered(sqr, gen(500), chunksize=7)) == [x * x for x in range(500)]


def test_adaptive_chunks_double_towards_the_target_and_never_below_one():
    from jpar.pool import next_chunk_size
    from jpar.submitter import MAX_ADAPTIVE_CHUNK, TARGET_CHUNK_SECONDS

    per_item = TARGET_CHUNK_SECONDS / 100              # 100 items make a target-sized chunk
    assert next_chunk_size(1, per_item) == 2            # at most doubling
    assert next_chunk_size(64, per_item) == 100         # up to the target
    assert next_chunk_size(100, per_item * 4) == 25     # shrinks when items got slower
    assert next_chunk_size(8, 10.0) == 1                # never below one item
    assert next_chunk_size(MAX_ADAPTIVE_CHUNK, 0.0) == MAX_ADAPTIVE_CHUNK


def test_imap_yields_in_order_as_results_arrive(pool):
    it = pool.imap(sqr, [1, 2, 3], chunksize=1)
    slow = pool.apply_async(sqr, (0, 3.0))      # keeps one engine busy meanwhile
    assert next(it) == 1
    assert it.next(timeout=10) == 4
    assert not slow.ready()                     # yielded as they arrived, not after the slow one
    assert list(it) == [9]
    slow.get(timeout=30)


def test_async_result_api(pool):
    r = pool.apply_async(sqr, (4, 1.0))
    assert not r.ready()
    with pytest.raises(ValueError):
        r.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        r.get(timeout=0.05)
    with pytest.raises(TimeoutError):          # the builtin one, too
        r.get(timeout=0.05)
    with pytest.raises(jpar.JparError):
        r.get(timeout=0.05)
    r.wait(timeout=30)
    assert r.ready() and r.successful() and r.get() == 16


def test_imap_next_timeout_is_multiprocessing_timeout(pool):
    it = pool.imap(slow_sqr, [3], chunksize=1)
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.05)
    assert it.next(timeout=30) == 9
    with pytest.raises(StopIteration):
        it.next(timeout=1)


def test_callbacks(pool):
    got, errs = [], []
    pool.map_async(int, ["1"], callback=got.append, error_callback=errs.append).wait(timeout=30)
    assert got == [[1]] and errs == []
    pool.map_async(int, ["a"], callback=got.append, error_callback=errs.append).wait(timeout=30)
    assert len(got) == 1 and isinstance(errs[0], ValueError)
    r = pool.apply_async(fail_on, (3,), error_callback=errs.append)
    r.wait(timeout=30)
    assert isinstance(errs[1], KeyError)
    assert not r.successful()


def test_callback_may_call_jpar_and_submit_to_the_pool(pool):
    out = []
    remote_sqr = jpar.remote(sqr)

    def cb(value):  # runs on the pool's completion thread, not on jpar's receiver thread
        out.append(jpar.get(remote_sqr.remote(value), timeout=30))
        out.append(pool.apply_async(sqr, (value,)))   # submitting is fine; blocking on it here is not

    pool.apply_async(sqr, (3,), callback=cb).wait(timeout=30)
    assert out[0] == 81 and out[1].get(timeout=30) == 81


# -- errors: the stdlib's types --------------------------------------------------------------------

def test_task_exception_is_the_users_type_with_remote_traceback(pool):
    with pytest.raises(KeyError) as info:
        pool.map(fail_on, range(10))
    exc = info.value
    assert type(exc) is KeyError                      # exactly, as multiprocessing gives it
    assert isinstance(exc.__cause__, multiprocessing.pool.RemoteTraceback)
    assert "raise KeyError" in exc.__cause__.tb
    with pytest.raises(KeyError):
        pool.apply(fail_on, (3,))
    with pytest.raises(KeyError):
        list(pool.imap(fail_on, range(10), chunksize=2))
    it = pool.imap(fail_on, range(6), chunksize=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(it)
    assert list(it) == [4, 5]


def test_iterable_exception_is_raised_as_is(pool):
    with pytest.raises(OverflowError) as info:
        pool.map(sqr, gen(10, fail_at=3))
    assert info.value.__cause__ is None
    it = pool.imap(sqr, gen(20, fail_at=7), 2)
    assert [next(it) for _ in range(6)] == [x * x for x in range(6)]
    with pytest.raises(OverflowError):
        next(it)


def test_unpicklable_argument_raises_the_pickling_error(pool):
    with pytest.raises(RuntimeError, match="cannot pickle"):
        pool.map(sqr, [Unpicklable()] * 4)
    assert pool.map(sqr, [2]) == [4]        # the pool keeps working


# -- calls queued behind the window leave in batches --------------------------------------------

def some_fail(x):
    if x % 101 == 7:
        raise KeyError(f"item {x}")
    return -x


def odd_outcome(x):
    if x == 5:
        return threading.Lock()            # neither pickle nor cloudpickle can send a lock
    if x == 6:
        raise PickyError(x, "six")
    return x


class PickyError(Exception):
    def __init__(self, a, b):               # unpickling calls PickyError(message): it fails there
        super().__init__(f"{a} and {b}")


def fill_window(pool) -> list:
    """Calls that keep the pool's window full for a while, so what follows queues and batches."""
    return [pool.apply_async(sqr, (1, 0.3)) for _ in range(pool._submitter.window)]


def test_queued_apply_calls_leave_in_batches_each_with_its_own_outcome(pool):
    n = 3000
    launched = pool._submitter.launched
    rs = [pool.apply_async(some_fail, (i,)) for i in range(n)]
    for i, r in enumerate(rs):
        if i % 101 == 7:
            with pytest.raises(KeyError) as info:
                r.get(timeout=30)
            assert type(info.value) is KeyError and info.value.args == (f"item {i}",)
            assert isinstance(info.value.__cause__, multiprocessing.pool.RemoteTraceback)
            assert "raise KeyError" in info.value.__cause__.tb and "in some_fail" in info.value.__cause__.tb
            assert not r.successful()
        else:
            assert r.get(timeout=30) == -i and r.successful()
    tasks = pool._submitter.launched - launched
    assert tasks < n / 10, f"{n} queued calls took {tasks} tasks: they were not batched"


def test_a_batched_call_whose_value_or_error_cannot_be_pickled_fails_alone(pool):
    busy = fill_window(pool)
    rs = [pool.apply_async(odd_outcome, (i,)) for i in range(10)]
    with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="lock"):
        rs[5].get(timeout=30)
    with pytest.raises(Exception, match="PickyError: 6 and six"):
        rs[6].get(timeout=30)
    assert [r.get(timeout=30) for i, r in enumerate(rs) if i not in (5, 6)] == [0, 1, 2, 3, 4, 7, 8, 9]
    assert [r.get(timeout=30) for r in busy] == [1] * len(busy)
    assert rs[0]._value == 0 and rs[0].successful()


def test_a_batched_call_with_an_unpicklable_argument_fails_alone_with_the_pickling_error(pool):
    busy = fill_window(pool)
    rs = [pool.apply_async(sqr, (Unpicklable() if i == 3 else i,)) for i in range(8)]
    with pytest.raises(RuntimeError, match="cannot pickle"):
        rs[3].get(timeout=30)
    assert [r.get(timeout=30) for i, r in enumerate(rs) if i != 3] == [0, 1, 4, 16, 25, 36, 49]
    assert [r.get(timeout=30) for r in busy] == [1] * len(busy)


def test_a_batch_runs_the_initializer_once_and_a_failing_one_fails_each_call(tmp_path):
    log = tmp_path / "init.log"
    with Pool(initializer=record_init, initargs=(str(log), "x")) as p:
        busy = fill_window(p)
        assert [r.get(timeout=30) for r in [p.apply_async(sqr, (i,)) for i in range(50)]] == \
            [i * i for i in range(50)]
        assert [r.get(timeout=30) for r in busy] == [1] * len(busy)
    pids = log.read_text().split()[1::2]
    assert len(pids) == len(set(pids)) <= 2, pids
    with Pool(initializer=fail_on, initargs=(3,)) as p:
        busy = fill_window(p)
        rs = [p.apply_async(sqr, (i,)) for i in range(20)]
        for r in busy + rs:
            with pytest.raises(KeyError, match="item 3"):
                r.get(timeout=30)


def test_closed_pool_raises_value_error():
    p = Pool(2)
    p.close()
    with pytest.raises(ValueError):
        p.map(sqr, [1])
    with pytest.raises(ValueError):
        p.apply_async(sqr, (1,))
    with pytest.raises(ValueError):
        p.imap(sqr, [1])
    with pytest.raises(ValueError):
        with p:
            pass
    p.join()


def test_join_requires_close():
    p = Pool(2)
    try:
        with pytest.raises(ValueError):
            p.join()
    finally:
        p.close()
        p.join()


def test_context_manager_terminates():
    with Pool(2) as p:
        assert p.map(sqr, range(4)) == [0, 1, 4, 9]
    assert p._state == "TERMINATE"
    with pytest.raises(ValueError):
        p.map_async(sqr, [1])
    p.join()


def test_bad_arguments():
    for bad in (0, -1):
        with pytest.raises(ValueError):
            Pool(bad)
    for bad in (0, -1, 0.5, "12"):
        with pytest.raises(ValueError):
            Pool(2, maxtasksperchild=bad)
    with pytest.raises(TypeError):
        Pool(2, initializer=42)
    with Pool(2, maxtasksperchild=5) as p:       # accepted
        assert p.map(sqr, range(3)) == [0, 1, 4]
        with pytest.raises(ValueError):
            p.imap(sqr, [1], chunksize=0)


def test_pool_cannot_be_pickled(pool):
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)


def test_unclosed_pool_warns():
    p = Pool(1)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del p
        gc.collect()


# -- lifecycle and balancing -----------------------------------------------------------------------

def test_close_then_join_waits_for_all_work():
    p = Pool()
    r = p.map_async(sqr, [1, 2, 3, 4], chunksize=1)
    p.close()
    p.join()
    assert r.ready() and r.get() == [1, 4, 9, 16]


def mark_and_sleep(directory, seconds):
    open(os.path.join(directory, f"{os.getpid()}-{time.monotonic_ns()}"), "w").close()
    time.sleep(seconds)
    return seconds


def test_terminate_cancels_running_and_queued_work(tmp_path):
    p = Pool(3)
    r = p.starmap_async(mark_and_sleep, [(str(tmp_path), 60)] * 1000, chunksize=1)
    deadline = time.monotonic() + 30
    while len(os.listdir(tmp_path)) < 2:        # both engines are running an item now
        assert time.monotonic() < deadline, "the pool's items did not start"
        time.sleep(0.01)
    p.terminate()
    p.join()
    with pytest.raises(jpar.TaskCancelledError):
        r.get(timeout=10)                       # long before a 60 s item could end
    with Pool() as p2:                          # the engines are free again
        assert p2.map(sqr, range(4)) == [0, 1, 4, 9]
    assert len(os.listdir(tmp_path)) < 1000     # the queued items never ran


def test_processes_caps_concurrency():
    with Pool(1) as p:
        out = p.starmap(spans, [(i, 0.2) for i in range(4)], chunksize=1)
    out.sort(key=lambda s: s[2])
    for a, b in zip(out, out[1:]):
        assert b[2] >= a[3] - 0.01, "two tasks of a Pool(1) overlapped"


def test_all_engines_are_used(pool):
    pids = {r[1] for r in pool.starmap(spans, [(i, 0.1) for i in range(8)], chunksize=1)}
    assert len(pids) == 2


def test_dynamic_balancing_no_straggler_behind_a_slow_item(pool):
    # one slow item and many quick ones: with round-robin chunks the quick items dealt to the
    # slow item's worker would wait behind it; here the other engine takes them.
    waits = [2.0] + [0.05] * 30
    out = pool.starmap(spans, list(enumerate(waits)), chunksize=1)
    slow, quick = out[0], out[1:]
    behind = [q for q in quick if q[1] == slow[1] and q[2] >= slow[3]]
    assert behind == [], f"{len(behind)} quick items waited behind the slow one on its engine"
    assert max(q[3] for q in quick) <= slow[3]   # the other engine finished them all meanwhile


def test_initializer_runs_once_per_engine_per_pool(tmp_path):
    log = tmp_path / "init.log"
    for tag in ("a", "b"):
        with Pool(initializer=record_init, initargs=(str(log), tag)) as p:
            pids = set(p.map(pid, range(200), chunksize=1))
            pids |= set(r[1] for r in p.starmap(spans, [(i, 0.05) for i in range(10)], chunksize=1))
    lines = log.read_text().split()
    entries = list(zip(lines[::2], lines[1::2]))
    assert len(entries) == len(set(entries)), f"an initializer ran twice in one engine: {entries}"
    for tag in ("a", "b"):
        assert {p for t, p in entries if t == tag}, f"initializer of pool {tag} never ran"
    assert len({p for _, p in entries}) == 2


def test_pool_starts_a_cluster_when_none_runs(tmp_path):
    script = tmp_path / "port.py"
    script.write_text(textwrap.dedent("""
        import time
        from jpar.multiprocessing import Pool

        def inc(x):
            return x + 1

        if __name__ == "__main__":
            t0 = time.perf_counter()
            with Pool() as p:
                print(sum(p.map(inc, range(1000))), round(time.perf_counter() - t0, 3))
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50,
                         cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == str(sum(range(1, 1001)))


def test_pi_example_runs(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "examples" / "pi_pool.py"), "--batches", "8",
                          "--batch-size", "2000", "--no-serial"],
                         capture_output=True, text=True, timeout=50, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "pi ~= 3." in out.stdout
