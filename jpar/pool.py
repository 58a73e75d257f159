"""multiprocessing.Pool's API on a jpar cluster: chunks of work become tasks the cluster balances.

Built on the public API only (``jpar.remote``, ``ObjectRef.future``, ``jpar.cancel``), so a pool
spans every engine of the current cluster, remote hosts included. Data flow::

    Pool.map_async(func, items)               Pool.imap(func, generator)
      |  split into chunks (default:             |  feeder thread: chunks grow until
      |  ~4 per CPU, as the stdlib does)         |  each takes ~TARGET_CHUNK_SECONDS
      v                                          v
    _Submitter ----- at most `window` chunk tasks in flight ----> engines: _run_task()
      |  the rest wait in a local deque                             |  (_run_batch: calls that
      |  (cheap to cancel: terminate, shutdown) and leave           |  queued, one task), the
      |  in batches as the window frees                             |  initializer once per
      |                                                             |  engine process per pool
      ^                                                             v
    completion thread <-- ref.future() done-callback (receiver thread) <-- result/exception
      |  launch the next pending chunk, then store the chunk's values in its
      |  ApplyResult / MapResult / IMapIterator, run user callbacks, wake get()/next()
      v
    AsyncResult.get(timeout) / IMapIterator.next(timeout)

Balancing is dynamic: there is no round-robin assignment of chunks to workers; every chunk is
an ordinary task, and the cluster's scheduler hands it to whichever engine is free.
User callbacks run on the pool's completion thread, never on jpar's receiver thread, so a
callback may itself call ``jpar.get`` or submit more work.
"""

from __future__ import annotations

import builtins
import collections
import itertools
import logging
import multiprocessing
import multiprocessing.pool as _mp_pool
import threading
import time
import uuid
import warnings
from typing import Any, Callable, Iterable, Iterator

from jpar.errors import JparError

__all__ = [
    "Pool",
    "AsyncResult",
    "ApplyResult",
    "MapResult",
    "IMapIterator",
    "IMapUnorderedIterator",
    "TimeoutError",
    "RemoteTraceback",
    "MaybeEncodingError",
    "INIT",
    "RUN",
    "CLOSE",
    "TERMINATE",
]

_log = logging.getLogger("jpar.pool")

# The stdlib's state names, so code (and tests) that read ``pool._state`` keep working.
INIT, RUN, CLOSE, TERMINATE = _mp_pool.INIT, _mp_pool.RUN, _mp_pool.CLOSE, _mp_pool.TERMINATE
RemoteTraceback = _mp_pool.RemoteTraceback
MaybeEncodingError = _mp_pool.MaybeEncodingError

class TimeoutError(multiprocessing.TimeoutError, JparError, builtins.TimeoutError):
    """A pool result was not ready in time.

    Is ``multiprocessing.TimeoutError`` (what the stdlib pool raises), the builtin
    ``TimeoutError`` and a ``jpar.JparError``, so every existing ``except`` clause catches it.
    """

from .submitter import (MAX_ADAPTIVE_CHUNK, MIN_WINDOW, MODE_APPLY, MODE_MAP, MODE_STARMAP, PREFETCH_PER_CPU,
                        TARGET_CHUNK_SECONDS, Submitter, cancelled_error, default_chunksize, ensure_cluster, ship)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class ApplyResult:
    """What ``apply_async`` returns: the stdlib's ``AsyncResult`` API."""

    def __init__(self, callback: Callable | None = None, error_callback: Callable | None = None):
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success: bool | None = None
        self._value: Any = None

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds (forever if None) for the result."""
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The result; raises the task's exception, or ``TimeoutError`` after ``timeout`` seconds."""
        self.wait(timeout)
        if not self.ready():
            raise TimeoutError(f"the result was not ready within {timeout} s; call get() again "
                               "to keep waiting")
        if self._success:
            return self._value
        raise self._value

    def _set(self, ok: bool, value: Any) -> None:
        self._success, self._value = ok, value
        cb = self._callback if ok else self._error_callback
        self._callback = self._error_callback = None
        if cb is not None:
            try:
                cb(value)
            except Exception:
                _log.exception("exception in a Pool %s", "callback" if ok else "error_callback")
        self._event.set()

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("ok" if self._success else "failed")
        return f"<jpar.pool.{type(self).__name__} {state}>"


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    """What ``map_async``/``starmap_async`` return: one list, in input order."""

    def __init__(self, n_chunks: int, callback=None, error_callback=None):
        super().__init__(callback, error_callback)
        self._lock = threading.Lock()
        self._chunks: list | None = [None] * n_chunks
        self._left = n_chunks
        if n_chunks == 0:
            self._set(True, [])

    def _chunk_done(self, i: int, ok: bool, value: Any) -> None:
        with self._lock:
            if self._chunks is None:    # an earlier chunk failed: the map already failed
                return
            if ok:
                self._chunks[i] = value[1]
                self._left -= 1
                if self._left:
                    return
                chunks, self._chunks = self._chunks, None
            else:
                self._chunks = None
        if ok:
            self._set(True, list(itertools.chain.from_iterable(chunks)))
        else:
            self._set(False, value)


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class IMapIterator:
    """What ``imap`` returns: results in input order, each as soon as it and those before it arrived."""

    _ordered = True

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._items: collections.deque = collections.deque()
        self._waiting: dict[int, tuple[bool, Any]] = {}
        self._next_chunk = 0            # ordered: the next chunk to move into _items
        self._flushed = 0               # chunks moved into _items
        self._total: int | None = None  # number of chunks, once the input is exhausted

    def __iter__(self) -> "IMapIterator":
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting up to ``timeout`` seconds; raises ``TimeoutError``."""
        with self._cond:
            if not self._items:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._items:
                    if self._total is not None and self._flushed >= self._total:
                        raise StopIteration
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"no result within {timeout} s; call next() again to keep waiting")
                    self._cond.wait(remaining)
            item = self._items.popleft()
        if type(item) is _Raise:
            raise item.exc
        return item

    __next__ = next

    def _flush(self, ok: bool, value: Any) -> None:
        if ok:
            self._items.extend(value[1])
        else:
            self._items.append(_Raise(value))
        self._flushed += 1

    def _chunk_done(self, i: int, ok: bool, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._waiting[i] = (ok, value)
                while self._next_chunk in self._waiting:
                    self._flush(*self._waiting.pop(self._next_chunk))
                    self._next_chunk += 1
            else:
                self._flush(ok, value)
            self._cond.notify_all()

    def _set_length(self, n_chunks: int) -> None:
        with self._cond:
            self._total = n_chunks
            self._cond.notify_all()


class IMapUnorderedIterator(IMapIterator):
    """What ``imap_unordered`` returns: results in the order they arrive."""

    _ordered = False


# ---------------------------------------------------------------------------------------------
# Pool
# ---------------------------------------------------------------------------------------------



def next_chunk_size(size: int, per_item: float) -> int:
    """The next adaptive chunk's size: what takes about TARGET_CHUNK_SECONDS at ``per_item`` engine
    seconds per item, growing at most twofold per chunk, at least one item, at most MAX_ADAPTIVE_CHUNK."""
    ideal = int(TARGET_CHUNK_SECONDS / per_item) if per_item > 0 else MAX_ADAPTIVE_CHUNK
    return max(1, min(ideal, 2 * size, MAX_ADAPTIVE_CHUNK))

class Pool:
    """``multiprocessing.Pool`` on the jpar cluster (started if none is running).

    processes: how many chunks may run at once (default: all the cluster's CPUs). Values above
        the cluster's CPU count are accepted; concurrency is then the CPU count.
    initializer, initargs: ``initializer(*initargs)`` runs once in each engine process, the first
        time that process runs a task of this pool.
    maxtasksperchild: accepted and validated like the stdlib's; engines are shared, long-lived
        cluster processes, so they are not recycled (see docs/dropins.md).
    context: accepted for compatibility and ignored (there is no start method: engines exist).
    """

    def __init__(self, processes: int | None = None, initializer: Callable | None = None,
                 initargs: Iterable = (), maxtasksperchild: int | None = None, context: Any = None):
        self._state = INIT
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or isinstance(maxtasksperchild, bool)
                or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        cpus = ensure_cluster()
        self._processes = processes if processes is not None else cpus
        self._workers = min(self._processes, cpus)
        # calls beyond the window queue here and leave in batches (see Submitter)
        window = self._processes if self._processes < cpus else max(PREFETCH_PER_CPU * cpus, MIN_WINDOW)
        self._maxtasksperchild = maxtasksperchild
        self._setup = None
        if initializer is not None:
            self._setup = (uuid.uuid4().hex, initializer, tuple(initargs))
        self._submitter = Submitter(window, RemoteTraceback, "jpar-pool", batch_over=self._workers)
        self._feeders: set[threading.Thread] = set()
        self._feeders_lock = threading.Lock()
        self._stop_feeding = threading.Event()
        self._state = RUN

    # -- public API ------------------------------------------------------------------------

    def apply(self, func: Callable, args: tuple = (), kwds: dict = {}) -> Any:
        """``func(*args, **kwds)`` on an engine; blocks until the result is ready."""
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable, args: tuple = (), kwds: dict = {},
                    callback: Callable | None = None, error_callback: Callable | None = None) -> ApplyResult:
        self._check_running()
        result = ApplyResult(callback, error_callback)
        self._submitter.submit((self._setup, func, (tuple(args), dict(kwds)), MODE_APPLY), result._set,
                               callback is None and error_callback is None)
        return result

    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``list(map(func, iterable))`` with the calls spread over the cluster."""
        return self._map_async(func, iterable, MODE_MAP, chunksize).get()

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None, error_callback: Callable | None = None) -> MapResult:
        return self._map_async(func, iterable, MODE_MAP, chunksize, callback, error_callback)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """Like ``map``, but each item is unpacked: ``func(*item)``."""
        return self._map_async(func, iterable, MODE_STARMAP, chunksize).get()

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None, error_callback: Callable | None = None) -> MapResult:
        return self._map_async(func, iterable, MODE_STARMAP, chunksize, callback, error_callback)

    def imap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> IMapIterator:
        """Results in input order, each yielded as soon as it (and those before it) arrived.

        chunksize None: about four chunks per worker for a sized input; for a generator, chunks
        start at one item and grow until each takes about 10 ms on an engine.
        """
        return self._imap(IMapIterator(), func, iterable, chunksize)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int | None = None) -> IMapUnorderedIterator:
        """Like ``imap``, but results come in the order they finish."""
        return self._imap(IMapUnorderedIterator(), func, iterable, chunksize)

    def close(self) -> None:
        """Accept no more work; queued and running work still completes."""
        if self._state == RUN:
            self._state = CLOSE
        self._submitter.stop_when_idle()

    def terminate(self) -> None:
        """Stop now: queued chunks are dropped and running ones cancelled; their results fail
        with ``jpar.TaskCancelledError``."""
        self._state = TERMINATE
        self._stop_feeding.set()
        sub = self._submitter
        err = cancelled_error("this Pool task (the pool was terminated)")
        for t in sub.drain_pending():
            on_done, t.on_done = t.on_done, None
            if on_done is not None:
                sub._call(on_done, False, err)
        for t in sub.inflight():
            sub.cancel(t, force=True)
        sub.stop_when_idle()

    def join(self, timeout: float | None = None) -> None:
        """Wait until all work finished (after ``close()`` or ``terminate()``)."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state not in (CLOSE, TERMINATE):
            raise ValueError("In unknown state")
        with self._feeders_lock:
            feeders = list(self._feeders)
        for f in feeders:
            f.join(timeout)
        self._submitter.wait_idle(timeout)

    def __enter__(self) -> "Pool":
        self._check_running()
        return self

    def __exit__(self, *exc_info) -> None:
        self.terminate()

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} state={self._state} pool_size={self._processes}>"

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        if getattr(self, "_state", None) == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)
            sub = getattr(self, "_submitter", None)
            if sub is not None:
                sub.stop_when_idle()

    # -- internals -------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    @staticmethod
    def _check_chunksize(chunksize: int | None) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")

    def _map_async(self, func, iterable, mode, chunksize, callback=None, error_callback=None) -> MapResult:
        self._check_running()
        self._check_chunksize(chunksize)
        if not isinstance(iterable, (list, tuple, range)):
            iterable = list(iterable)
        n = len(iterable)
        if chunksize is None:
            chunksize = default_chunksize(n, self._workers)
        n_chunks = -(-n // chunksize)
        result = MapResult(n_chunks, callback, error_callback)
        submit, setup, done = self._submitter.submit, self._setup, result._chunk_done
        inline = callback is None and error_callback is None
        if n_chunks > 1:
            func = ship(func)
        for i in range(n_chunks):
            chunk = iterable[i * chunksize:(i + 1) * chunksize]
            submit((setup, func, chunk, mode), lambda ok, v, i=i: done(i, ok, v), inline)
        return result

    def _imap(self, it: IMapIterator, func, iterable, chunksize) -> IMapIterator:
        self._check_running()
        self._check_chunksize(chunksize)
        if isinstance(iterable, (list, tuple, range)):
            n = len(iterable)
            if chunksize is None:
                chunksize = default_chunksize(n, self._workers)
            n_chunks = -(-n // chunksize)
            if n_chunks > 1:
                func = ship(func)
            for i in range(n_chunks):
                self._submit_chunk(it, i, func, iterable[i * chunksize:(i + 1) * chunksize])
            it._set_length(n_chunks)
            return it
        feeder = threading.Thread(target=self._feed, args=(it, ship(func), iter(iterable), chunksize),
                                  name="jpar-pool-feeder", daemon=True)
        with self._feeders_lock:
            self._feeders.add(feeder)
        feeder.start()
        return it

    def _submit_chunk(self, it: IMapIterator, i: int, func, chunk, stats: list | None = None) -> None:
        done = it._chunk_done
        if stats is None:
            on_done = lambda ok, v, i=i: done(i, ok, v)  # noqa: E731
        else:
            def on_done(ok, v, i=i, n=len(chunk)):
                with stats[2]:
                    if ok:
                        stats[0] += v[0]
                        stats[1] = max(stats[1], 0) + n
                    else:
                        stats[1] = stats[1] or -1   # a failed probe: stop waiting, sizes stay put
                    stats[2].notify_all()
                done(i, ok, v)
        self._submitter.submit((self._setup, func, chunk, MODE_MAP), on_done, True)

    def _feed(self, it: IMapIterator, func, source: Iterator, chunksize: int | None) -> None:
        """Feeder thread for an iterable of unknown length: chunk it lazily, with backpressure
        (at most a window's worth of chunks wait locally), growing chunks when adaptive."""
        adaptive = chunksize is None
        size = 1 if adaptive else chunksize
        # engine seconds, items (filled in by completions) and a condition they notify: until the
        # first chunk has been measured, at most two per worker are out, so a deep window
        # cannot fill with one-item tasks on a slow machine before the size adapts
        stats = [0.0, 0, threading.Condition()]
        probe = max(2, 2 * self._workers)
        i = 0
        sub = self._submitter
        try:
            while not self._stop_feeding.is_set():
                if adaptive and i >= probe:
                    with stats[2]:
                        while not stats[1] and not self._stop_feeding.is_set():
                            stats[2].wait(0.5)
                if adaptive and stats[1] > 0:
                    size = next_chunk_size(size, stats[0] / stats[1])
                try:
                    chunk = list(itertools.islice(source, size))
                except Exception as exc:   # the user's iterable raised: that chunk fails
                    it._chunk_done(i, False, exc)
                    i += 1
                    break
                if not chunk:
                    break
                self._submit_chunk(it, i, func, chunk, stats if adaptive else None)
                i += 1
                sub.wait_room(sub.window, self._stop_feeding)
        finally:
            it._set_length(i)
            with self._feeders_lock:
                self._feeders.discard(threading.current_thread())
