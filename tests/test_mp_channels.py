"""Queues and Pipes of jpar.multiprocessing: the object-store storage of large items goes once they
are taken, and connection.wait() waits on several connections without polling."""

import time

import numpy as np
import pytest

import jpar
import jpar.multiprocessing as mp
from jpar import hooks
from jpar.multiprocessing import connection as jconn
from jpar.multiprocessing import queues as jq
from jpar.multiprocessing import server as jsrv
from jpar.notebook.store_view import normalize_store

from .test_mp_fast_sync import _CallCounter   # counts the state server calls a test makes

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("cluster")]

ITEM = 1 << 18            # float64s: 2 MiB, past LARGE_ITEM_BYTES, so through the object store
N = 6


# ------------------------------------------------------------------ Process targets and tasks
def get_all(q, n, done):
    sums = [float(q.get(timeout=60).sum()) for _ in range(n)]
    done.put(sums)


def recv_all(conn, n, done):
    done.put([float(conn.recv().sum()) for _ in range(n)])


def send_later(conn, go, sent, delay):
    """Send once ``go`` is set and ``delay`` seconds passed (so the parent is inside wait())."""
    go.wait(60)
    time.sleep(delay)
    sent.put(time.monotonic())
    conn.send("hello")


def close_later(conn, go, delay):
    go.wait(60)
    time.sleep(delay)
    conn.close()


@jpar.remote
def task_get_all(q, n):
    return [float(q.get(timeout=60).sum()) for _ in range(n)]


# ------------------------------------------------------------------ helpers
def store_used() -> int:
    """Object-store bytes in use on every host (the figures test_free.py reads)."""
    store = normalize_store(hooks.store_statistics(timeout=10))
    return sum(h["used"] or 0 for h in (store or {}).get("hosts", ()))


def back_to(base: int, timeout: float = 20.0) -> int:
    """The store's used bytes once they are back to ``base``, or what they are after ``timeout``
    (a segment still mapped by a reader is recycled by the head's next sweep: no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        hooks.release_now()
        used = store_used()
        if used <= base or time.monotonic() > deadline:
            return used
        time.sleep(0.1)


def big(i: int) -> np.ndarray:
    return np.full(ITEM, float(i))


# ------------------------------------------------------------------ large items leave the store
def test_large_items_got_here_leave_the_store():
    base = store_used()
    q = jq.Queue()
    for i in range(N):
        q.put(big(i))
    assert store_used() >= base + N * ITEM * 8      # they are in the store while queued
    assert [float(q.get(timeout=30)[0]) for _ in range(N)] == [float(i) for i in range(N)]
    assert back_to(base) <= base


def test_large_items_got_by_a_task_or_a_process_leave_the_store():
    base = store_used()
    q = jq.Queue()
    for i in range(N):
        q.put(big(i))
    assert jpar.get(task_get_all.remote(q, N), timeout=60) == [float(i * ITEM) for i in range(N)]
    assert back_to(base) <= base
    done = mp.Queue()
    p = mp.Process(target=get_all, args=(q, N, done))
    p.start()
    for i in range(N):
        q.put(big(i))
    assert done.get(timeout=60) == [float(i * ITEM) for i in range(N)]
    p.join(60)
    assert p.exitcode == 0
    assert back_to(base) <= base


def test_large_messages_received_on_a_pipe_leave_the_store():
    base = store_used()
    a, b = jconn.Pipe()
    for i in range(N):
        a.send(big(i))
    assert [float(b.recv()[0]) for _ in range(N)] == [float(i) for i in range(N)]
    for i in range(N):
        a.send(big(i))
    assert [len(b.recv_bytes()) > ITEM for _ in range(N)] == [True] * N
    assert back_to(base) <= base
    done = mp.Queue()
    p = mp.Process(target=recv_all, args=(b, N, done))
    p.start()
    for i in range(N):
        a.send(big(i))
    assert done.get(timeout=60) == [float(i * ITEM) for i in range(N)]
    p.join(60)
    assert back_to(base) <= base


def test_a_value_still_held_by_its_getter_is_not_overwritten():
    """Freed on get, yet the getter's array (a view of the store's memory on this host) stays intact
    while later items reuse the store's segments."""
    q = jq.Queue()
    for i in range(N):
        q.put(big(i + 1))
    held = [q.get(timeout=30) for _ in range(N)]
    for i in range(2 * N):
        q.put(big(100 + i))
        q.get(timeout=30)
    assert [(float(a.min()), float(a.max())) for a in held] == [(float(i + 1), float(i + 1)) for i in range(N)]


# ------------------------------------------------------------------ connection.wait
def test_wait_returns_the_ready_connections_at_once():
    pipes = [jconn.Pipe() for _ in range(3)]
    pipes[1][0].send("x")
    pipes[2][0].send("y")
    t = time.monotonic()
    ready = jconn.wait([b for _, b in pipes], timeout=10)
    assert time.monotonic() - t < 2
    assert ready == [pipes[1][1], pipes[2][1]]
    assert jconn.wait([b for _, b in pipes], timeout=0) == [pipes[1][1], pipes[2][1]]


def test_wait_times_out_on_time_with_nothing_ready():
    pipes = [jconn.Pipe() for _ in range(3)]
    for timeout in (0.0, 0.4):
        t = time.monotonic()
        assert jconn.wait([b for _, b in pipes], timeout=timeout) == []
        took = time.monotonic() - t
        assert timeout <= took < timeout + 1.0


def test_wait_wakes_when_another_process_sends_and_makes_one_server_call(monkeypatch):
    pipes = [jconn.Pipe() for _ in range(4)]
    go, sent = mp.Event(), mp.Queue()
    p = mp.Process(target=send_later, args=(pipes[2][0], go, sent, 0.5))
    p.start()
    go.set()
    counter = _CallCounter(monkeypatch)
    t = time.monotonic()
    ready = jconn.wait([b for _, b in pipes], timeout=60)
    woke = time.monotonic()
    assert counter.calls == ["wait_readable"]      # one call that blocks: no polling
    monkeypatch.undo()
    assert ready == [pipes[2][1]]
    assert woke - t >= 0.3                           # it did wait for the send
    assert woke - sent.get(timeout=30) < 0.5         # and woke as soon as it came
    assert pipes[2][1].recv() == "hello"
    p.join(60)
    assert p.exitcode == 0


def test_wait_wakes_on_eof_from_another_process():
    r1, w1 = jconn.Pipe(duplex=False)
    r2, w2 = jconn.Pipe(duplex=False)
    go = mp.Event()
    p = mp.Process(target=close_later, args=(w2, go, 0.3))
    p.start()
    w2.close()                                       # the child's copy is the last open one
    go.set()
    assert jconn.wait([r1, r2], timeout=60) == [r2]
    with pytest.raises(EOFError):
        r2.recv()
    p.join(60)


def test_wait_from_another_host_goes_through_the_actor():
    """A process on another host reaches the server by actor calls: the same one wait there."""
    import pickle

    pipes = [jconn.Pipe() for _ in range(2)]
    client = jsrv.Client(*pipes[0][1]._in._client.locator())
    client._socket_ok = False
    remote = []
    for _, b in pipes:
        channel = pickle.loads(pickle.dumps(b._in))
        channel._client = client
        remote.append(jconn.Connection(channel, None))
    t = time.monotonic()
    assert jconn.wait(remote, timeout=0.3) == [] and time.monotonic() - t >= 0.3
    pipes[1][0].send("x")
    assert jconn.wait(remote, timeout=30) == [remote[1]]
    assert remote[1].recv() == "x"


def test_wait_checks_its_arguments():
    a, b = jconn.Pipe(duplex=False)
    with pytest.raises(TypeError):
        jconn.wait([a, 3], timeout=0)
    with pytest.raises(OSError):
        jconn.wait([b], timeout=0)                   # write-only
    t = time.monotonic()
    assert jconn.wait([], timeout=0.1) == [] and time.monotonic() - t >= 0.1


# ------------------------------------------------------------------ Listener and Client
def echo_client(address, authkey, n):
    """A Process that connects to ``address`` and sends n messages, then reads the listener's reply."""
    with jconn.Client(address, authkey=authkey) as conn:
        for i in range(n):
            conn.send(("hello", i))
        return_value = conn.recv()
    assert return_value == ("thanks", n)


def test_listener_and_client_meet_at_an_address_from_another_process():
    """Code written for the stdlib's socket pair runs unchanged: a Listener at ('localhost', port)
    accepts a Process's Client, both directions work, last_accepted names the client process, a
    second listener at the same address is refused as bind() would, and once closed the address is
    free again and Clients are refused."""
    address = ("localhost", 6000)
    with jconn.Listener(address, authkey=b"secret") as listener:
        assert listener.address == address
        with pytest.raises(OSError, match="already in use"):
            jconn.Listener(address)
        p = mp.Process(target=echo_client, args=(address, b"secret", 3))
        p.start()
        conn = listener.accept()
        assert [conn.recv() for _ in range(3)] == [("hello", 0), ("hello", 1), ("hello", 2)]
        conn.send(("thanks", 3))
        p.join(60)
        assert p.exitcode == 0
        assert listener.last_accepted.rsplit(":", 1)[1] == str(p.pid), (listener.last_accepted, p.pid)
    with pytest.raises(ConnectionRefusedError, match="No jpar Listener"):
        jconn.Client(address, authkey=b"secret")
    with jconn.Listener(address) as again:               # the address is free again
        c = jconn.Client(again.address)
        s = again.accept()
        c.send_bytes(b"x" * 10)
        assert s.recv_bytes() == b"x" * 10


def test_a_client_with_another_authkey_is_refused_before_anything_is_sent():
    with jconn.Listener(authkey=b"right") as listener:
        assert str(listener.address).startswith("jpar-listener-")      # a fresh name when none is given
        for key in (b"wrong", None):
            with pytest.raises(mp.AuthenticationError):
                jconn.Client(listener.address, authkey=key)
        ok = jconn.Client(listener.address, authkey=b"right")
        assert listener.accept() is not None and ok.writable


def test_closing_a_listener_wakes_an_accept_waiting_in_another_thread():
    import threading

    listener = jconn.Listener()
    raised = []

    def accept():
        try:
            listener.accept()
        except OSError as exc:
            raised.append(exc)

    t = threading.Thread(target=accept)
    t.start()
    listener.close()          # before or after the accept reached the server: it raises either way
    t.join(30)
    assert not t.is_alive() and raised and "closed" in str(raised[0]), raised
    with pytest.raises(OSError, match="closed"):
        listener.accept()
