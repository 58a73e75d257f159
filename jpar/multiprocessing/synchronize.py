"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier held by the state server,
so processes on any host of the cluster synchronize through them.

Blocking calls (``acquire``, ``wait``) wait in the server, honouring ``timeout`` (seconds).
Locks, semaphores and events have a same-host fast path (jpar.multiprocessing.fastsync): on the
state server's host they are a POSIX semaphore (an event: a futex word) in shared memory that each
process operates itself, blocking calls waiting on it in the kernel (no server call per operation);
processes on other hosts reach the same memory through the server, so the object stays one,
wherever it is used.

A process that dies holding a lock (or semaphore units) does not keep it: the server releases
it when it learns of the death (same host: the dead process's connection closes; any host: the
Process that ended tells it), and the next ``acquire`` succeeds with an
:class:`OwnerDiedWarning` naming the dead owner (``"host:pid"``): what the lock guarded may
be half-updated, as with a robust mutex's EOWNERDEAD.
"""

from __future__ import annotations

import threading
import warnings

from .fastsync import open_event, open_fast
from .server import Handle, OwnerDiedWarning

__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event", "Condition", "Barrier",
           "OwnerDiedWarning"]


def _timeout(block: bool, timeout):
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        return None
    return timeout


_UNSET = object()
_get_ident = threading.get_ident


class _Fast(Handle):
    """A Handle whose lock or semaphore may live in this host's shared memory: ``_fs`` is the slot
    mapped here (opened on first use, in every process it is unpickled in), or None: the server."""

    _fs = _UNSET

    def _slot(self):
        fs = self._fs
        if fs is _UNSET:
            fs = self._fs = open_fast(self)
            if fs is not None and fs.units is None:   # a lock: its hot methods bound to the slot
                self.acquire, self.release = fs.bind(self._acquire_slot, self._warn)
        return fs

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take it, waiting up to ``timeout`` seconds (None: for ever); False if not taken."""
        fs = self._fs
        if fs is _UNSET:
            fs = self._slot()
        if fs is None:
            return _acquired(self._call("acquire", True, _timeout(block, timeout)), type(self).__name__)
        return self._acquire_slot(block, timeout)

    def _acquire_slot(self, block: bool = True, timeout: float | None = None) -> bool:
        fs = self._fs
        result = fs.acquire(fs.code, _get_ident(), _timeout(block, timeout), self._reap)
        if result is True or result is False:
            return result
        return self._warn(result)

    def _warn(self, code: int) -> bool:
        return _acquired(self._call("owner_name", code), type(self).__name__)

    def _reap(self) -> None:
        self._call("reap")

    def release(self) -> None:
        fs = self._fs
        if fs is _UNSET:
            fs = self._slot()
        if fs is None:
            self._call("release")
        else:
            fs.release(fs.code, _get_ident())

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _acquired(result, what) -> bool:
    if isinstance(result, str):
        warnings.warn(OwnerDiedWarning(
            f"This {what} was held by process {result}, which died; it was released and you now hold it. "
            "Check that the state it guarded is consistent."), stacklevel=3)
        return True
    return result


class Lock(_Fast):
    """A non-recursive lock: any process or thread may release it (as multiprocessing.Lock)."""

    _recursive = False

    def __init__(self, *, ctx=None, _group=None):
        self._create("lock", _group, recursive=self._recursive)

    def _is_mine(self) -> bool:
        fs = self._slot()
        return self._call("is_mine") if fs is None else fs.is_mine(fs.code, _get_ident())

    def __repr__(self) -> str:
        fs = self._slot()
        held, mine, count = self._call("state") if fs is None else fs.state(fs.code, _get_ident())
        owner = "unlocked" if not held else ("owned by this thread" if mine else "locked")
        return f"<jpar.multiprocessing.{type(self).__name__}({owner}{', count=%d' % count if held and self._recursive else ''})>"


class RLock(Lock):
    """A recursive lock: its holder (process and thread) may take it again and must release it."""

    _recursive = True


class Semaphore(_Fast):
    _bounded = False

    def __init__(self, value: int = 1, *, ctx=None, _group=None):
        self._create("semaphore", _group, value=value, bounded=self._bounded)

    def get_value(self) -> int:
        fs = self._slot()
        return self._call("get_value") if fs is None else fs.sem._get_value()

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing.{type(self).__name__}(value={self.get_value()})>"


class BoundedSemaphore(Semaphore):
    """A Semaphore whose release beyond its initial value raises ValueError."""

    _bounded = True


class Event(Handle):
    """multiprocessing.Event. On the state server's host its flag is a word of shared memory that
    each process reads and writes itself, waiters sleeping on it in the kernel (a futex, see
    fastsync.FastEvent): no server call per operation. Elsewhere every operation is a server call
    on that same word."""

    _fe = _UNSET

    def __init__(self, *, ctx=None, _group=None):
        self._create("event", _group)

    def _flag(self):
        """The flag mapped here (opened on first use, in every process it is unpickled in), or None."""
        fe = self._fe
        if fe is _UNSET:
            fe = self._fe = open_event(self)
            if fe is not None and type(self) is Event:   # bound to the slot: one Python frame per call
                self.is_set, self.set, self.clear, self.wait = fe.is_set, fe.set, fe.clear, fe.wait
        return fe

    def is_set(self) -> bool:
        fe = self._flag()
        return self._call("is_set") if fe is None else fe.is_set()

    def set(self) -> None:
        fe = self._flag()
        if fe is None:
            self._call("set")
        else:
            fe.set()

    def clear(self) -> None:
        fe = self._flag()
        if fe is None:
            self._call("clear")
        else:
            fe.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the flag; returns it."""
        fe = self._flag()
        return self._call("wait", timeout) if fe is None else fe.wait(timeout)

    def __repr__(self) -> str:
        return f"<Event at {id(self):#x} {'set' if self.is_set() else 'unset'}>"


class Condition(Handle):
    """A condition variable over ``lock`` (a jpar Lock or RLock; a new RLock if None)."""

    def __init__(self, lock: Lock | None = None, *, ctx=None, _group=None):
        if lock is None:
            lock = RLock(_group=_group)
        elif not isinstance(lock, Lock):
            raise TypeError(f"Condition(lock) takes a jpar.multiprocessing Lock or RLock, got "
                            f"{type(lock).__name__}.")
        self._lock = lock
        self._create("condition", _group, lock=lock._oid)

    def _extra(self) -> dict:
        return {"_lock": self._lock}

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait up to ``timeout`` seconds for a notify, take the lock back;
        False if the time ran out."""
        return self._call("wait", timeout)

    def wait_for(self, predicate, timeout: float | None = None):
        """Wait until ``predicate()`` is true (checked here, with the lock held), or ``timeout``."""
        import time

        result = predicate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.wait(left)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        self._call("notify", n)

    def notify_all(self) -> None:
        self._call("notify", 1 << 62)

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing.Condition({self._lock!r})>"

    # what the stdlib's Condition exposes of its state (CPython's tests read these): how many
    # waits began, how many ended, and how many notified waiters have not woken yet
    @property
    def _sleeping_count(self):
        return _Count(self, 0)

    @property
    def _woken_count(self):
        return _Count(self, 1)

    @property
    def _wait_semaphore(self):
        return _Count(self, 2)


class _Count:
    def __init__(self, cond: Condition, index: int):
        self._cond, self._index = cond, index

    def get_value(self) -> int:
        return self._cond._call("counts")[self._index]


class Barrier(Handle):
    """``parties`` processes wait until all have arrived; ``action`` runs in the last to arrive."""

    def __init__(self, parties: int, action=None, timeout: float | None = None, *, ctx=None, _group=None):
        self._action = action
        self._timeout = timeout
        self._create("barrier", _group, parties=parties)

    def _extra(self) -> dict:
        return {"_action": self._action, "_timeout": self._timeout}

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the others; returns this party's arrival index (0 .. parties-1).
        threading.BrokenBarrierError if the barrier breaks, is reset or ``timeout`` passes."""
        if timeout is None:
            timeout = self._timeout
        result = self._call("wait", timeout, self._action is not None)
        if type(result) is tuple:   # the last to arrive runs the action, then lets the others go
            try:
                self._action()
            except BaseException:
                self._call("action_done", False)
                raise
            self._call("action_done", True)
            return result[1]
        return result

    def abort(self) -> None:
        self._call("abort")

    def reset(self) -> None:
        self._call("reset")

    @property
    def parties(self) -> int:
        return self._call("info")[0]

    @property
    def n_waiting(self) -> int:
        return self._call("info")[1]

    @property
    def broken(self) -> bool:
        return self._call("info")[2]

    def __repr__(self) -> str:
        parties, waiting, broken = self._call("info")
        return f"<jpar.multiprocessing.Barrier(parties={parties}, waiting={waiting}, broken={broken})>"


BrokenBarrierError = threading.BrokenBarrierError
