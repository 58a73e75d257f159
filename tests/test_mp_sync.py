"""Queues, pipes, locks, events, barriers, shared values and managers of jpar.multiprocessing on a
real two-engine cluster: semantics, use from tasks and actors, timeouts, and the death of a process
that holds a lock or feeds a queue."""

import multiprocessing
import os
import pickle
import queue
import threading
import time

import numpy as np
import psutil
import pytest

import jpar
from jpar.multiprocessing import connection as jconn
from jpar.multiprocessing import managers as jman
from jpar.multiprocessing import queues as jq
from jpar.multiprocessing import server as jsrv
from jpar.multiprocessing import sharedctypes as jsc
from jpar.multiprocessing import synchronize as jsync
from jpar.multiprocessing.stdlib_check import StdlibObjectError, check_not_stdlib, explain

pytestmark = [pytest.mark.timeout(90), pytest.mark.usefixtures("cluster")]


# Task bodies: module-level, so engines import them from this file.

@jpar.remote
def produce(q, items):
    for x in items:
        q.put(x)
    return len(items)


@jpar.remote
def consume(q, n, timeout=20):
    return [q.get(timeout=timeout) for _ in range(n)]


@jpar.remote(max_retries=0)
def put_then_die(q, items):
    for x in items:
        q.put(x)
    q.qsize()   # a round trip: every put above reached the server before the engine dies
    os._exit(1)


@jpar.remote(max_retries=0)
def get_forever(q, pids):
    pids.put(os.getpid())
    return q.get()


@jpar.remote(max_retries=0)
def lock_then_die(lock, held):
    lock.acquire()
    held.set()
    os._exit(1)


@jpar.remote
def try_acquire(lock, timeout):
    t = time.monotonic()
    got = lock.acquire(timeout=timeout)
    if got:
        lock.release()
    return got, time.monotonic() - t


@jpar.remote
def add_under_lock(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    return n


@jpar.remote
def wait_event_then_set(ev_in, ev_out, timeout):
    ok = ev_in.wait(timeout)
    ev_out.set()
    return ok


@jpar.remote
def barrier_wait(b, timeout=20):
    return b.wait(timeout)


@jpar.remote
def pipe_echo(conn, n):
    for _ in range(n):
        conn.send(conn.recv() * 2)
    conn.close()
    return "done"


@jpar.remote
def manager_work(d, lst, ns, lock, key):
    with lock:
        d[key] = d.get(key, 0) + 1
        lst.append(key)
        ns.count = ns.count + 1
    return key


@jpar.remote
class Waiter:
    def wait_notified(self, cond, ready, timeout):
        with cond:
            ready.set()
            return cond.wait(timeout)


@jpar.remote
def array_sum(q):
    a = q.get(timeout=20)
    return float(a.sum()), a.shape


# --------------------------------------------------------------------------------- Queue
def test_queue_fifo_maxsize_and_timeouts():
    q = jq.Queue(2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put_nowait("two")
    assert q.full() and q.qsize() == 2
    t = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.3)
    assert 0.25 < time.monotonic() - t < 5
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert [q.get(), q.get_nowait()] == [1, "two"]
    t = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    assert 0.25 < time.monotonic() - t < 5
    with pytest.raises(queue.Empty):
        q.get(block=False)
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(1)
    with pytest.raises(ValueError, match="is closed"):
        q.get()


def test_queue_between_tasks_and_driver():
    q = jq.Queue()
    got = consume.remote(q, 5)        # waits on an engine until the items come
    assert jpar.get(produce.remote(q, list(range(5))), timeout=30) == 5
    assert jpar.get(got, timeout=30) == [0, 1, 2, 3, 4]
    # a handle unpickled elsewhere is the same queue
    assert pickle.loads(pickle.dumps(q)) == q


def test_any_picklable_item_and_lambdas():
    q = jq.Queue()
    q.put(lambda x: x + 1)
    q.put({"a": [1, 2], "b": (None, 3.5)})
    assert q.get()(1) == 2
    assert q.get() == {"a": [1, 2], "b": (None, 3.5)}


def test_unpicklable_item_raises_at_put_naming_it():
    q = jq.Queue()
    with pytest.raises(jpar.SerializationError, match="_thread.lock"):
        q.put(threading.Lock())
    assert q.qsize() == 0


def test_joinable_queue_task_done_and_join():
    q = jq.JoinableQueue()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put(1)
    q.put(2)
    joined = threading.Event()
    threading.Thread(target=lambda: (q.join(), joined.set()), daemon=True).start()
    q.get(), q.task_done()
    assert not joined.wait(0.3)
    q.get(), q.task_done()
    assert joined.wait(10)


def test_simple_queue():
    q = jq.SimpleQueue()
    assert q.empty()
    q.put("x")
    assert not q.empty() and q.get() == "x"


def test_large_numpy_goes_through_the_object_store():
    a = np.arange(2_000_000, dtype=np.float64)          # 16 MB
    item = jq.dumps_item(a)
    assert type(item) is tuple and item[0] == "ref"      # only a ref goes to the server
    assert len(item[1]) < 1000
    small = jq.dumps_item(np.arange(10))
    assert type(small) is bytes
    q = jq.Queue()
    q.put(a)
    total, shape = jpar.get(array_sum.remote(q), timeout=30)
    assert total == float(a.sum()) and shape == a.shape


def test_queued_items_survive_the_death_of_their_producer():
    q = jq.Queue()
    for _ in range(3):   # an engine killed by an earlier test may still take (and fail) the first try
        with pytest.raises(jpar.EngineCrashedError):
            jpar.get(put_then_die.remote(q, ["a", "b", "c"]), timeout=60)
        if not q.empty():
            break
    assert [q.get(timeout=10) for _ in range(3)] == ["a", "b", "c"]
    t = time.monotonic()   # a get whose producer died still honours its timeout
    with pytest.raises(queue.Empty):
        q.get(timeout=0.5)
    assert 0.45 < time.monotonic() - t < 5


def test_a_get_whose_caller_died_does_not_take_the_item():
    q, pids = jq.Queue(), jq.Queue()
    r = get_forever.remote(q, pids)
    pid = pids.get(timeout=20)
    time.sleep(0.3)   # nothing signals "the server now waits for this get": give the request time to arrive
    jpar.cancel(r, force=True)           # kills the engine under the waiting get
    with pytest.raises(jpar.JparError):
        jpar.get(r, timeout=30)
    try:                                 # dead, not dying: an item read by a live reader is its own
        psutil.Process(pid).wait(timeout=20)
    except psutil.NoSuchProcess:
        pass
    q.put("item")
    assert q.get(timeout=10) == "item"


# --------------------------------------------------------------------------------- locks
def test_lock_semantics_and_timeout():
    lock = jsync.Lock()
    assert lock.acquire()
    assert lock.acquire(timeout=0.2) is False
    assert lock.acquire(False) is False
    got, waited = jpar.get(try_acquire.remote(lock, 0.3), timeout=30)   # held here: the engine waits, then gives up
    assert got is False and waited >= 0.25
    lock.release()
    got, _ = jpar.get(try_acquire.remote(lock, 5), timeout=30)
    assert got is True
    with pytest.raises(ValueError):
        lock.release()
    with lock:
        assert "owned by this thread" in repr(lock)


def test_rlock_owner_rules():
    r = jsync.RLock()
    assert r.acquire() and r.acquire()
    errors = []
    t = threading.Thread(target=lambda: errors.append(pytest.raises(AssertionError, r.release)))
    t.start(), t.join()
    assert errors                       # another thread may not release it
    r.release()
    r.release()
    with pytest.raises(AssertionError):
        r.release()


def test_lock_of_a_dead_process_is_released_with_a_warning():
    lock, held = jsync.Lock(), jsync.Event()
    for _ in range(3):   # an engine killed by an earlier test may still take (and fail) the first try
        with pytest.raises(jpar.EngineCrashedError):
            jpar.get(lock_then_die.remote(lock, held), timeout=60)
        if held.is_set():
            break
    assert held.is_set(), "the task never got to hold the lock"
    with pytest.warns(jsync.OwnerDiedWarning, match="died"):
        assert lock.acquire(timeout=20)
    lock.release()
    with warnings_as_errors():
        assert lock.acquire(timeout=5)   # only the first acquirer after the death is told
    lock.release()


def test_release_owner_releases_what_a_named_owner_holds():
    sem = jsync.Semaphore(1)
    assert sem.acquire()
    assert sem.get_value() == 0
    jsrv.release_owner(jsrv.owner_id())   # what a Process's end reports
    assert sem.get_value() == 1
    with pytest.warns(jsync.OwnerDiedWarning):
        assert sem.acquire(timeout=5)


def test_semaphores():
    s = jsync.Semaphore(2)
    assert s.acquire() and s.acquire() and not s.acquire(timeout=0.1)
    s.release(), s.release(), s.release()   # an unbounded one may go above its start
    assert s.get_value() == 3
    b = jsync.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        b.release()
    with b:
        assert b.get_value() == 0


def test_event_across_engines():
    a, b = jsync.Event(), jsync.Event()
    assert not a.is_set() and a.wait(0.1) is False
    r = wait_event_then_set.remote(a, b, 20)
    a.set()
    assert b.wait(20) and jpar.get(r, timeout=30) is True
    a.clear()
    assert not a.is_set()


def test_condition_notify_to_an_actor():
    cond, ready = jsync.Condition(), jsync.Event()
    w = Waiter.remote()
    r = w.wait_notified.remote(cond, ready, 20)
    assert ready.wait(20)
    with cond:
        cond.notify()
    assert jpar.get(r, timeout=30) is True
    with cond:
        assert cond.wait(0.2) is False       # nobody notifies: times out, lock held again
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0.1)
    jpar.kill(w)


def test_barrier_with_action_and_timeout():
    hits = jq.Queue()
    b = jsync.Barrier(3, action=lambda: hits.put("action"))
    refs = [barrier_wait.remote(b) for _ in range(2)]
    mine = b.wait(20)
    assert sorted([mine] + jpar.get(refs, timeout=30)) == [0, 1, 2]
    assert hits.get(timeout=5) == "action" and hits.empty()
    lone = jsync.Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        lone.wait(0.2)
    assert lone.broken
    lone.reset()
    assert not lone.broken and lone.parties == 2


# --------------------------------------------------------------------------------- shared values
def test_value_increments_from_two_engines():
    v = jsc.Value("i", 0)
    refs = [add_under_lock.remote(v, 50) for _ in range(2)]
    jpar.get(refs, timeout=60)
    assert v.value == 100
    with pytest.raises(TypeError):
        v.value = 1.5                      # ctypes' own conversion rules
    raw = jsc.RawValue("d", 2.5)
    assert raw.value == 2.5 and not hasattr(raw, "get_lock")
    assert jsc.Value("i", 1, lock=False).value == 1


def test_array_indexing_slicing_and_locks():
    a = jsc.Array("i", range(5))
    assert len(a) == 5 and a[:] == [0, 1, 2, 3, 4] and a[-1] == 4
    a[1:3] = [10, 20]
    assert a[:] == [0, 10, 20, 3, 4] and list(a) == a[:]
    lock = jsync.Lock()
    b = jsc.Array("d", 3, lock=lock)
    assert b.get_lock() is lock and b[:] == [0.0, 0.0, 0.0]
    c = jsc.Array("c", b"hello")
    assert c.value == b"hello" and c.raw == b"hello"
    with pytest.raises(AttributeError):
        jsc.Array("i", 3, lock=object())


# --------------------------------------------------------------------------------- Pipe
def test_pipe_to_a_task_and_eof():
    a, b = jconn.Pipe()
    r = pipe_echo.remote(b, 3)
    b.close()                            # the task holds its own copy: this closes only ours
    for i in range(3):
        a.send(i)
        assert a.poll(20)
        assert a.recv() == i * 2
    assert jpar.get(r, timeout=30) == "done"
    with pytest.raises(EOFError):       # the task closed its end
        a.recv()


def test_pipe_eof_only_when_every_copy_of_the_end_is_closed():
    a, b = jconn.Pipe()
    b2 = pickle.loads(pickle.dumps(b))   # another copy of the end, as a child process holds one
    b.close()                            # the parent closing its copy (the usual idiom) is not EOF
    assert a.poll(0.2) is False
    b2.send("x")
    assert a.recv() == "x"
    b2.close()
    with pytest.raises(EOFError):
        a.recv()


def test_pipe_bytes_and_directions():
    r, w = jconn.Pipe(duplex=False)
    assert r.readable and not r.writable and w.writable and not w.readable
    with pytest.raises(OSError):
        r.send(1)
    w.send_bytes(b"abcdef", 1, 3)
    assert r.recv_bytes() == b"bcd"
    w.send_bytes(b"0123456789")
    buf = bytearray(4)
    with pytest.raises(multiprocessing.BufferTooShort):
        r.recv_bytes_into(buf)
    w.send_bytes(b"xy")
    assert r.recv_bytes_into(buf, 1) == 2 and buf == bytearray(b"\0xy\0")
    assert r.poll(0) is False
    w.close()
    assert w.closed and r.poll(0) is True
    with pytest.raises(EOFError):
        r.recv()


# --------------------------------------------------------------------------------- Manager
def test_manager_containers_from_tasks():
    with jman.Manager() as m:
        d, lst, ns, lock = m.dict(), m.list(), m.Namespace(count=0), m.Lock()
        jpar.get([manager_work.remote(d, lst, ns, lock, k) for k in "abab"], timeout=60)
        assert d.copy() == {"a": 2, "b": 2} and sorted(lst) == list("aabb") and ns.count == 4
        assert sorted(d.keys()) == ["a", "b"] and "a" in d and len(d) == 2
        lst += [1]
        assert lst[-1] == 1 and len(lst) == 5
        nested = m.list([m.dict()])
        nested[0]["k"] = "v"                      # a proxy inside a proxy reaches the same dict
        assert nested[0]["k"] == "v"
        v = m.Value("i", 3)
        v.value += 1
        assert v.get() == 4
        assert m._number_of_objects() > 0
    with pytest.raises(ValueError, match="does not exist"):
        d["a"]


# --------------------------------------------------------------------------------- bad use
def test_stdlib_objects_are_refused_naming_the_jpar_twin():
    std = multiprocessing.get_context("spawn")
    for obj, name in [(std.Lock(), "Lock"), (std.Queue(), "Queue"), (std.Event(), "Event"),
                      (std.Value("i", 0), "Value")]:
        with pytest.raises(StdlibObjectError, match=f"jpar.multiprocessing.{name}"):
            check_not_stdlib((1, obj))
        try:
            pickle.dumps(obj)
        except RuntimeError as exc:      # what the stdlib itself says when such an object is pickled
            err = explain(exc, obj)
            assert isinstance(err, StdlibObjectError) and err.__cause__ is exc
        else:
            pytest.fail("the stdlib object pickled")
        if name == "Queue":
            obj.close()
            obj.join_thread()
    check_not_stdlib(jsync.Lock(), [jq.Queue()], {"x": 1})   # jpar's own pass


class warnings_as_errors:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
