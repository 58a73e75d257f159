"""The same-host fast path of Queue, SimpleQueue and JoinableQueue: the items sit in a ring buffer in
a memfd of the state server, which every process on the server's host maps and operates directly,
so a put or a get is a few memory writes under a lock, not a server round trip.

::

    one memfd per queue (state server)                 a process on the server's host
      header: head, tail, count, overflow, unfinished,   put: pickle (queues.dumps_item), take the
        capacity, maxsize; waiters per futex             lock, append a record at tail, count+1,
      futex words: items, space, done (sequences)        bump "items", release, wake a sleeping getter
      ring: records [length|kind][pickled item][pad]   get: take the lock, read the record at head,
    lock: a fast-path lock slot (fastsync.FastSem),        count-1, release, unpickle; empty: note the
      its holder recorded, released by a reap if it        "items" sequence and sleep in futex(2)
      dies holding it                                  other hosts: the same operations, run by the
    overflow: a deque in the server                      server on their behalf (one authority)

Why a ring and not the server: the stdlib's Queue costs a pipe write and a feeder thread per item;
the server's path cost a socket round trip and two thread switches per get, 2.6-4.9x the stdlib.

Ordering: a record is written before the tail and count that publish it, under the lock, so a
process killed mid-put loses only its own item and a killed getter only the item it was taking (the
stdlib's Queue may be corrupted by either). The lock's holder is reaped like any fast-path lock's.

An unbounded queue never blocks a put: when the ring's bytes are full (``RING_BYTES`` of pickled items
not yet got; an item of ``queues.LARGE_ITEM_BYTES`` or more travels as an object-store ref), puts go
to the server's overflow deque: once anything overflowed, every later put overflows too, until the
server has moved the overflow back into the ring (it does so whenever room appears and a put or a get
reaches it), so each producer's items come out in the order it put them. An overflowing put is a
server call answered once the server holds the item and has counted it in the header: a process
killed on its way there leaves no count for an item that will never come.
"""

from __future__ import annotations

import collections
import copy
import ctypes
import os
import queue
import threading
import time

from . import fastsync
from .objects import _CallerGone, _State

__all__ = ["available", "FastQueueState", "Ring", "open_ring", "RING_BYTES"]

RING_BYTES = 8 << 20       # bytes of records a queue holds in shared memory before puts overflow
HEADER = 128               # bytes before the ring: 8 int64 words, then the futex words
SLICE = 0.25               # seconds a waiter sleeps before it looks at the queue again anyway
SPIN = 200                 # looks at an empty ring's count (~10 us) before a getter sleeps
_MASK = (1 << 31) - 1      # futex sequences stay positive int32
_KIND_SHIFT = 56

# int64 words of the header
W_HEAD, W_TAIL, W_COUNT, W_OVER, W_UNFINISHED, W_CAP, W_MAXSIZE, W_WAITERS = range(8)
# int32 futex words (index in the header as int32), and their sleepers' counters (int32 too)
F_ITEMS, F_SPACE, F_DONE = 16, 17, 18
S_ITEMS, S_SPACE, S_DONE = 20, 21, 22


def available() -> bool:
    """Same-host locks and the futex system call (see fastsync)."""
    return fastsync.events_available()


def _end(block: bool, timeout) -> float | None:
    """When a wait gives up (monotonic clock; None: never). No block: at once."""
    if not block:
        return 0.0
    return None if timeout is None else time.monotonic() + max(0.0, timeout)


def _left(end: float | None) -> float | None:
    """Seconds left until ``end`` (None: for ever, <= 0: none)."""
    return None if end is None else end - time.monotonic()


class Ring:
    """One queue's shared memory as one process operates it. ``acquire()`` / ``release()`` take and
    give back the queue's lock for this caller; ``over_put(item)`` / ``over_get()`` reach the server's
    overflow (a callable each: the client's server calls, or the server's own methods)."""

    def __init__(self, mm: memoryview, base_addr: int, acquire, release, over_put, over_get):
        self.w = mm[:64].cast("q")
        self.f = mm[:HEADER].cast("i")
        self.addr = base_addr
        self.cap = self.w[W_CAP]
        self.maxsize = self.w[W_MAXSIZE]
        self.ring = mm[HEADER:HEADER + self.cap]
        self.words = self.ring.cast("q")
        self.acquire, self.release = acquire, release
        self.over_put, self.over_get = over_put, over_get

    # ---------------------------------------------------------------- records (lock held)
    def write(self, item) -> bool:
        """Append ``item`` (bytes, or ``("ref", bytes)``) if the ring has room; whether it had."""
        kind, data = (1, item[1]) if type(item) is tuple else (0, item)
        n = len(data)
        rec = 8 + ((n + 7) & ~7)
        w, cap = self.w, self.cap
        tail = w[W_TAIL]
        if cap - (tail - w[W_HEAD]) < rec:
            return False
        off = tail % cap
        self.words[off >> 3] = n | (kind << _KIND_SHIFT)
        start = off + 8
        if start >= cap:
            start -= cap
        end = start + n
        if end <= cap:
            self.ring[start:end] = data
        else:
            first = cap - start
            view = memoryview(data)
            self.ring[start:cap] = view[:first]
            self.ring[0:n - first] = view[first:]
        w[W_TAIL] = tail + rec
        w[W_COUNT] += 1
        f = self.f
        f[F_ITEMS] = (f[F_ITEMS] + 1) & _MASK
        return True

    def take(self):
        """Remove and return the oldest record's item (the ring is not empty)."""
        w, cap = self.w, self.cap
        head = w[W_HEAD]
        off = head % cap
        word = self.words[off >> 3]
        n, kind = word & ((1 << _KIND_SHIFT) - 1), word >> _KIND_SHIFT
        start = off + 8
        if start >= cap:
            start -= cap
        if start + n <= cap:
            data = bytes(self.ring[start:start + n])
        else:
            data = bytes(self.ring[start:cap]) + bytes(self.ring[0:n - (cap - start)])
        w[W_HEAD] = head + 8 + ((n + 7) & ~7)
        w[W_COUNT] -= 1
        f = self.f
        f[F_SPACE] = (f[F_SPACE] + 1) & _MASK
        return ("ref", data) if kind else data

    def wake(self, word: int) -> None:
        fastsync._futex(self.addr + 4 * word, fastsync._FUTEX_WAKE, fastsync._WAKE_ALL, None, None, 0)

    def sleep(self, word: int, seq: int, seconds: float) -> None:
        """Sleep until futex word ``word`` is no longer ``seq`` (at once if it is not), a wake, or
        ``seconds``."""
        ts = fastsync._Timespec(int(seconds), int((seconds % 1) * 1e9))
        fastsync._futex(self.addr + 4 * word, fastsync._FUTEX_WAIT, seq, ctypes.addressof(ts), None, 0)

    # ---------------------------------------------------------------- operations
    def put(self, item, block: bool = True, timeout: float | None = None, joinable: bool = False,
            check=None) -> None:
        """Add ``item``; a full bounded queue waits up to ``timeout`` seconds, then ``queue.Full``."""
        w, f = self.w, self.f
        end = _end(block, timeout)
        while True:
            self.acquire()
            try:
                if not self.maxsize or w[W_COUNT] + w[W_OVER] < self.maxsize:
                    over = bool(w[W_OVER]) or not self.write(item)
                    if not over and joinable:
                        w[W_UNFINISHED] += 1
                    wake = not over and f[S_ITEMS] > 0
                    break
                seq = f[F_SPACE]
                left = _left(end)
                if left is not None and left <= 0:
                    raise queue.Full()
                f[S_SPACE] += 1
            finally:
                self.release()
            self._doze(F_SPACE, S_SPACE, seq, left, check)
        if over:
            # the server appends it and counts it (W_OVER, W_UNFINISHED) under this lock, and answers
            # only then: this process's next put sees the overflow and follows it there (its order kept),
            # and a put killed before the server had it leaves no count behind
            self.over_put(item)
        elif wake:
            self.wake(F_ITEMS)

    def get(self, block: bool = True, timeout: float | None = None, check=None):
        """The oldest item; waits up to ``timeout`` seconds (None: for ever), then ``queue.Empty``."""
        w, f = self.w, self.f
        end = _end(block, timeout)
        spun = not block
        while True:
            if not spun and not w[W_COUNT]:    # a moment's look before sleeping: a producer that is
                spun = True                    # putting now spares both sides a futex call
                for _ in range(SPIN):
                    if w[W_COUNT]:
                        break
            self.acquire()
            try:
                if w[W_COUNT]:
                    item = self.take()
                    wake = self.maxsize and f[S_SPACE] > 0
                else:
                    item = None
                    over, seq = w[W_OVER], f[F_ITEMS]
                    left = _left(end)
                    if not over and (left is None or left > 0):
                        f[S_ITEMS] += 1
            finally:
                self.release()
            if item is not None:
                if wake:
                    self.wake(F_SPACE)
                return item
            if over:
                item = self.over_get()
                if item is not None:
                    return item
                left = _left(end)
                if left is not None and left <= 0:
                    raise queue.Empty()
                self._doze(F_ITEMS, None, seq, SLICE if left is None else min(SLICE, left), check)
                continue
            if left is not None and left <= 0:
                raise queue.Empty()
            self._doze(F_ITEMS, S_ITEMS, seq, left, check)

    def task_done(self) -> None:
        w, f = self.w, self.f
        self.acquire()
        try:
            if w[W_UNFINISHED] <= 0:
                raise ValueError("task_done() called too many times")
            w[W_UNFINISHED] -= 1
            done = w[W_UNFINISHED] == 0
            if done:
                f[F_DONE] = (f[F_DONE] + 1) & _MASK
                wake = f[S_DONE] > 0
        finally:
            self.release()
        if done and wake:
            self.wake(F_DONE)

    def join(self, timeout: float | None = None, check=None) -> bool:
        """Wait until every item put has been marked done; False if ``timeout`` passed first."""
        w, f = self.w, self.f
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            self.acquire()
            try:
                if w[W_UNFINISHED] <= 0:
                    return True
                seq = f[F_DONE]
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                f[S_DONE] += 1
            finally:
                self.release()
            self._doze(F_DONE, S_DONE, seq, left, check)

    def qsize(self) -> int:
        w = self.w
        return w[W_COUNT] + w[W_OVER]

    def full(self) -> bool:
        return bool(self.maxsize) and self.qsize() >= self.maxsize

    # ---------------------------------------------------------------- waiting
    def _doze(self, word: int, sleepers: int | None, seq: int, left: float | None, check) -> None:
        """One sleep on a futex word: at most SLICE (then the caller looks again: a holder reaped, an
        overflow moved), and ``check()`` after it (the server: does the caller still listen?). The
        caller counted itself in ``sleepers`` under the lock (so a waker skips the system call when
        nobody sleeps); this takes it off again, under the lock."""
        try:
            self.sleep(word, seq, SLICE if left is None else max(0.0, min(SLICE, left)))
            if check is not None:
                check()
        finally:
            if sleepers is not None:
                self.acquire()
                self.f[sleepers] -= 1
                self.release()


# ------------------------------------------------------------------ the server's side
class FastQueueState(_State):
    """Server side of a fast-path queue: the memfd, the lock, the overflow, and the operations that
    processes on other hosts reach through the server."""

    unlocked_ops = frozenset({"put", "get", "over_put", "over_get", "qsize", "full", "task_done", "join"})

    def __init__(self, server, maxsize: int = 0, joinable: bool = False):
        super().__init__(server)
        from .server import owner_id

        arenas = server.fast_arenas()
        self.lock = fastsync.FastLockState(server, "lock")
        self.where = arenas.alloc_data(HEADER + RING_BYTES)
        arena = arenas.arenas[self.where[0]]
        mm = memoryview(arena.mm)[:HEADER + RING_BYTES]
        words = mm[:64].cast("q")
        words[W_CAP] = RING_BYTES
        words[W_MAXSIZE] = max(0, maxsize or 0)
        self.joinable = joinable
        self.over: collections.deque = collections.deque()
        self.over_lock = threading.Lock()
        own = arenas.code(owner_id(), os.getpid())
        self.ring = Ring(mm, arena.base, *self._lock_as(own, threading.get_ident), self._over_put, self._over_get)

    def _reap(self) -> None:
        with self.server.mutex:
            self.lock.op_reap(None, None)

    def _lock_as(self, code: int, tid) -> tuple:
        """(acquire, release) of the queue's lock held under owner ``code``, thread ``tid()``."""
        fs, reap = self.lock.fs, self._reap
        return (lambda: fs.acquire(code, tid(), None, reap)), (lambda: fs.release(code, tid()))

    def _ring_for(self, who) -> Ring:
        """The ring operated for ``who`` (a process on another host): the lock held under its code."""
        with self.server.mutex:
            code = self.server.fast_arenas().code(who[0], self.server.peer_pids.get(who[0]))
        ring = copy.copy(self.ring)
        ring.acquire, ring.release = self._lock_as(code, lambda: who[1])
        return ring

    # ---- overflow (also what clients on this host call)
    def _over_put(self, item, first: bool = False) -> None:
        """A put that found the ring full (or an overflow already there): kept here, counted under the
        ring's lock (a getter sees the count and the item together), then what fits goes to the ring.
        ``first``: an item that was got and goes back (undo_get): first in line, already counted as
        unfinished."""
        r = self.ring
        r.acquire()
        try:
            with self.over_lock:
                if first:
                    self.over.appendleft(item)
                else:
                    self.over.append(item)
            r.w[W_OVER] += 1
            if self.joinable and not first:
                r.w[W_UNFINISHED] += 1
        finally:
            r.release()
        self._drain()
        r.wake(F_ITEMS)            # a getter that saw the ring empty looks again

    def _over_get(self):
        r = self.ring
        r.acquire()
        try:
            if r.w[W_COUNT]:
                item = r.take()
            else:
                with self.over_lock:
                    if not self.over:
                        return None
                    item = self.over.popleft()
                r.w[W_OVER] -= 1
        finally:
            r.release()
        self._drain()
        if r.maxsize:
            r.wake(F_SPACE)
        return item

    def _drain(self) -> None:
        """Move what fits of the overflow into the ring, oldest first."""
        r = self.ring
        moved = False
        r.acquire()
        try:
            with self.over_lock:
                while self.over and r.write(self.over[0]):
                    self.over.popleft()
                    r.w[W_OVER] -= 1
                    moved = True
        finally:
            r.release()
        if moved:
            r.wake(F_ITEMS)

    # ---- what every state has
    def drop_owner(self, owner: str) -> None:
        self.lock.drop_owner(owner)

    def free(self) -> None:
        self.server.fast_arenas().free_data(self.where)

    # ---- under the server's mutex
    def op_fast_info(self, who, gone):
        return self.lock.op_fast_info(who, gone), self.where[0]

    def op_reap(self, who, gone):
        self.lock.op_reap(who, gone)

    def undo_get(self, item) -> None:
        """A get whose reader went away before it had the item (the server could not send it): the
        item goes back, first in the overflow. Done by a thread: this runs under the server's mutex,
        which a wait for the ring's lock may need (to reap its holder)."""
        threading.Thread(target=self._over_put, args=(item, True), daemon=True).start()

    # ---- without the server's mutex: clients on other hosts, and this host's overflow calls
    def _check(self, gone):
        if gone is None:
            return None

        def check():
            if gone():
                raise _CallerGone()

        return check

    def op_over_put(self, who, gone, item):
        self._over_put(item)

    def op_over_get(self, who, gone):
        return self._over_get()

    def op_put(self, who, gone, item, block=True, timeout=None):
        self._ring_for(who).put(item, block, timeout, self.joinable, self._check(gone))

    def op_get(self, who, gone, block=True, timeout=None, eof=False):
        return self._ring_for(who).get(block, timeout, self._check(gone))

    def op_qsize(self, who, gone):
        return self.ring.qsize()

    def op_full(self, who, gone):
        return self.ring.full()

    def op_task_done(self, who, gone):
        self._ring_for(who).task_done()

    def op_join(self, who, gone, timeout=None):
        return self._ring_for(who).join(timeout, self._check(gone))


# ------------------------------------------------------------------ the client's side
def open_ring(handle) -> Ring | None:
    """The queue's ring mapped in this process, or None where it goes through the server (another
    host, a queue made without the fast path). Cached per process."""
    if not available():
        return None
    oid = handle._oid
    return fastsync._opened(handle, ("ring", oid), lambda client, info: _ring_over(client, info, oid))


def _ring_over(client, info, oid: int) -> Ring | None:
    if info is None:                       # a queue of the server's plain kind (a Pipe's direction)
        return None
    lock_info, data_arena = info
    fs = fastsync._sem_over(client, lock_info)
    arena = client.arena(data_arena, fastsync._map)
    if fs is None or arena is None:
        return None
    code, tid = fs.code, threading.get_ident

    def slow(block=True, timeout=None):       # contended: wait, asking the server to reap a dead holder
        fs.acquire(code, tid(), None, lambda: client.call("reap", oid))
        return True

    # a holder that died was reaped: the ring is consistent whatever it was doing (see the module's doc)
    acquire, release = fs.bind(slow, lambda dead: True)
    return Ring(memoryview(arena.mm)[:arena.size], arena.base, acquire, release,
                lambda item: client.call("over_put", oid, item),
                lambda: client.call("over_get", oid))
