"""The same-host fast path of jpar.multiprocessing's queues (jpar.multiprocessing.fastqueue): items in
shared memory with no server call per put or get, one authority with processes that go through the
server, the order kept past a full ring, and a queue that keeps working when a process dies holding
its lock."""

import os
import queue
import time

import pytest

import jpar.multiprocessing as mp
from jpar.multiprocessing import fastqueue
from jpar.multiprocessing import queues as jq
from tests.test_mp_fast_sync import _as_if_on_another_host, _CallCounter

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("cluster"),
              pytest.mark.skipif(not fastqueue.available(), reason="no shared memory futexes on this platform")]


# ------------------------------------------------------------------ Process targets
def hold_queue_lock(q, out):
    q._ring().acquire()             # what a process killed in the middle of a put or get holds
    out.put(os.getpid())
    time.sleep(300)


def take_one_when_told(q, go, got):
    go.wait(60)
    got.put(q.get(timeout=60))


def echo_all(q_in, q_out, n):
    for _ in range(n):
        q_out.put(q_in.get(timeout=60))


# ------------------------------------------------------------------ tests
def test_queues_make_no_server_call_on_this_host(monkeypatch):
    q, bounded, jq_, sq = mp.Queue(), mp.Queue(3), mp.JoinableQueue(), mp.SimpleQueue()
    for obj in (q, bounded, jq_, sq):     # the first use maps the ring (a few server calls)
        obj.put(0)
        obj.get()
    jq_.task_done()
    counter = _CallCounter(monkeypatch)
    for i in range(100):
        q.put(i)
        jq_.put(str(i))
        sq.put((i,))
        if i < 3:
            bounded.put({"i": i})
    assert q.qsize() == 100 and not q.empty() and not q.full()
    assert [q.get() for _ in range(100)] == list(range(100))
    assert bounded.full() and bounded.qsize() == 3
    with pytest.raises(queue.Full):                  # waiting a little: still no call
        bounded.put("x", timeout=0.05)
    assert [bounded.get() for _ in range(3)] == [{"i": i} for i in range(3)]
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    for i in range(100):
        assert jq_.get() == str(i)
        jq_.task_done()
    jq_.join()
    assert [sq.get() for _ in range(100)] == [(i,) for i in range(100)] and sq.empty()
    assert counter.calls == []


def test_bounded_queue_holds_maxsize():
    q = mp.Queue(2)
    q.put(1), q.put(2)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    assert q.get() == 1
    q.put(3)
    assert [q.get(), q.get()] == [2, 3]


def test_one_authority_with_a_process_of_another_host():
    q = mp.Queue(2)
    remote = _as_if_on_another_host(q)
    assert q._ring() is not None and remote._ring() is None    # it goes through the server ...
    q.put("here")
    assert remote.qsize() == 1 and remote.get(timeout=5) == "here"   # ... which sees the same ring
    remote.put("there")
    remote.put("again")
    assert q.full() and remote.full()
    with pytest.raises(queue.Full):
        remote.put("no room", timeout=0.2)
    assert [q.get(timeout=5), q.get(timeout=5)] == ["there", "again"]
    with pytest.raises(queue.Empty):
        remote.get(timeout=0.2)
    jq_ = mp.JoinableQueue()
    rjq = _as_if_on_another_host(jq_)
    rjq.put(1)
    assert jq_.get(timeout=5) == 1
    rjq.task_done()
    jq_.join()                                   # the remote task_done counted
    with pytest.raises(ValueError, match="too many times"):
        jq_.task_done()


def test_items_past_the_ring_keep_their_order_and_no_put_blocks():
    """More than the ring holds, put before anything is got (the stdlib's unbounded queue never
    blocks a put): the rest waits in the server's overflow, and everything comes out in order,
    including puts made while the overflow is not empty."""
    q = mp.Queue()
    big = 600_000                                   # under LARGE_ITEM_BYTES: pickled into the ring
    n = fastqueue.RING_BYTES // big + 6
    for i in range(n):
        q.put((i, bytes([i % 256]) * big))
    ring = q._ring()
    assert ring.w[fastqueue.W_OVER] > 0             # some are in the overflow
    q.put("small after")
    assert q.qsize() == n + 1
    for i in range(n):
        k, payload = q.get(timeout=30)
        assert k == i and len(payload) == big and payload[:1] == bytes([i % 256])
    assert q.get(timeout=30) == "small after"
    assert q.qsize() == 0 and ring.w[fastqueue.W_OVER] == 0


def test_many_small_items_past_the_ring_through_another_process():
    q_in, q_out = mp.Queue(), mp.Queue()
    n = fastqueue.RING_BYTES // 8_000 + 500
    for i in range(n):                              # ~12 MB of 8 kB strings before the consumer starts
        q_in.put(f"{i:08d}" + "x" * 7_992)
    p = mp.Process(target=echo_all, args=(q_in, q_out, n))
    p.start()
    got = [q_out.get(timeout=60)[:8] for _ in range(n)]
    p.join(60)
    assert p.exitcode == 0
    assert got == [f"{i:08d}" for i in range(n)]


def test_a_put_waiting_for_room_is_woken_by_a_get_in_another_process():
    q, go, got = mp.Queue(1), mp.Event(), mp.Queue()
    q.put("first")
    p = mp.Process(target=take_one_when_told, args=(q, go, got))
    p.start()
    with pytest.raises(queue.Full):
        q.put("second", timeout=0.2)
    go.set()
    q.put("second", timeout=60)                    # the child's get made room
    assert got.get(timeout=60) == "first" and q.get(timeout=5) == "second"
    p.join(60)


def test_a_process_killed_holding_the_queue_lock_does_not_stop_the_queue():
    q, out = mp.Queue(), mp.Queue()
    q.put("before")
    p = mp.Process(target=hold_queue_lock, args=(q, out))
    p.start()
    pid = out.get(timeout=60)
    os.kill(pid, 9)                                # dies holding the queue's lock
    q.put("after", timeout=30)                     # waits a slice, the server finds the holder dead
    assert [q.get(timeout=30), q.get(timeout=30)] == ["before", "after"]
    p.join(30)


def test_large_items_still_go_through_the_object_store():
    np = pytest.importorskip("numpy")
    q = mp.Queue()
    a = np.arange(1_000_000, dtype=np.float64)     # 8 MB: a ref in the ring, the array in the store
    q.put(a)
    assert q._ring().qsize() == 1 and q._ring().w[fastqueue.W_TAIL] < 1000
    assert (q.get(timeout=30) == a).all()


def test_a_queue_made_without_the_fast_path_still_works():
    q = jq.Queue.__new__(jq.Queue)
    q._maxsize, q._closed = 0, False
    q._create("queue", None, maxsize=0, joinable=False, fast=False)
    assert q._ring() is None
    q.put(1)
    assert q.get(timeout=5) == 1


def call_first(q_in, q_out):
    q_out.put(q_in.get(timeout=60)(7))


def test_plain_items_skip_cloudpickle_and_notebook_functions_still_travel_by_value():
    import sys

    assert jq._plain_dumps({"a": [1, 2.5, "x"]}, None) is not None      # the C pickler's bytes
    assert jq._plain_dumps(lambda x: x, None) is None                    # cloudpickle's job
    main = sys.modules["__main__"]
    exec(compile("def from_main(x):\n    return x * 3\n", "<notebook cell>", "exec"), main.__dict__)
    try:
        assert main.from_main.__module__ == "__main__"
        assert jq._plain_dumps(main.from_main, None) is None   # by reference would not load elsewhere
        q_in, q_out = mp.Queue(), mp.Queue()
        q_in.put(main.from_main)
        p = mp.Process(target=call_first, args=(q_in, q_out))
        p.start()
        assert q_out.get(timeout=60) == 21                    # shipped by value: runs in the child
        p.join(60)
    finally:
        del main.from_main


def test_a_get_with_a_timeout_ends_while_an_overflowed_put_is_on_its_way():
    """The ring is empty and its count says an item is in the overflow that the server does not have
    yet (a put on its way there): get(timeout) keeps asking, and raises Empty when its time is up.
    Before, a get on that path never gave up: its deadline was only set on the other path."""
    q = mp.Queue()
    q.put("x")
    assert q.get() == "x"
    ring = q._ring()
    ring.acquire()
    ring.w[fastqueue.W_OVER] += 1          # as a put on its way to the overflow
    ring.release()
    try:
        t = time.monotonic()
        with pytest.raises(queue.Empty):
            q.get(timeout=0.5)
        assert time.monotonic() - t < 5
    finally:
        ring.acquire()
        ring.w[fastqueue.W_OVER] -= 1
        ring.release()
    q.put("y")
    assert q.get(timeout=5) == "y"
