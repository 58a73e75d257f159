"""The same-host fast path of Lock, RLock, Semaphore and BoundedSemaphore: a process-shared POSIX
semaphore in shared memory, operated directly by every process on the state server's host, and by
the server on behalf of processes on other hosts, so each object keeps ONE authority. Event is a
futex word in a slot the same way (see FastEvent), and Value / Array bytes live in the same memfds.

::

    state server (host A)                                 a process on host A (driver, task, Process)
      arenas: memfds of 64-byte slots, one per object       first use of an object: "fast_info" -> (arena,
        [sem_t | holder code | thread | count | abandoned]    offset, entry, owner code); "arena_fd" -> the
      an entry slot per (semaphore, owner): units held        memfd itself over the socket (SCM_RIGHTS), mmap
      owner codes: "host:pid" <-> int, with the pid the     then acquire / release: sem_trywait / sem_post
        socket's peer credentials give (liveness checks)      (_multiprocessing.SemLock on the slot) and a
      reap: a holder (or an entry's owner) that died or       few words of the slot: no server call
        was named by release_owner: its units posted,     waiting: timed waits in slices; after each,
        the slot marked abandoned                             "reap" asks the server to check the holder
                                                          a process on host B: Handle._call -> the server
                                                            -> the same slot, operated with B's owner code

Why a memfd rather than a name in ``/dev/shm``: the state server is an actor that the cluster
SIGKILLs when it stops, so a named semaphore or segment would outlive it unless something swept
it (and Dask and Ray sweep nothing of ours). A memfd has no name: the kernel frees it when the
last process that holds it (the server's descriptor, a client's mapping) goes, so nothing can
leak, whoever crashes. Its descriptor reaches a client over the same-host socket, which is also
what proves the client is on this host (same host name and network namespace); its pid is read
from the socket's peer credentials, so liveness checks work across pid namespaces too.

Owner death: the next acquirer after the death gets :class:`OwnerDiedWarning`, as on the server
path. The one gap of a userspace lock: a process SIGKILLed between taking the semaphore and
recording itself in the slot (a few instructions in the C module, a few bytecodes without it) is
not seen as the holder, and the unit it took is lost; the kernel's robust futexes would close that
window, but they allow no release by another process, which multiprocessing's Lock permits.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import socket
import sys
import threading
import time

from .objects import _CallerGone, _State

__all__ = ["available", "events_available", "FastArenas", "FastSem", "FastEvent", "FastEventState",
           "open_fast", "open_event", "SLICE"]

SLOT = 64                 # bytes per slot: a 32-byte sem_t, then 4 words
ARENA_BYTES = 1 << 16     # slots per memfd: 1024 (an arena is mapped once per process)
SLICE = 0.25              # seconds a blocked acquire waits before asking the server to check the holder
H, T, C, A = 4, 5, 6, 7   # word indexes in a slot: holder code, holder thread, recursion count, abandoned code
_KIND = 1                 # _multiprocessing's SEMAPHORE kind (recursion is kept in the slot, not per process)
_MISSING = object()

try:   # the C fast path of a lock's acquire and release, built with the package (see _slotlock.c)
    from . import _slotlock
except ImportError:
    _slotlock = None


def _sem_init():
    import ctypes.util

    for name in (None, ctypes.util.find_library("pthread")):
        try:
            fn = getattr(ctypes.CDLL(name, use_errno=True), "sem_init")
        except (OSError, AttributeError):
            continue
        fn.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint)
        return fn
    return None


_init = None


def available() -> bool:
    """Linux with memfds, descriptor passing and a 32-byte (or smaller) sem_t in glibc or musl."""
    global _init
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create") or \
            not hasattr(socket, "send_fds") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return False
    try:
        import _multiprocessing
        _multiprocessing.SemLock._rebuild   # noqa: B018 (present on the interpreters we support)
    except (ImportError, AttributeError):
        return False
    if _init is None:
        _init = _sem_init() or False
    return bool(_init)


class _Arena:
    """One memfd mapped in this process. The mapping is never closed: SemLocks point into it, and
    ``ctypes`` holds an export of it, so a stray close cannot leave them dangling."""

    def __init__(self, fd: int, size: int):
        self.fd = fd
        self.size = size
        self.mm = mmap.mmap(fd, size)
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.base = ctypes.addressof(self._anchor)
        self.words = memoryview(self.mm).cast("q")


# ------------------------------------------------------------------ one slot, as a process operates it
class FastSem:
    """A lock or semaphore slot. ``units``: the caller's entry of a semaphore (units it holds)."""

    def __init__(self, arena: _Arena, offset: int, maxvalue: int, recursive: bool,
                 entry: tuple[_Arena, int] | None, code: int = 0):
        import _multiprocessing

        self.address = arena.base + offset
        self.anchor = arena
        self.sem = _multiprocessing.SemLock._rebuild(self.address, _KIND, maxvalue, None)
        self.w = arena.words[offset // 8:offset // 8 + SLOT // 8]
        self.units = None if entry is None else entry[0].words[entry[1] // 8:entry[1] // 8 + 1]
        self.recursive = recursive
        self.code = code                    # this process's owner code (clients)
        self._units_lock = threading.Lock()

    def acquire(self, code: int, tid: int, timeout: float | None, reap) -> bool | int:
        """Take it within ``timeout`` seconds (0: no wait, None: for ever): False, True, or the code of
        a dead owner whose hold was released for us. ``reap()`` runs after each slice of waiting."""
        w = self.w
        if self.recursive and w[H] == code and w[T] == tid:
            w[C] += 1
            return True
        sem = self.sem
        if not sem.acquire(False):
            if timeout is not None and timeout <= 0:
                return False
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                step = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
                if step > 0 and sem.acquire(True, step):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                reap()   # a whole slice waited: has the holder died?
                if sem.acquire(False):
                    break
        if self.units is None:
            w[H], w[T], w[C] = code, tid, 1
        else:
            with self._units_lock:
                self.units[0] += 1
        dead = w[A]
        if dead:
            w[A] = 0
            return dead
        return True

    def release(self, code: int, tid: int) -> None:
        w = self.w
        if self.units is not None:
            self.sem.release()              # ValueError past a BoundedSemaphore's bound
            with self._units_lock:
                if self.units[0] > 0:
                    self.units[0] -= 1
            return
        if self.recursive:
            if w[H] != code or w[T] != tid:
                raise AssertionError("attempt to release recursive lock not owned by thread")
            if w[C] > 1:
                w[C] -= 1
                return
        saved = w[H], w[T], w[C]
        w[H] = w[T] = w[C] = 0
        try:
            self.sem.release()              # ValueError when it was not held
        except ValueError:
            w[H], w[T], w[C] = saved
            raise

    def bind(self, slow, warn) -> tuple:
        """A lock's ``acquire`` and ``release`` for this process, bound to this slot: the stdlib
        binds its Lock's methods to the C semaphore, and these match it where the package's C
        module was built (``_slotlock``: no Python frame in the uncontended case); otherwise they
        are closures, one Python frame each. ``slow(block=True, timeout=None)`` is the full path
        (the semaphore is taken), ``warn(code)`` reports a dead previous holder; both paths write
        the same words and hand over to them in the same cases."""
        if _slotlock is not None:
            fast = _slotlock.SlotLock(self.address, self.code, self.recursive, self.anchor, slow, warn)
            return fast.acquire, fast.release
        w, code, recursive = self.w, self.code, self.recursive
        trywait, post, ident = self.sem.acquire, self.sem.release, threading.get_ident

        def acquire(block: bool = True, timeout: float | None = None) -> bool:
            tid = ident()
            if recursive and w[H] == code and w[T] == tid:
                w[C] += 1
                return True
            if not trywait(False):
                return slow(block, timeout)
            w[H], w[T], w[C] = code, tid, 1
            dead = w[A]
            if not dead:
                return True
            w[A] = 0
            return warn(dead)

        def release() -> None:
            if recursive:
                if w[H] != code or w[T] != ident():
                    raise AssertionError("attempt to release recursive lock not owned by thread")
                if w[C] > 1:
                    w[C] -= 1
                    return
            saved = w[H], w[T], w[C]
            w[H] = w[T] = w[C] = 0
            try:
                post()                      # ValueError when it was not held
            except ValueError:
                w[H], w[T], w[C] = saved
                raise

        return acquire, release

    def is_mine(self, code: int, tid: int) -> bool:
        return self.w[H] == code and self.w[T] == tid

    def state(self, code: int, tid: int) -> tuple:
        """(held, held by the caller, count), as the server's lock answers it."""
        w = self.w
        held = w[H] != 0 or self.sem._get_value() == 0
        return held, self.is_mine(code, tid), w[C]


# ------------------------------------------------------------------ the server's side
class FastArenas:
    """The state server's memfds, their free slots, and the owner codes (all under the server's mutex)."""

    def __init__(self):
        self.arenas: list[_Arena] = []
        self.free: list[tuple[int, int]] = []
        self.codes: dict[str, int] = {}
        self.owners: dict[int, str] = {}
        self.pids: dict[int, int] = {}       # code -> pid on this host (socket peers only)

    def alloc(self) -> tuple[int, int]:
        if not self.free:
            fd = os.memfd_create("jpar-mp-sync", os.MFD_CLOEXEC)
            os.ftruncate(fd, ARENA_BYTES)
            self.arenas.append(_Arena(fd, ARENA_BYTES))
            i = len(self.arenas) - 1
            self.free = [(i, off) for off in range(ARENA_BYTES - SLOT, -1, -SLOT)]
        i, off = self.free.pop()
        self.arenas[i].mm[off:off + SLOT] = bytes(SLOT)
        return i, off

    def alloc_data(self, size: int) -> tuple[int, int]:
        """Room for a Value's or Array's bytes: a slot, or a memfd of its own past a slot's size."""
        if size <= SLOT:
            return self.alloc()
        fd = os.memfd_create("jpar-mp-value", os.MFD_CLOEXEC)
        n = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        os.ftruncate(fd, n)
        self.arenas.append(_Arena(fd, n))
        return len(self.arenas) - 1, 0

    def free_data(self, where: tuple[int, int]) -> None:
        """A freed Value's slot is not reused (see FastLockState.free); a memfd of its own is closed,
        and its memory goes with the last mapping (clients keep theirs until they exit)."""
        arena = self.arenas[where[0]]
        if arena.size != ARENA_BYTES and arena.fd >= 0:
            os.close(arena.fd)
            arena.fd = -1
            arena.words.release()
            arena._anchor = None
            try:
                arena.mm.close()
            except BufferError:   # a ctypes object over it is still referenced here: it goes with it
                pass

    def new_sem(self, value: int, maxvalue: int, recursive: bool) -> FastSem:
        i, off = self.alloc()
        arena = self.arenas[i]
        if _init(arena.base + off, 1, value) != 0:
            self.free.append((i, off))
            raise OSError(ctypes.get_errno(), "sem_init failed")
        fs = FastSem(arena, off, maxvalue, recursive, None)
        fs.where = (i, off)
        return fs

    def code(self, owner: str, pid: int | None) -> int:
        c = self.codes.get(owner)
        if c is None:
            c = self.codes[owner] = len(self.codes) + 1
            self.owners[c] = owner
        if pid is not None:
            self.pids[c] = pid
        return c

    def dead(self, code: int) -> bool:
        """Whether the owner is known to have died (only socket peers on this host can be checked)."""
        from .server import _pid_alive

        pid = self.pids.get(code)
        return pid is not None and not _pid_alive(pid)


class FastLockState(_State):
    """Server-side Lock / RLock / Semaphore / BoundedSemaphore on a slot (see objects._State)."""

    unlocked_ops = frozenset({"acquire", "release", "get_value", "is_mine", "state"})

    def __init__(self, server, kind: str, recursive: bool = False, value: int = 1, bounded: bool = False):
        import _multiprocessing

        super().__init__(server)
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.kind = kind
        self.recursive = recursive
        if kind == "lock":
            maxvalue = 1
        else:
            maxvalue = value if bounded else _multiprocessing.SemLock.SEM_VALUE_MAX
        self.maxvalue = maxvalue
        arenas = server.fast_arenas()
        self.fs = arenas.new_sem(value, maxvalue, recursive)
        self.entries: dict[int, tuple[int, int]] = {}   # semaphore: owner code -> its entry slot
        self.views: dict[int, FastSem] = {}             # semaphore: owner code -> a view with that entry

    # ---- what every state has
    def drop_owner(self, owner: str) -> None:
        code = self.server.fast_arenas().codes.get(owner)
        if code is not None:
            self._reap(code)

    def free(self) -> None:
        """Nothing: a freed object's slot is not reused, as a handle kept somewhere would then
        operate another object's semaphore (64 bytes per freed object, until the server ends)."""

    # ---- ops under the server's mutex
    def op_fast_info(self, who, gone):
        """Where the slot lives and this owner's code (and, for a semaphore, its entry)."""
        arenas = self.server.fast_arenas()
        code = arenas.code(who[0], self.server.peer_pids.get(who[0]))
        entry = self._entry(code)
        i, off = self.fs.where
        return i, off, entry, code, self.maxvalue, self.recursive

    def op_owner_name(self, who, gone, code):
        return self.server.fast_arenas().owners.get(code, "an unknown process")

    def op_reap(self, who, gone):
        """Release what owners that died still hold (what a waiter asks after each slice)."""
        arenas = self.server.fast_arenas()
        if self.kind == "lock":
            holder = self.fs.w[H]
            if holder and arenas.dead(holder):
                self._reap(holder)
        else:
            for code in list(self.entries):
                if arenas.dead(code):
                    self._reap(code)

    def _entry(self, code: int) -> tuple[int, int] | None:
        if self.kind == "lock":
            return None
        where = self.entries.get(code)
        if where is None:
            where = self.entries[code] = self.server.fast_arenas().alloc()
        return where

    def _reap(self, code: int) -> None:
        w = self.fs.w
        if self.kind == "lock":
            if w[H] != code:
                return
            w[H] = w[T] = w[C] = 0
            w[A] = code
            try:
                self.fs.sem.release()
            except ValueError:   # someone released it meanwhile
                pass
            return
        where = self.entries.get(code)
        if where is None:
            return
        units = self.server.fast_arenas().arenas[where[0]].words[where[1] // 8:where[1] // 8 + 1]
        n, units[0] = units[0], 0
        if n > 0:
            w[A] = code
            for _ in range(n):
                try:
                    self.fs.sem.release()
                except ValueError:
                    break

    # ---- ops outside the mutex: for callers that cannot map the slot (other hosts)
    def _view(self, who) -> tuple[FastSem, int]:
        with self.server.mutex:
            arenas = self.server.fast_arenas()
            code = arenas.code(who[0], self.server.peer_pids.get(who[0]))
            if self.kind == "lock":
                return self.fs, code
            view = self.views.get(code)
            if view is None:
                i, off = self.fs.where
                ei, eoff = self._entry(code)
                view = self.views[code] = FastSem(arenas.arenas[i], off, self.maxvalue, False,
                                                  (arenas.arenas[ei], eoff))
            return view, code

    def op_acquire(self, who, gone, block=True, timeout=None):
        view, code = self._view(who)

        def reap():
            if gone is not None and gone():
                raise _CallerGone()
            with self.server.mutex:
                self.op_reap(who, None)

        result = view.acquire(code, who[1], timeout if block else 0, reap)
        if result is True or result is False:
            return result
        with self.server.mutex:
            return self.op_owner_name(who, None, result)

    def op_release(self, who, gone):
        view, code = self._view(who)
        view.release(code, who[1])

    def op_get_value(self, who, gone):
        return self.fs.sem._get_value()

    def op_is_mine(self, who, gone):
        view, code = self._view(who)
        return view.is_mine(code, who[1])

    def op_state(self, who, gone):
        view, code = self._view(who)
        return view.state(code, who[1])

    # ---- what a Condition over this lock needs (its ops run under the server's mutex)
    def cond_holds(self, who) -> bool:
        code = self.server.fast_arenas().codes.get(who[0])
        return code is not None and self.fs.is_mine(code, who[1])

    def cond_release(self, who) -> int:
        w = self.fs.w
        saved = w[C]
        w[H] = w[T] = w[C] = 0
        self.fs.sem.release()
        return saved

    def cond_reacquire(self, who, saved: int, gone) -> None:
        """Take the lock back for ``who`` (the server's mutex released while it waits)."""
        code = self.server.fast_arenas().codes[who[0]]
        mutex = self.server.mutex
        mutex.release()
        try:
            def reap():
                with mutex:
                    self.op_reap(who, None)
            self.fs.acquire(code, who[1], None, reap)
        finally:
            mutex.acquire()
        self.fs.w[C] = saved


# ------------------------------------------------------------------ events: a futex word in a slot
# An Event is a 32-bit flag (0 or 1) at the start of a slot. A waiter sleeps in futex(2) on that word
# until it is no longer 0: the kernel checks the word and queues the waiter atomically, so a set()
# that stores 1 and then wakes every sleeper can never be missed, and nothing polls. The futex is a
# shared one (no FUTEX_PRIVATE_FLAG): the word is in a memfd that several processes map.
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_WAKE_ALL = (1 << 31) - 1
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98, "ppc64le": 221, "s390x": 238}
_futex = None


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def events_available() -> bool:
    """The fast path of locks (:func:`available`) and the futex system call of this machine."""
    global _futex
    if not available():
        return False
    if _futex is None:
        _futex = False
        nr = _SYS_FUTEX.get(os.uname().machine)
        if nr is not None:
            try:
                fn = ctypes.CDLL(None, use_errno=True).syscall
            except (OSError, AttributeError):
                fn = None
            if fn is not None:
                # syscall(2) is variadic; every argument is a register-wide integer or a pointer on
                # the 64-bit Linux ABIs above, so declaring them lets ctypes convert plain ints fast
                fn.restype = ctypes.c_long
                fn.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_long,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)
                _futex = functools.partial(fn, nr)
    return bool(_futex)


class FastEvent:
    """An Event's flag in a slot, as a process (client or server) operates it."""

    def __init__(self, arena: _Arena, offset: int):
        self.flag = memoryview(arena.mm)[offset:offset + 4].cast("i")
        self.addr = arena.base + offset

    def is_set(self) -> bool:
        return self.flag[0] == 1

    def set(self) -> None:
        """Store 1, then wake the sleepers (always: skipping the wake when nobody seems to sleep
        would need a memory fence between the store and that check, which Python cannot issue).
        Already set: nothing; this set is then ordered before whatever clear() comes next."""
        if self.flag[0] != 1:
            self.flag[0] = 1
            _futex(self.addr, _FUTEX_WAKE, _WAKE_ALL, None, None, 0)

    def clear(self) -> None:
        self.flag[0] = 0

    def wait(self, timeout: float | None = None) -> bool:
        """The flag once it is set, or after ``timeout`` seconds (None: for ever)."""
        return self.flag[0] == 1 or self.wait_checked(timeout, None, None)

    def wait_checked(self, timeout: float | None, check, every: float | None) -> bool:
        """:meth:`wait`, running ``check()`` after each ``every`` seconds slept (the server: does
        its caller still listen?)."""
        flag = self.flag
        if flag[0] == 1:
            return True
        if timeout is not None and timeout <= 0:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        ts = _Timespec()
        while flag[0] != 1:
            step = every
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                step = left if step is None else min(step, left)
            if step is None:   # returns at once if the flag is not 0 any more
                _futex(self.addr, _FUTEX_WAIT, 0, None, None, 0)
            else:
                ts.tv_sec, ts.tv_nsec = int(step), int((step % 1) * 1e9)
                if _futex(self.addr, _FUTEX_WAIT, 0, ctypes.addressof(ts), None, 0) != 0 and check:
                    check()   # a timeout (or a signal): not woken by set()
        return True


class FastEventState(_State):
    """Server-side Event on a slot: what processes of other hosts reach through the server."""

    unlocked_ops = frozenset({"wait"})

    def __init__(self, server):
        super().__init__(server)
        arenas = server.fast_arenas()
        self.where = arenas.alloc()
        self.fe = FastEvent(arenas.arenas[self.where[0]], self.where[1])

    def free(self) -> None:
        """Nothing: the slot is not reused (see FastLockState.free)."""

    def op_fast_info(self, who, gone):
        return self.where

    def op_set(self, who, gone):
        self.fe.set()

    def op_clear(self, who, gone):
        self.fe.clear()

    def op_is_set(self, who, gone):
        return self.fe.is_set()

    def op_wait(self, who, gone, timeout=None):
        from .objects import _WAIT_SLICE

        def check():
            if gone is not None and gone():
                raise _CallerGone()

        return self.fe.wait_checked(timeout, check, _WAIT_SLICE)


# ------------------------------------------------------------------ the client's side
def open_fast(handle) -> FastSem | None:
    """The object's slot mapped in this process, or None where it must go through the server
    (another host, no local socket, no fast path there). Cached per process and object."""
    return _opened(handle, handle._oid, _sem_over)


def _sem_over(client, info) -> FastSem | None:
    arena_id, offset, entry, code, maxvalue, recursive = info
    arena = client.arena(arena_id, _map)
    if entry is not None:
        entry = client.arena(entry[0], _map), entry[1]
    if arena is not None and (entry is None or entry[0] is not None):
        return FastSem(arena, offset, maxvalue, recursive, entry, code)
    return None


def open_event(handle) -> FastEvent | None:
    """An Event's flag mapped in this process, or None where it goes through the server."""
    def over(client, where):
        arena = client.arena(where[0], _map)
        return FastEvent(arena, where[1]) if arena is not None else None

    return _opened(handle, handle._oid, over) if events_available() else None


def _opened(handle, key, make):
    """What ``make(client, fast_info)`` builds over the object's shared memory in this process, or
    None where its accesses go through the server; asked once per process and key."""
    client = handle._client
    cache = client.fast_cache()
    got = cache.get(key, _MISSING)
    if got is not _MISSING:
        return got
    got = None
    from . import server

    if not server.IN_SERVER and available() and client.local():
        info = client.call("fast_info", handle._oid)
        if info is not None:
            got = make(client, info)
    cache[key] = got
    return got


def _map(fd: int, size: int) -> _Arena:
    return _Arena(fd, size)


def open_data(handle, ctype):
    """A Value's or Array's ctypes object over its bytes mapped in this process, or None where its
    accesses go through the server (as :func:`open_fast`)."""
    def over(client, info):
        arena = client.arena(info[0], _map)
        return ctype.from_buffer(arena.mm, info[1]) if arena is not None else None

    return _opened(handle, ("data", handle._oid), over)
