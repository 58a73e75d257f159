"""jpar.util: ActorPool and Queue, built on actors, against a real two-engine cluster."""

import queue as stdlib_queue
import time

import psutil
import pytest

import jpar
from jpar.backends.native import current_driver
from jpar.util import ActorPool, Empty, Full, Queue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ctx = jpar.init(num_engines=2)
    yield ctx
    pids = [a["pid"] for a in current_driver().query("status", timeout=10)["actors"]]
    jpar.shutdown()
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
    assert not alive, f"actor processes left behind: {alive}"


@jpar.remote
class Doubler:
    def double(self, x, wait=0.0):
        time.sleep(wait)
        return 2 * x

    def fail(self, x):
        raise ValueError(f"bad {x}")


@jpar.remote
def producer(q, n):
    for i in range(n):
        q.put(i)
    return n


@jpar.remote
def consumer(q, n):
    return [q.get(timeout=20) for _ in range(n)]


# ---------------------------------------------------------------- ActorPool
def test_map_keeps_order():
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(10))) == [2 * i for i in range(10)]


def test_map_unordered_yields_everything_fast_first():
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    waits = [0.6, 0.0, 0.0, 0.0]
    out = list(pool.map_unordered(lambda a, v: a.double.remote(v[0], v[1]), list(zip(range(4), waits))))
    assert sorted(out) == [0, 2, 4, 6]
    assert out[-1] == 0          # the slow one finishes last


def test_submit_get_next_has_next():
    pool = ActorPool([Doubler.remote()])
    for v in (1, 2, 3):
        pool.submit(lambda a, v: a.double.remote(v), v)   # more values than actors: queued in the pool
    assert pool.has_next()
    assert [pool.get_next(), pool.get_next(), pool.get_next()] == [2, 4, 6]
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()


def test_get_next_timeout_and_errors():
    a = Doubler.remote()
    pool = ActorPool([a])
    pool.submit(lambda a, v: a.double.remote(v, 2.0), 1)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.1)
    assert pool.get_next(timeout=10) == 2
    pool.submit(lambda a, v: a.fail.remote(v), 7)
    with pytest.raises(ValueError, match="bad 7"):
        pool.get_next_unordered()
    assert not pool.has_next()


def test_pop_idle_and_push():
    a, b = Doubler.remote(), Doubler.remote()
    pool = ActorPool([a])
    assert pool.has_free()
    popped = pool.pop_idle()
    assert popped == a and pool.pop_idle() is None
    pool.push(b)
    with pytest.raises(ValueError):
        pool.push(b)
    assert list(pool.map(lambda x, v: x.double.remote(v), [5])) == [10]


# ---------------------------------------------------------------- Queue
def test_queue_fifo_and_sizes():
    q = Queue(maxsize=3)
    assert q.empty() and q.qsize() == 0 and not q.full()
    for i in range(3):
        q.put(i)
    assert q.full() and q.qsize() == 3 and len(q) == 3
    assert [q.get(), q.get(), q.get()] == [0, 1, 2]
    q.shutdown()


def test_queue_nowait_and_timeouts_raise_stdlib_compatible_errors():
    q = Queue(maxsize=1)
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(stdlib_queue.Empty):
        q.get(block=False)
    t0 = time.perf_counter()
    with pytest.raises(Empty):
        q.get(timeout=0.3)
    assert time.perf_counter() - t0 >= 0.28     # it waited (about) the whole timeout before giving up
    q.put_nowait("x")
    with pytest.raises(Full):
        q.put_nowait("y")
    with pytest.raises(stdlib_queue.Full):
        q.put("y", timeout=0.2)
    assert q.get_nowait() == "x"
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_queue_batches():
    q = Queue()
    q.put_nowait_batch([1, 2, 3])
    assert q.get_nowait_batch(2) == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait_batch(5)
    assert q.get() == 3


def test_queue_shared_with_tasks():
    q = Queue(maxsize=2)   # small: the producer blocks until the consumer takes
    done = producer.remote(q, 6)
    got = consumer.remote(q, 6)
    assert jpar.get(got, timeout=30) == list(range(6))
    assert jpar.get(done) == 6


def test_queue_blocking_get_waits_for_a_put():
    q = Queue()
    got = consumer.remote(q, 1)
    assert jpar.wait([got], timeout=0.5) == ([], [got])     # blocked: the queue is empty
    q.put("late")
    assert jpar.get(got, timeout=20) == ["late"]


def test_queue_async_api():
    import asyncio

    q = Queue()

    async def main():
        await q.put_async(1)
        return await q.get_async(timeout=5)

    assert asyncio.run(main()) == 1
