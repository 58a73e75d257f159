"""The window of tasks in flight that Pool and Executor share, and the task body engines run.

A ``Submitter`` keeps at most ``window`` chunk tasks in flight and the rest in a local deque
(cheap to cancel); a completion thread launches the next one as each finishes and hands
values to the result objects. ``_run_task`` is the one function every chunk runs on an engine,
running the pool's initializer once per engine process per pool.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import multiprocessing.pool as _mp_pool
import pickle
import queue
import threading
import time
import traceback
from typing import Any, Callable

from jpar import pickling
from jpar.errors import JparError

_log = logging.getLogger("jpar.pool")
RemoteTraceback = _mp_pool.RemoteTraceback
MaybeEncodingError = _mp_pool.MaybeEncodingError

#: chunk tasks in flight per cluster CPU when the pool may use the whole cluster (prefetch)
PREFETCH_PER_CPU = 4
#: ... and never fewer than this many in flight, so small clusters still pipeline
MIN_WINDOW = 16
#: a Pool batches the calls that queue up behind its window (see Submitter): a batch of queued
#: calls is one task, sized so it runs about this long on an engine ...
TARGET_BATCH_SECONDS = 0.02
#: ... holding at most this many calls, and this many until the pool has timed a batch
MAX_BATCH = 1024
FIRST_BATCH = 8
#: imap over an iterable of unknown length: grow chunks until one takes about this long
TARGET_CHUNK_SECONDS = 0.01
#: ... but never beyond this many items per chunk
MAX_ADAPTIVE_CHUNK = 65_536

# ---------------------------------------------------------------------------------------------
# Engine side: the one task body every Pool and Executor chunk runs.
# ---------------------------------------------------------------------------------------------

MODE_MAP, MODE_STARMAP, MODE_APPLY = 0, 1, 2

# Pool tokens whose initializer already ran in this (engine) process.
_initialized_tokens: set[str] = set()


class InitializerError(Exception):
    """Raised on an engine when a pool's initializer failed; carries the original exception."""

    def __init__(self, exc: BaseException, tb: str):
        super().__init__(exc, tb)
        self.exc = exc
        self.tb = tb


def _run_task(setup: tuple | None, func: Callable, payload: Any, mode: int) -> Any:
    """Run one chunk (or one apply call) on an engine.

    ``setup`` is None or ``(token, initializer, initargs)``: the initializer runs the first time
    this engine process sees the token, i.e. once per engine per pool. Map chunks return
    ``(seconds, [values])`` so the driver can size later chunks; apply calls return the value.
    """
    if setup is not None:
        token = setup[0]
        if token not in _initialized_tokens:
            try:
                setup[1](*setup[2])
            except Exception as exc:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                raise InitializerError(exc, tb) from None
            _initialized_tokens.add(token)
    if mode == MODE_APPLY:
        args, kwds = payload
        return func(*args, **kwds)
    if mode < 0:
        return None
    t0 = time.perf_counter()
    if mode == MODE_MAP:
        out = list(map(func, payload))
    else:
        out = list(itertools.starmap(func, payload))
    return time.perf_counter() - t0, out


def _run_batch(setup: tuple | None, items: list) -> tuple[float, bytes]:
    """Run several queued calls of one pool as one task (a batch: see :class:`Submitter`).

    Each call's outcome is kept apart, as if it had been a task of its own: ``(True, value)`` or
    ``(False, (exception, traceback text))``; a call whose value or exception cannot be pickled
    gets its own error (``MaybeEncodingError``, as the stdlib pool gives) and its neighbours keep
    theirs. Returns the engine seconds of the calls (the driver sizes later batches from them) and
    the outcomes pickled once."""
    _run_task(setup, None, ((), {}), -1)            # the pool's initializer, once per engine process
    out = []
    t0 = time.perf_counter()
    for func, payload, mode in items:
        try:
            out.append((True, _run_task(None, func, payload, mode)))
        except Exception as exc:
            out.append((False, (exc, pickling.remote_traceback(exc, 2))))
    seconds = time.perf_counter() - t0
    try:
        return seconds, pickling.cloud_dumps(out)
    except Exception:
        return seconds, pickling.cloud_dumps([_picklable(o) for o in out])


def _picklable(outcome: tuple) -> tuple:
    """One call's outcome as it can travel: an unpicklable value becomes MaybeEncodingError, an
    unpicklable exception a RemoteException naming its type and message."""
    ok, value = outcome
    if not ok:
        exc, tb = value
        return False, (pickling.portable_exception(exc), tb)
    try:
        pickle.loads(pickling.cloud_dumps(value))
        return outcome
    except Exception as err:
        return False, (MaybeEncodingError(err, value), "")


#: engine side: functions of map calls already unpickled here, by digest of their pickle
_shipped: dict[bytes, Callable] = {}
SHIPPED_CACHE = 256


def _shipped_function(key: bytes, blob: bytes) -> Callable:
    """Unpickle a shipped function once per engine process (then every chunk reuses it)."""
    fn = _shipped.get(key)
    if fn is None:
        fn = pickle.loads(blob)
        if len(_shipped) >= SHIPPED_CACHE:
            del _shipped[next(iter(_shipped))]
        _shipped[key] = fn
    return fn


class _Shipped:
    """A map call's function, pickled once for all its chunks (a notebook-defined function is
    pickled by value, which costs more than a small chunk) and unpickled once per engine."""

    __slots__ = ("key", "blob")

    def __init__(self, key: bytes, blob: bytes):
        self.key, self.blob = key, blob

    def __reduce__(self):
        return _shipped_function, (self.key, self.blob)


# ---------------------------------------------------------------------------------------------
# Driver side: helpers shared with jpar.process_executor.
# ---------------------------------------------------------------------------------------------

_remote_run_task = None


def ship(func: Callable) -> Any:
    """``func`` ready to go in many chunk tasks: pickled once now (with its current globals, as
    each map call would), so chunks carry bytes. An unpicklable function is returned unchanged:
    its chunk tasks then fail with the usual pickling error."""
    try:
        blob = pickling.cloud_dumps(func)
    except Exception:
        return func
    return _Shipped(hashlib.blake2b(blob, digest_size=16).digest(), blob)


def remote_run_task():
    """The RemoteFunction for ``_run_task`` (made once: its definition ships once per cluster)."""
    global _remote_run_task
    if _remote_run_task is None:
        import jpar

        _remote_run_task = jpar.remote(_run_task)
    return _remote_run_task


_remote_run_batch = None


def remote_run_batch():
    """The RemoteFunction for ``_run_batch`` (made once, as :func:`remote_run_task`)."""
    global _remote_run_batch
    if _remote_run_batch is None:
        import jpar

        _remote_run_batch = jpar.remote(_run_batch)
    return _remote_run_batch


def ensure_cluster() -> int:
    """Start a local cluster if none is running (as ``multiprocessing.Pool()`` starts workers);
    return the cluster's CPU count."""
    import jpar

    if not jpar.is_initialized():
        jpar.init()
    return max(1, int(jpar.cluster_resources().get("CPU", 1)))


def unwrap_error(err: BaseException, traceback_type: type = RemoteTraceback) -> BaseException:
    """The user's own exception for a failed task, as the stdlib pools give it.

    jpar raises a class deriving from both ``jpar.TaskError`` and the user's type; the stdlib
    raises exactly the user's type with the remote traceback chained as ``__cause__``. Other
    errors (cancellation, a crashed engine, an unpicklable value) are returned unchanged.
    """
    import jpar

    if isinstance(err, jpar.TaskError) and isinstance(err.cause, BaseException):
        exc = err.cause
        if isinstance(exc, InitializerError):
            exc = exc.exc
            try:
                exc._jpar_initializer_failed = True
            except AttributeError:
                pass
        exc.__cause__ = traceback_type('\n"""\n%s"""' % err.remote_traceback.rstrip("\n"))
        return exc
    return err


def _original_pickling_error(exc: BaseException) -> BaseException:
    """The stdlib pool raises the pickling error itself; jpar's SerializationError names the
    argument. Give the former, with the latter's message as a note."""
    import jpar

    orig = exc.__cause__
    if isinstance(exc, jpar.SerializationError) and isinstance(orig, Exception):
        orig.add_note(str(exc))
        return orig
    return exc


def cancelled_error(what: str = "the task") -> BaseException:
    import jpar

    return jpar.TaskCancelledError(what)


def default_chunksize(n: int, workers: int) -> int:
    """The stdlib's rule: about four chunks per worker, so a slow chunk cannot leave the others
    idle for long, while per-task overhead stays amortised over many items."""
    chunksize, extra = divmod(n, workers * 4)
    return chunksize + 1 if extra else max(chunksize, 1)


class Ticket:
    """One task of a Pool/Executor: its arguments until submitted, then its ref.

    inline: ``on_done`` runs no user code, so it may run on jpar's receiver thread."""

    __slots__ = ("args", "on_done", "ref", "state", "inline", "batch")

    PENDING, INFLIGHT, DONE, CANCELLED = range(4)

    def __init__(self, args: tuple, on_done: Callable[[bool, Any], None], inline: bool = False,
                 batch: list | None = None):
        self.args = args
        self.on_done = on_done
        self.ref = None
        self.state = Ticket.PENDING
        self.inline = inline
        self.batch = batch          # a batch's own ticket: the calls' tickets it carries


_PUMP = object()   # completion-thread message: launch queued tasks


class Submitter:
    """Keeps at most ``window`` tasks in flight, queues the rest, and routes completions.

    Completions are handed from jpar's receiver thread to this submitter's own thread
    (started lazily), which submits the next queued task and then runs ``on_done(ok, value)``.

    With ``batch_over`` engines (a Pool's), calls that queued up behind the window leave as
    batches: one task runs several of them (:func:`_run_batch`), as many as take about
    TARGET_BATCH_SECONDS by the pool's own timing, and never so many that fewer than
    ``batch_over`` batches share what is queued. A call submitted while the window has room still
    leaves at once, alone: batching adds no latency, it only amortises a task's cost over the
    calls that were waiting anyway. (An Executor does not batch: its futures cancel one call,
    and a call in a batch could only be cancelled with its batch.)
    """

    def __init__(self, window: int, traceback_type: type = RemoteTraceback, name: str = "jpar-pool",
                 batch_over: int = 0):
        self.window = window
        self.batch_over = batch_over
        self._per_call: float | None = None     # engine seconds per batched call, as last timed
        self._traceback_type = traceback_type
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: collections.deque[Ticket] = collections.deque()
        self._inflight: set[Ticket] = set()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.launched = 0

    # -- submission -----------------------------------------------------------------------

    def submit(self, args: tuple, on_done: Callable[[bool, Any], None], inline: bool = False) -> Ticket:
        t = Ticket(args, on_done, inline)
        with self._lock:
            if len(self._inflight) < self.window and not self._pending:
                t.state = Ticket.INFLIGHT
                self._inflight.add(t)
            else:
                self._pending.append(t)
                return t
        self._launch(t)
        return t

    def _launch(self, t: Ticket) -> None:
        args, t.args = t.args, None          # the task owns its (pickled) arguments now
        try:
            ref = (remote_run_task() if t.batch is None else remote_run_batch()).remote(*args)
            del args
            fut = ref.future()
        except BaseException as exc:         # e.g. an unpicklable argument: fail this task only
            if self._traceback_type is RemoteTraceback:
                exc = _original_pickling_error(exc)
            if t.batch is not None:          # which call could not be pickled: send them one by one
                self._unbatch(t)
                return
            self._ensure_thread()
            self._queue.put((t, None, exc))
            return
        t.ref = ref
        if t.batch is not None:
            for m in t.batch:
                m.ref, m.args = ref, None
        self.launched += 1
        if t.inline:
            fut.add_done_callback(lambda f, t=t: self._finish(t, f, None, False))
        else:
            self._ensure_thread()
            q = self._queue
            fut.add_done_callback(lambda f, t=t: q.put((t, f, None)))

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"{self._name}-results",
                                                    daemon=True)
                    self._thread.start()

    # -- completions -----------------------------------------------------------------------

    def _finish(self, t: Ticket, fut, exc: BaseException | None, on_thread: bool) -> None:
        """Account for a finished task and deliver its outcome. Runs on the completion thread,
        or inline on jpar's receiver thread for tasks whose on_done runs no user code (then
        launching queued tasks is left to the completion thread)."""
        if fut is not None:
            try:
                value, ok = fut.result(), True
            except BaseException as e:
                value, ok = unwrap_error(e, self._traceback_type), False
        else:
            value, ok = exc, False
        nxt: list = []
        pump = False
        with self._lock:
            self._inflight.discard(t)
            t.state = Ticket.DONE
            if self._pending and len(self._inflight) < self.window:
                if on_thread:
                    nxt = self._take_pending()
                else:
                    pump = True
        for n in nxt:
            self._launch(n)
        n = None
        if pump:
            self._ensure_thread()
            self._queue.put(_PUMP)
        on_done, t.on_done = t.on_done, None
        if on_done is not None:
            self._call(on_done, ok, value)
        with self._lock:
            if not self._inflight and not self._pending:
                self._changed.notify_all()
                if self._stopping and not on_thread and self._thread is not None:
                    self._queue.put(None)     # wake the completion thread so it can exit

    def _pump(self) -> None:
        with self._lock:
            nxt = self._take_pending()
        for n in nxt:
            self._launch(n)

    def _take_pending(self) -> list[Ticket]:
        """Move queued calls in flight while the window has room (lock held): one task each, or
        with ``batch_over``, batches of the calls queued for the same pool setup."""
        out = []
        pending, inflight = self._pending, self._inflight
        while pending and len(inflight) < self.window:
            n = pending.popleft()
            n.state = Ticket.INFLIGHT
            if self.batch_over and pending:
                size = self._batch_size(len(pending) + 1)
                setup = n.args[0]
                calls = [n]
                while pending and len(calls) < size and pending[0].args[0] is setup:
                    m = pending.popleft()
                    m.state = Ticket.INFLIGHT
                    calls.append(m)
                if len(calls) > 1:
                    n = Ticket((setup, [m.args[1:] for m in calls]),
                               lambda ok, v, calls=calls: self._fan_out(ok, v, calls),
                               all(m.inline for m in calls), calls)
                    n.state = Ticket.INFLIGHT
            inflight.add(n)
            out.append(n)
        return out

    def _batch_size(self, queued: int) -> int:
        per = self._per_call
        size = FIRST_BATCH if per is None else int(TARGET_BATCH_SECONDS / max(per, 1e-7))
        return max(1, min(size, MAX_BATCH, -(-queued // self.batch_over)))

    def _fan_out(self, ok: bool, value: Any, batch: list) -> None:
        """A batch's outcome, handed to each of its calls as if each had been a task."""
        if ok:
            try:
                seconds, blob = value
                outcomes = pickle.loads(blob)
            except Exception as exc:          # e.g. a value whose class this process cannot import
                ok, value = False, exc
        if not ok:
            outcomes = [(False, value)] * len(batch)
        else:
            per = seconds / len(batch)
            self._per_call = per if self._per_call is None else 0.5 * (self._per_call + per)
        for m, (m_ok, v) in zip(batch, outcomes):
            if not m_ok and ok:               # the call raised on the engine: (exception, traceback)
                v, tb = v
                if tb:
                    v.__cause__ = self._traceback_type('\n"""\n%s"""' % tb.rstrip("\n"))
            m.state = Ticket.DONE
            on_done, m.on_done = m.on_done, None
            if on_done is not None:
                self._call(on_done, m_ok, v)

    def _unbatch(self, t: Ticket) -> None:
        """A batch could not be submitted (a call's arguments cannot be pickled): each of its calls
        goes alone instead, so only the guilty one fails, with the error that names it."""
        with self._lock:
            self._inflight.discard(t)
            self._inflight.update(t.batch)
        for m in t.batch:
            self._launch(m)

    def _run(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is _PUMP:
                self._pump()
            elif item is not None:
                self._finish(*item, True)
            # hold nothing of this task while blocked on the next one (results must be freeable)
            item = None
            with self._lock:
                if self._stopping and not self._inflight and not self._pending:
                    self._thread = None
                    return

    @staticmethod
    def _call(fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception:
            _log.exception("exception in a jpar pool/executor callback")

    # -- control ---------------------------------------------------------------------------

    def wait_room(self, max_pending: int, stop: threading.Event | None = None) -> None:
        """Block while more than ``max_pending`` tasks wait locally (backpressure for feeders)."""
        with self._lock:
            while len(self._pending) > max_pending and not (stop is not None and stop.is_set()):
                self._changed.wait(0.1)

    def cancel(self, t: Ticket, force: bool = False) -> bool:
        """Cancel one task: drop it if still queued here, else ``jpar.cancel`` its ref."""
        import jpar

        with self._lock:
            if t.state == Ticket.PENDING:
                try:
                    self._pending.remove(t)
                except ValueError:
                    pass
                t.state = Ticket.CANCELLED
                t.args = None
                self._changed.notify_all()
                return True
            if t.state != Ticket.INFLIGHT:
                return False
            t.state = Ticket.CANCELLED
            ref = t.ref
        if ref is not None:
            try:
                jpar.cancel(ref, force=force)
            except JparError:
                pass
        return True

    def drain_pending(self) -> list[Ticket]:
        """Remove and return every task not yet submitted to the cluster."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
            for t in out:
                t.state = Ticket.CANCELLED
                t.args = None
            self._changed.notify_all()
        return out

    def inflight(self) -> list[Ticket]:
        with self._lock:
            return list(self._inflight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._changed.wait_for(lambda: not self._inflight and not self._pending, timeout)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._inflight or self._pending)

    def stop_when_idle(self) -> None:
        """Let the completion thread exit once nothing is in flight."""
        with self._lock:
            self._stopping = True
            started = self._thread is not None
        if started:
            self._queue.put(None)
