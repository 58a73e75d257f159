"""A concurrent.futures.Executor whose calls run as tasks on the jpar cluster.

``jpar.futures.Executor`` (alias ``ProcessPoolExecutor``) takes ``ProcessPoolExecutor``'s
arguments. Its futures are ordinary ``concurrent.futures.Future`` objects (they work with
``concurrent.futures.wait`` and ``as_completed``) that also carry the task's ``ObjectRef``
as ``.ref``, so a result can be passed on to other jpar tasks without fetching it.

Data flow: ``submit`` -> ``jpar.submitter.Submitter`` (at most ``window`` tasks in flight, the rest
queued locally) -> engine -> ``ref.future()`` done-callback -> the executor's completion thread
-> ``Future.set_result`` / ``set_exception`` (done-callbacks run on that thread, not on jpar's
receiver thread). ``Future.cancel()`` drops a queued call, or cancels the task if it is already
on the cluster (a running task gets KeyboardInterrupt on its engine).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from jpar import submitter as _pool

try:  # the stdlib's own remote-traceback type, so tracebacks print as ProcessPoolExecutor's do
    from concurrent.futures.process import _RemoteTraceback as _TracebackType
except ImportError:  # pragma: no cover - it has been there since 3.7
    _TracebackType = _pool.RemoteTraceback

__all__ = ["Executor", "Future", "executor"]


class Future(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` for a jpar task; ``.ref`` is the task's ObjectRef."""

    def __init__(self):
        super().__init__()
        self._ticket: _pool.Ticket | None = None
        self._submitter: _pool.Submitter | None = None

    @property
    def ref(self):
        """The task's ``jpar.ObjectRef`` (None while the call is still queued locally)."""
        t = self._ticket
        return None if t is None else t.ref

    def cancel(self) -> bool:
        """Cancel the call: True unless it already finished. A queued call never runs; one
        already running on an engine is interrupted (unlike ProcessPoolExecutor, which
        cannot cancel running calls)."""
        if not super().cancel():
            return False
        self.set_running_or_notify_cancel()   # wake concurrent.futures.wait / as_completed
        t, sub = self._ticket, self._submitter
        if t is not None and sub is not None:
            sub.cancel(t)
        return True


class Executor(concurrent.futures.Executor):
    """``concurrent.futures.ProcessPoolExecutor`` on the jpar cluster (started if none runs).

    max_workers: how many calls may run at once (default: all the cluster's CPUs).
    mp_context: accepted for compatibility and ignored (engines already exist).
    initializer, initargs: ``initializer(*initargs)`` runs once in each engine process, the
        first time it runs a call of this executor. If it raises, the executor is broken
        (``BrokenProcessPool``), as the stdlib's is.
    max_tasks_per_child: accepted and validated; engines are shared and not recycled.
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable | None = None, initargs: tuple = (), *,
                 max_tasks_per_child: int | None = None):
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None and (
                not isinstance(max_tasks_per_child, int) or max_tasks_per_child <= 0):
            raise ValueError("max_tasks_per_child must be >= 1")
        cpus = _pool.ensure_cluster()
        self._max_workers = max_workers if max_workers is not None else cpus
        self._workers = min(self._max_workers, cpus)
        window = (self._max_workers if self._max_workers < cpus
                  else max(_pool.PREFETCH_PER_CPU * cpus, _pool.MIN_WINDOW))
        self._setup = None if initializer is None else (uuid.uuid4().hex, initializer, tuple(initargs))
        self._submitter = _pool.Submitter(window, _TracebackType, "jpar-executor")
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: str | bool = False

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` on the cluster; returns a Future."""
        return self._submit((self._setup, fn, (args, kwargs), _pool.MODE_APPLY))

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int | None = None) -> Iterator:
        """``map(fn, *iterables)`` on the cluster, results in order.

        All calls are submitted at once, in chunks of ``chunksize`` items per task (None: about
        four chunks per worker). ``timeout`` (seconds, from this call) raises TimeoutError.
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        items = list(zip(*iterables))
        if chunksize is None:
            chunksize = _pool.default_chunksize(len(items), self._workers)
        if len(items) > chunksize:
            fn = _pool.ship(fn)   # pickled once for all chunks
        fs = [self._submit((self._setup, fn, items[i:i + chunksize], _pool.MODE_STARMAP))
              for i in range(0, len(items), chunksize)]
        del items

        def result_iterator():
            try:
                fs.reverse()
                while fs:
                    f = fs.pop()
                    if end_time is None:
                        values = f.result()[1]
                    else:
                        values = f.result(end_time - time.monotonic())[1]
                    del f
                    values.reverse()
                    while values:
                        yield values.pop()   # hold no reference to what was yielded
            finally:
                for f in fs:
                    f.cancel()

        return result_iterator()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls. cancel_futures: cancel the calls not yet sent to the cluster
        (calls already on the cluster complete). wait: block until every call finished.
        The cluster keeps running; ``jpar.shutdown()`` stops it."""
        with self._lock:
            self._shutdown = True
        sub = self._submitter
        if cancel_futures:
            for t in sub.drain_pending():
                completion = getattr(t.on_done, "__self__", None)
                t.on_done = None
                if isinstance(completion, _Completion):
                    completion.future.cancel()
        if wait:
            sub.wait_idle()
        sub.stop_when_idle()

    def statistics(self) -> dict:
        """How many calls are queued locally, on the cluster, and launched so far."""
        sub = self._submitter
        with sub._lock:
            return {"queued": len(sub._pending), "in_flight": len(sub._inflight), "launched": sub.launched,
                    "window": sub.window}

    def __repr__(self) -> str:
        state = "shutdown" if self._shutdown else ("broken" if self._broken else "running")
        return f"<jpar.futures.Executor {state} max_workers={self._max_workers}>"

    # -- internals -------------------------------------------------------------------------

    def _submit(self, args: tuple) -> Future:
        with self._lock:
            if self._broken:
                raise BrokenProcessPool(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            fut = Future()
        done = _Completion(self, fut)
        fut._submitter = self._submitter
        fut._ticket = self._submitter.submit(args, done.on_done)
        return fut

    def _break(self, cause: BaseException) -> None:
        """The initializer failed: fail what is queued and refuse new work, as the stdlib does."""
        with self._lock:
            if self._broken:
                return
            self._broken = ("A process in the pool failed to run the initializer: "
                            f"{type(cause).__name__}: {cause}")
        for t in self._submitter.drain_pending():
            done, t.on_done = t.on_done, None
            if done is not None:
                done(False, cause)


class _Completion:
    """Moves one task's outcome into its Future (on the executor's completion thread)."""

    __slots__ = ("executor", "future")

    def __init__(self, executor: Executor, future: Future):
        self.executor = executor
        self.future = future

    def on_done(self, ok: bool, value: Any) -> None:
        ex, fut = self.executor, self.future
        if fut.done():          # cancelled meanwhile
            return
        if not ok and _is_initializer_failure(value):
            ex._break(value)
            err = BrokenProcessPool(ex._broken)
            err.__cause__ = value
            value = err
        try:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass                # cancelled between the check and the set


def _is_initializer_failure(exc: BaseException) -> bool:
    # unwrap_error turned the engine's InitializerError into the initializer's own exception;
    # the task error's cause chain still tells.
    return getattr(exc, "_jpar_initializer_failed", False)


def executor(max_workers: int | None = None, **kwargs: Any) -> Executor:
    """A ``concurrent.futures.Executor`` on the current jpar cluster (``jpar.futures.Executor``)."""
    return Executor(max_workers, **kwargs)
