"""The same-host fast path of jpar.multiprocessing's locks, semaphores and shared values
(jpar.multiprocessing.fastsync): no server call per operation on the server's host, one authority
with processes that go through the server, owner death still detected, nothing left in /dev/shm."""

import os
import time
import warnings

import pytest

import jpar
import jpar.multiprocessing as mp
from jpar.multiprocessing import fastsync
from jpar.multiprocessing import server as jsrv
from jpar.multiprocessing import sharedctypes as jsc
from jpar.multiprocessing import synchronize as jsync

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not fastsync.available(), reason="no shared-memory semaphores on this platform")]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    from tests.conftest import jpar_children, shm_segments, wait_gone

    before = set(os.listdir("/dev/shm"))
    ctx = jpar.init(num_engines=2)
    yield ctx
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == [], "cluster processes survived shutdown()"
    new = {n for n in set(os.listdir("/dev/shm")) - before if "jpar" in n or n.startswith("sem.")}
    assert not new, f"left in /dev/shm after shutdown(): {sorted(new)}"
    assert not [n for n in shm_segments() if n.startswith("sem.")]


# ------------------------------------------------------------------ Process targets
def hold_and_report(lock, out, held_forever):
    out.put(("fast", lock._slot() is not None, os.getpid()))
    lock.acquire()
    out.put(("held", True, os.getpid()))
    if held_forever:
        time.sleep(300)
    lock.release()


def take_units(sem, n, out):
    for _ in range(n):
        sem.acquire()
    out.put(os.getpid())
    time.sleep(300)


def add_under_lock(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def set_later(ev, go, sent, delay):
    """Set ``ev`` once ``go`` is set and ``delay`` seconds passed (so the parent is inside wait())."""
    go.wait(60)
    time.sleep(delay)
    sent.put(time.monotonic())
    ev.set()


def try_lock(lock, timeout, out):
    got = lock.acquire(timeout=timeout)
    out.put(got)
    if got:
        lock.release()


# ------------------------------------------------------------------ helpers
class _CallCounter:
    def __init__(self, monkeypatch):
        self.calls = []
        real = jsrv.Client.call

        def counting(client, op, *args, **kw):
            self.calls.append(op)
            return real(client, op, *args, **kw)

        monkeypatch.setattr(jsrv.Client, "call", counting)


def _as_if_on_another_host(handle):
    """A copy of ``handle`` whose client cannot use the same-host socket: what a process on
    another host gets (every operation is an actor call to the state server)."""
    import pickle

    client = jsrv.Client(*handle._client.locator())
    client._socket_ok = False
    copy = pickle.loads(pickle.dumps(handle))
    copy._client = client
    copy.__dict__.pop("_fs", None)
    copy.__dict__.pop("_fe", None)
    copy.__dict__.pop("_obj_here", None)
    return copy


# ------------------------------------------------------------------ tests
def test_lock_and_semaphore_make_no_server_call_on_this_host(monkeypatch):
    lock, rlock, sem = jsync.Lock(), jsync.RLock(), jsync.BoundedSemaphore(2)
    for obj in (lock, rlock, sem):   # the first use maps the slot (one or two server calls)
        obj.acquire()
        obj.release()
    counter = _CallCounter(monkeypatch)
    for _ in range(100):
        lock.acquire()
        lock.release()
        with rlock:
            with rlock:
                pass
        with sem:
            assert sem.get_value() == 1
    assert lock.acquire(False) and not lock.acquire(timeout=0.05)   # waiting a little: still no call
    lock.release()
    assert counter.calls == []


def test_value_and_array_make_no_server_call_on_this_host(monkeypatch):
    v, a = jsc.Value("i", 0), jsc.Array("d", 100)
    v.value, a[0] = 1, 1.0
    counter = _CallCounter(monkeypatch)
    for _ in range(50):
        with v.get_lock():
            v.value += 1
        a[99] = a[0] + a[99]
    assert v.value == 51 and a[99] == 50.0 and a[:2] == [1.0, 0.0]
    assert counter.calls == []


def test_one_authority_with_a_process_of_another_host():
    lock = jsync.Lock()
    remote = _as_if_on_another_host(lock)
    assert remote._slot() is None                        # it goes through the server ...
    assert lock.acquire()
    assert remote.acquire(timeout=0.2) is False          # ... which sees the same semaphore
    lock.release()
    assert remote.acquire(timeout=5) is True
    assert lock.acquire(False) is False
    assert lock._is_mine()                               # the same owner and thread, either way
    remote.release()
    assert lock.acquire(False)
    lock.release()
    sem, v = jsync.Semaphore(1), jsc.Value("i", 3)
    rsem, rv = _as_if_on_another_host(sem), _as_if_on_another_host(v.get_obj())
    assert rsem.acquire(timeout=5) and sem.get_value() == 0 and not sem.acquire(timeout=0.1)
    rsem.release()
    assert sem.get_value() == 1
    rv.value = 42
    assert v.value == 42


def test_a_lock_passed_to_a_process_arrives_working():
    lock, out = jsync.Lock(), mp.Queue()
    p = mp.Process(target=hold_and_report, args=(lock, out, False))
    p.start()
    assert out.get(timeout=60)[:2] == ("fast", True)      # the Process mapped the slot too
    assert out.get(timeout=60)[:2] == ("held", True)
    p.join(60)
    assert p.exitcode == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lock.acquire(timeout=5)
    lock.release()


def test_a_process_killed_holding_the_lock_is_taken_over_with_a_warning():
    lock, out = jsync.Lock(), mp.Queue()
    p = mp.Process(target=hold_and_report, args=(lock, out, True))
    p.start()
    assert out.get(timeout=60)[:2] == ("fast", True)
    kind, _, pid = out.get(timeout=60)
    assert kind == "held" and not lock.acquire(timeout=0.3)
    os.kill(pid, 9)                                       # dies holding it, on the fast path
    with pytest.warns(jsync.OwnerDiedWarning, match=f":{pid}, which died"):
        assert lock.acquire(timeout=30)
    lock.release()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lock.acquire(timeout=5)                    # only the first acquirer is told
    lock.release()
    p.join(30)


def test_a_waiter_finds_the_dead_holder_itself():
    """A waiter already blocked in acquire() when the holder dies gets the lock: its wait is cut
    in slices, after each of which the server checks the holder (which the server also releases
    when the dead process's connection closes)."""
    import threading

    lock, out = jsync.Lock(), mp.Queue()
    p = mp.Process(target=hold_and_report, args=(lock, out, True))
    p.start()
    out.get(timeout=60)
    pid = out.get(timeout=60)[2]
    got = []

    def wait():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got.append(lock.acquire(timeout=30))
            got.append([w.category for w in caught])

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(2 * fastsync.SLICE)
    os.kill(pid, 9)
    t.join(40)
    assert got and got[0] is True and jsync.OwnerDiedWarning in got[1]
    lock.release()
    p.join(30)


def test_units_of_a_killed_process_return_to_the_semaphore():
    sem, out = jsync.Semaphore(3), mp.Queue()
    p = mp.Process(target=take_units, args=(sem, 2, out))
    p.start()
    pid = out.get(timeout=60)
    assert sem.get_value() == 1
    p.kill()
    p.join(30)
    deadline = time.monotonic() + 20
    while sem.get_value() != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sem.get_value() == 3
    with pytest.warns(jsync.OwnerDiedWarning, match=f":{pid}"):
        assert sem.acquire(timeout=5)


def test_value_incremented_by_several_processes_ends_exact():
    v = jsc.Value("i", 0)
    ps = [mp.Process(target=add_under_lock, args=(v, 300)) for _ in range(3)]
    for p in ps:
        p.start()
    add_under_lock(v, 300)
    for p in ps:
        p.join(90)
        assert p.exitcode == 0
    assert v.value == 1200


def test_condition_over_a_fast_lock():
    lock = jsync.Lock()
    cond = jsync.Condition(lock)
    with cond:
        assert cond.wait(0.2) is False
        assert lock._is_mine()                            # held again after the wait
    assert lock.acquire(False)
    lock.release()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify()


# ------------------------------------------------------------------ Event
def test_event_makes_no_server_call_on_this_host(monkeypatch):
    ev = jsync.Event()
    assert ev._flag() is not None                        # the first use maps the slot
    counter = _CallCounter(monkeypatch)
    for _ in range(100):
        assert not ev.is_set() and ev.wait(0) is False
        ev.set()
        assert ev.is_set() and ev.wait() is True and ev.wait(5) is True
        ev.clear()
    assert ev.wait(0.05) is False                        # waiting a little: still no call
    assert counter.calls == []


def test_event_wait_times_out_on_time():
    ev = jsync.Event()
    for timeout in (0.0, -1.0, 0.3):
        t = time.monotonic()
        assert ev.wait(timeout) is False
        took = time.monotonic() - t
        assert max(0.0, timeout) <= took < max(0.0, timeout) + 1.0


def test_event_wait_wakes_on_set_from_another_process(monkeypatch):
    ev, go, sent = jsync.Event(), jsync.Event(), mp.Queue()
    p = mp.Process(target=set_later, args=(ev, go, sent, 0.5))
    p.start()
    ev.is_set()                                          # mapped before the count starts
    go.set()
    counter = _CallCounter(monkeypatch)
    t = time.monotonic()
    assert ev.wait(60) is True
    woke = time.monotonic()
    assert counter.calls == []                           # slept in the kernel, not in the server
    monkeypatch.undo()
    assert woke - t >= 0.3                               # it did wait for the set
    assert woke - sent.get(timeout=30) < 0.5             # and woke as soon as it came
    p.join(60)
    assert p.exitcode == 0


def test_event_one_authority_with_a_process_of_another_host():
    import threading

    ev = jsync.Event()
    remote = _as_if_on_another_host(ev)
    assert remote._flag() is None and ev._flag() is not None
    remote.set()
    assert ev.is_set() and ev.wait(0)
    ev.clear()
    assert not remote.is_set()
    t = time.monotonic()
    assert remote.wait(0.3) is False and time.monotonic() - t >= 0.3
    got = []
    waiter = threading.Thread(target=lambda: got.append(remote.wait(30)))
    waiter.start()
    ev.set()                                             # wakes the server's waiter on the same word
    waiter.join(30)
    assert got == [True] and remote.is_set()
