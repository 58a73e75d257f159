"""The state server's objects: a queue, a lock, a semaphore, a condition, an event, a barrier, a
ctypes value and a managed object, each with its ``op_*`` operations.

Every operation runs with the server's one mutex held and gets ``who`` (``(owner, thread)``) and
``gone`` (a check that the caller still listens, or None for actor calls). Blocking operations
wait on their object's Condition, built on that mutex, through :func:`_wait`.
"""

from __future__ import annotations

import collections
import pickle
import threading
import time
from typing import Any

_WAIT_SLICE = 1.0       # seconds a server-side wait sleeps before checking that its caller still lives


class _CallerGone(Exception):
    """The client that asked disconnected while the server waited for it."""


def _wait(cond: threading.Condition, ready, timeout: float | None, gone) -> bool:
    """Wait on ``cond`` (its lock held) until ``ready()``; False when ``timeout`` passes first.
    Every ``_WAIT_SLICE`` seconds ``gone()`` checks that the caller still listens."""
    if ready():
        return True
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    while not ready():
        step = _WAIT_SLICE
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            step = min(step, left)
        if not cond.wait(step) and gone is not None and gone():
            raise _CallerGone()
    return True


# ------------------------------------------------------------------ the objects, server side
class _State:
    #: operations the server runs without its mutex (they wait on something else, e.g. a semaphore)
    unlocked_ops: frozenset = frozenset()

    def __init__(self, server):
        self.server = server
        self.group: str | None = None
        self.cond = threading.Condition(server.mutex)

    def drop_owner(self, owner: str) -> None:
        """Release what ``owner`` (a dead process) held."""

    def free(self) -> None:
        """The object was dropped (its Manager shut down): give back what it holds outside Python."""

    def op_fast_info(self, who, gone):
        """No same-host fast path for this object (see jpar.multiprocessing.fastsync)."""
        return None


class _Queue(_State):
    """A FIFO of opaque items; also one direction of a Pipe (``eof`` once its writer closed)."""

    def __init__(self, server, maxsize: int = 0, joinable: bool = False, writer: str | None = None):
        super().__init__(server)
        self.items: collections.deque = collections.deque()
        self.maxsize = maxsize
        self.joinable = joinable
        self.unfinished = 0
        # a Pipe's direction: which processes hold its writing end open (as an OS pipe counts its
        # descriptors), plus copies pickled and not yet unpickled; EOF once both are none
        self.writers: collections.Counter | None = collections.Counter({writer: 1}) if writer else None
        self.in_transit = 0
        self.watchers: set = set()   # Conditions of waits on several queues (connection.wait)

    def readable(self) -> bool:
        """Something to get, or EOF: what ``poll`` and ``connection.wait`` wait for."""
        return bool(self.items) or self.writer_closed

    def _became_readable(self) -> None:
        """Wake what waits on this queue alone and the waits on several that include it."""
        self.cond.notify_all()
        for cond in self.watchers:
            cond.notify_all()

    @property
    def writer_closed(self) -> bool:
        return self.writers is not None and not self.in_transit and not +self.writers

    def op_put(self, who, gone, item, block=True, timeout=None):
        if self.maxsize > 0 and not _wait(self.cond, lambda: len(self.items) < self.maxsize,
                                          timeout if block else 0, gone):
            import queue
            raise queue.Full()
        self.items.append(item)
        self.unfinished += 1
        self._became_readable()

    def op_get(self, who, gone, block=True, timeout=None, eof=False):
        ready = (lambda: self.items or self.writer_closed) if eof else (lambda: self.items)
        if not _wait(self.cond, ready, timeout if block else 0, gone):
            import queue
            raise queue.Empty()
        if not self.items:
            raise EOFError()
        item = self.items.popleft()
        self.cond.notify_all()
        return item

    def undo_get(self, item) -> None:
        self.items.appendleft(item)
        self._became_readable()

    def op_poll(self, who, gone, timeout=0.0):
        return _wait(self.cond, self.readable, timeout, gone)

    def op_writer(self, who, gone, change: str):
        """A writing end was pickled ("send"), unpickled ("arrive") or closed ("close") by ``who``."""
        if change == "send":
            self.in_transit += 1
        elif change == "arrive":
            self.in_transit = max(0, self.in_transit - 1)
            self.writers[who[0]] += 1
        elif self.writers[who[0]] > 0:
            self.writers[who[0]] -= 1
        if self.writer_closed:
            self._became_readable()

    def drop_owner(self, owner):
        if self.writers is not None and self.writers.pop(owner, 0) and self.writer_closed:
            self._became_readable()

    def op_qsize(self, who, gone):
        return len(self.items)

    def op_full(self, who, gone):
        return self.maxsize > 0 and len(self.items) >= self.maxsize

    def op_task_done(self, who, gone):
        if self.unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self.unfinished -= 1
        self.cond.notify_all()

    def op_join(self, who, gone, timeout=None):
        return _wait(self.cond, lambda: self.unfinished == 0, timeout, gone)


def wait_readable(server, queues: list, timeout: float | None, gone) -> list:
    """The indexes of ``queues`` that are readable, waiting up to ``timeout`` seconds for one to
    become so (connection.wait): one Condition, on the server's mutex, that each queue notifies
    when it becomes readable, so the wait wakes at once and polls nothing."""
    if not all(isinstance(q, _Queue) for q in queues):
        raise TypeError("wait_readable() takes queues (the reading ends of Pipes)")
    cond = threading.Condition(server.mutex)
    for q in queues:
        q.watchers.add(cond)
    try:
        _wait(cond, lambda: any(q.readable() for q in queues), timeout, gone)
    finally:
        for q in queues:
            q.watchers.discard(cond)
    return [i for i, q in enumerate(queues) if q.readable()]


class _Lock(_State):
    """Lock and RLock: a holder ``(owner, thread)`` and, for RLock, a count."""

    def __init__(self, server, recursive: bool = False):
        super().__init__(server)
        self.recursive = recursive
        self.holder = None
        self.count = 0
        self.abandoned: str | None = None

    def op_acquire(self, who, gone, block=True, timeout=None):
        if self.recursive and self.holder == who:
            self.count += 1
            return True
        if not _wait(self.cond, lambda: self.holder is None, timeout if block else 0, gone):
            return False
        self.holder, self.count = who, 1
        if self.abandoned is not None:
            dead, self.abandoned = self.abandoned, None
            return dead
        return True

    def op_release(self, who, gone):
        if self.recursive:
            if self.holder != who:
                raise AssertionError("attempt to release recursive lock not owned by thread")
            self.count -= 1
            if self.count:
                return
        elif self.holder is None:
            raise ValueError("semaphore or lock released too many times")
        self.holder, self.count = None, 0
        self.cond.notify()

    def op_is_mine(self, who, gone):
        return self.holder == who

    def op_state(self, who, gone):
        """(held, held by the caller, count): for reprs and Condition's checks."""
        return self.holder is not None, self.holder == who, self.count

    def drop_owner(self, owner):
        if self.holder is not None and self.holder[0] == owner:
            self.holder, self.count, self.abandoned = None, 0, owner
            self.cond.notify()

    # what a Condition over this lock needs (the fast path's lock has the same three)
    def cond_holds(self, who) -> bool:
        return self.holder == who

    def cond_release(self, who) -> int:
        saved = self.count
        self.holder, self.count = None, 0
        self.cond.notify()
        return saved

    def cond_reacquire(self, who, saved: int, gone) -> None:
        _wait(self.cond, lambda: self.holder is None, None, gone)
        self.holder, self.count = who, saved


class _Semaphore(_State):
    def __init__(self, server, value: int = 1, bounded: bool = False):
        super().__init__(server)
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.value = value
        self.bound = value if bounded else None
        self.held: collections.Counter = collections.Counter()   # owner -> units acquired and not released
        self.abandoned: str | None = None

    def op_acquire(self, who, gone, block=True, timeout=None):
        if not _wait(self.cond, lambda: self.value > 0, timeout if block else 0, gone):
            return False
        self.value -= 1
        self.held[who[0]] += 1
        if self.abandoned is not None:
            dead, self.abandoned = self.abandoned, None
            return dead
        return True

    def op_release(self, who, gone):
        if self.bound is not None and self.value >= self.bound:
            raise ValueError("semaphore or lock released too many times")
        self.value += 1
        if self.held[who[0]] > 0:
            self.held[who[0]] -= 1
        self.cond.notify()

    def op_get_value(self, who, gone):
        return self.value

    def drop_owner(self, owner):
        n = self.held.pop(owner, 0)
        if n:
            self.value += n
            self.abandoned = owner
            self.cond.notify(n)


class _Condition(_State):
    """A condition variable over a server-side lock: ``wait`` releases it and takes it back."""

    def __init__(self, server, lock):
        super().__init__(server)
        self.lock = lock
        self.waiters: list = []
        self.slept = self.woke = self.signaled = 0   # totals, and notified waiters not yet returned

    def _check(self, who, what):
        if not self.lock.cond_holds(who):
            raise RuntimeError(f"cannot {what} on un-acquired lock: acquire the Condition (with cond:) first")

    def op_wait(self, who, gone, timeout=None):
        self._check(who, "wait")
        lock = self.lock
        saved = lock.cond_release(who)
        token = [False]
        self.waiters.append(token)
        self.slept += 1
        try:
            _wait(self.cond, lambda: token[0], timeout, gone)
        finally:
            if token[0]:
                self.signaled -= 1
            else:
                self.waiters.remove(token)
            self.woke += 1
        lock.cond_reacquire(who, saved, gone)
        return token[0]

    def op_notify(self, who, gone, n=1):
        self._check(who, "notify")
        woken, self.waiters[:n] = self.waiters[:n], []
        for token in woken:
            token[0] = True
        self.signaled += len(woken)
        if woken:
            self.cond.notify_all()

    def op_counts(self, who, gone):
        """(waits begun, waits ended, notified waiters not yet woken)."""
        return self.slept, self.woke, self.signaled


class _Event(_State):
    def __init__(self, server):
        super().__init__(server)
        self.flag = False

    def op_set(self, who, gone):
        self.flag = True
        self.cond.notify_all()

    def op_clear(self, who, gone):
        self.flag = False

    def op_is_set(self, who, gone):
        return self.flag

    def op_wait(self, who, gone, timeout=None):
        return _wait(self.cond, lambda: self.flag, timeout, gone)


class _Barrier(_State):
    """threading.Barrier's states (filling, draining, resetting, broken), with the action run by
    the last process to arrive: the server answers it ``("action", index)`` and waits for
    ``action_done`` before letting the others go."""

    FILLING, DRAINING, RESETTING, BROKEN = 0, 1, -1, -2

    def __init__(self, server, parties: int):
        super().__init__(server)
        if parties < 1:
            raise ValueError("parties must be > 0")
        self.parties = parties
        self.state = self.FILLING
        self.count = 0
        self.in_action = False

    def _broken_error(self):
        return threading.BrokenBarrierError()

    def op_wait(self, who, gone, timeout=None, has_action=False):
        _wait(self.cond, lambda: self.state not in (self.DRAINING, self.RESETTING), None, gone)
        if self.state < 0:
            raise self._broken_error()
        index = self.count
        self.count += 1
        try:
            if index + 1 == self.parties:
                if has_action:
                    self.in_action = True
                    return ("action", index)
                self._release()
            else:
                self._wait_release(timeout, gone)
            return index
        finally:
            if not self.in_action:
                self._exit()

    def op_action_done(self, who, gone, ok):
        self.in_action = False
        try:
            if ok:
                self._release()
            else:
                self._break()
        finally:
            self._exit()

    def _release(self):
        self.state = self.DRAINING
        self.cond.notify_all()

    def _wait_release(self, timeout, gone):
        try:
            ok = _wait(self.cond, lambda: self.state != self.FILLING, timeout, gone)
        except _CallerGone:
            self._break()
            raise
        if not ok:
            self._break()
            raise self._broken_error()
        if self.state < 0:
            raise self._broken_error()

    def _exit(self):
        self.count -= 1
        if self.count == 0 and self.state in (self.RESETTING, self.DRAINING):
            self.state = self.FILLING
            self.cond.notify_all()

    def _break(self):
        self.state = self.BROKEN
        self.cond.notify_all()

    def op_abort(self, who, gone):
        self._break()

    def op_reset(self, who, gone):
        if self.count > 0:
            if self.state == self.FILLING:
                self.state = self.RESETTING
            elif self.state == self.BROKEN:
                self.state = self.RESETTING
        else:
            self.state = self.FILLING
        self.cond.notify_all()

    def op_info(self, who, gone):
        """(parties, n_waiting, broken)"""
        return self.parties, (self.count if self.state == self.FILLING else 0), self.state == self.BROKEN


class _CData(_State):
    """A ctypes object (the value of Value / Array): conversions and errors are ctypes' own."""

    def __init__(self, server, type_, args=(), size=None, init=None, fast=True):
        super().__init__(server)
        value = type_(*args) if size is None else (type_ * size)()
        if size is not None and init is not None:
            value[:] = init
        self.where = None
        if fast:   # on this host's shared memory, where processes here read and write it themselves
            from . import fastsync

            if fastsync.available():
                import ctypes

                arenas = server.fast_arenas()
                self.where = arenas.alloc_data(ctypes.sizeof(value))
                shared = type(value).from_buffer(arenas.arenas[self.where[0]].mm, self.where[1])
                ctypes.memmove(ctypes.addressof(shared), ctypes.addressof(value), ctypes.sizeof(value))
                value = shared
        self.obj = value

    def op_fast_info(self, who, gone):
        return self.where

    def free(self) -> None:
        if self.where is not None:
            self.obj = None
            self.server.fast_arenas().free_data(self.where)

    def op_get(self, who, gone, name):
        if name not in ("value", "raw"):
            raise AttributeError(name)
        return getattr(self.obj, name)

    def op_set(self, who, gone, name, value):
        if name not in ("value", "raw"):
            raise AttributeError(name)
        setattr(self.obj, name, value)

    def op_getitem(self, who, gone, index):
        return self.obj[index]

    def op_setitem(self, who, gone, index, value):
        self.obj[index] = value

    def op_len(self, who, gone):
        return len(self.obj)


class _Managed(_State):
    """A Manager's dict / list / Namespace / value: a real object; calls travel cloudpickled."""

    def __init__(self, server, blob: bytes = b"", obj: Any = None):
        super().__init__(server)
        self.obj = pickle.loads(blob) if blob else obj

    def op_iter(self, who, gone):
        """A live iterator over the object, itself a managed object (its id)."""
        return self.server.add(_Managed(self.server, obj=iter(self.obj)), self.group)

    def op_call(self, who, gone, name, blob):
        from jpar.pickling import cloud_dumps

        args, kwargs = pickle.loads(blob)
        if name == "#getvalue":
            return cloud_dumps(self.obj)
        if name == "__getattribute__" and args and args[0].startswith("_"):
            raise AttributeError(args[0])
        result = getattr(self.obj, name)(*args, **kwargs)
        if result is self.obj:   # += and *= return the object itself: no copy back
            return None
        if type(result) in _DICT_VIEWS:   # views cannot be pickled: a list, as the stdlib's proxies give
            result = list(result)
        return cloud_dumps(result)


_DICT_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_KINDS = {"queue": _Queue, "lock": _Lock, "semaphore": _Semaphore, "event": _Event, "barrier": _Barrier,
          "cdata": _CData, "managed": _Managed}
