"""What runs inside Dask worker processes for the dask backend: the task wrapper, the actor host,
the capture of task output, and the worker's own jpar client (nested tasks).

Shipped by reference: the workers import this module (jpar must be installed where the workers
run). Output a task prints is captured under jpar's task id (the ObjectRef id) and sent live to
the drivers with ``Worker.log_event`` on the topic :data:`OUTPUT_TOPIC`; task events for
dashboards go on :data:`EVENTS_TOPIC` while a driver watches (the ``events`` flag of the header).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import ActorDiedError, TaskError
from ...refs import ArgRef

__all__ = ["run_task", "pick", "fail_with", "run_actor_call", "call_outcome", "ActorHost", "engine_id_of", "OUTPUT_TOPIC",
           "EVENTS_TOPIC", "current_task"]

OUTPUT_TOPIC = "jpar-output"
EVENTS_TOPIC = "jpar-events"

_local = threading.local()          # .ctx: the jpar task this thread runs (a _Ctx), .seceded
_fn_cache: dict[int, Any] = {}      # function hash -> the unpickled function (once per process)
_install_lock = threading.Lock()
_installed = False


def dask_setup(worker: Any) -> None:
    """Run by Dask at the start of each worker of a LocalCluster the dask backend starts (a preload):
    the worker ignores SIGINT. It runs in the driver's process group, so Jupyter's interrupt button
    (SIGINT to the kernel's group) or Ctrl-C in a terminal would otherwise kill it mid-task; jpar's
    interrupt handling cancels the cell's tasks instead, and the nanny stops workers with SIGTERM."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def engine_id_of(name: Any, address: str = "") -> int:
    """A worker's jpar engine id, the same in every process: its name when that is an integer
    (LocalCluster names workers 0, 1, ...), else a stable number made from the name."""
    try:
        return int(name)
    except (TypeError, ValueError):
        return zlib.crc32(str(name if name is not None else address).encode()) & 0x7FFFFFFF


class _Ctx:
    """The jpar task a thread runs: where its output and events go, and what its nested tasks carry."""

    __slots__ = ("task_id", "name", "owner", "root", "events", "cluster_id", "engine", "buf", "actor")

    def __init__(self, task_id: int, name: str, owner: int, root: int, events: bool, cluster_id: str,
                 actor: int = 0):
        self.task_id, self.name, self.owner, self.root, self.events = task_id, name, owner, root, events
        self.cluster_id, self.actor = cluster_id, actor
        self.engine = _engine_id()
        self.buf = {"stdout": "", "stderr": ""}


def current_task() -> _Ctx | None:
    return getattr(_local, "ctx", None)


_worker_ref: list = []      # this process's Worker, kept by _install() for threads Dask does not run tasks on


def _worker():
    """The Worker of this process: Dask knows it only in its task threads, so an actor's own thread
    (ActorHost._run) gets the one _install() kept (its output and events were lost otherwise)."""
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        if _worker_ref:
            return _worker_ref[0]
        raise


_engine: list = []


def _engine_id() -> int:
    if not _engine:
        try:
            w = _worker()
            _engine.append(engine_id_of(w.name, w.address))
        except ValueError:
            return -1
    return _engine[0]


def log_event(topic: str, msg: dict) -> None:
    try:
        _worker().log_event(topic, msg)
    except Exception:   # no worker (shutting down): output and events are best effort
        pass


class _Capture:
    """sys.stdout / sys.stderr of a worker process: text written by a thread running a jpar task
    goes to the drivers under that task's id, line by line; anything else to the real stream."""

    def __init__(self, stream: Any, name: str):
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        ctx = getattr(_local, "ctx", None)
        if ctx is None:
            return self._stream.write(text)
        buf = ctx.buf[self._name] + text
        if "\n" in buf:
            cut = buf.rfind("\n") + 1
            _send_output(ctx, self._name, buf[:cut])
            buf = buf[cut:]
        ctx.buf[self._name] = buf
        return len(text)

    def flush(self) -> None:
        ctx = getattr(_local, "ctx", None)
        if ctx is None:
            self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _send_output(ctx: _Ctx, stream: str, text: str) -> None:
    log_event(OUTPUT_TOPIC, {"owner": ctx.owner, "root": ctx.root, "task": ctx.task_id, "engine": ctx.engine,
                             "pid": os.getpid(), "name": ctx.name, "stream": stream, "text": text})


def _flush(ctx: _Ctx) -> None:
    for stream in ("stdout", "stderr"):
        if ctx.buf[stream]:
            _send_output(ctx, stream, ctx.buf[stream])
            ctx.buf[stream] = ""


def _install() -> None:
    """Once per worker process: capture output, and give jpar's API a client (nested tasks)."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        try:
            _worker_ref.append(_worker())
        except ValueError:
            pass
        sys.stdout = _Capture(sys.stdout, "stdout")
        sys.stderr = _Capture(sys.stderr, "stderr")
        from .. import set_engine_client
        from . import engine_backend

        set_engine_client(engine_backend)
        _installed = True


class _Events:
    """Task events of this worker process for the dashboards, sent as one topic event per ~50 ms
    (``{"batch": [...]}``) by a thread of their own: one event per task state was a message
    through the scheduler for each, and cost the driver's process (the scheduler of a LocalCluster
    runs there) 12 % more CPU with a dashboard open. Each event keeps the time it happened."""

    def __init__(self):
        self.buf: list = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def add(self, msg: dict) -> None:
        with self.lock:
            self.buf.append(msg)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="jpar-dask-events", daemon=True)
                self.thread.start()
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(0.05)      # gather what happens meanwhile
            self.wake.clear()
            with self.lock:
                batch, self.buf = self.buf, []
            if batch:
                log_event(EVENTS_TOPIC, {"batch": batch})


_events = _Events()


def _event(ctx: _Ctx, state: str, **info) -> None:
    if ctx.events:
        _events.add({"t": time.time(), "id": ctx.task_id, "state": state, "owner": ctx.owner,
                     "info": {"name": ctx.name, "engine": ctx.engine, **info}})


def _function(fn_hash: int, blob: bytes) -> Any:
    fn = _fn_cache.get(fn_hash)
    if fn is None:
        fn = _fn_cache[fn_hash] = pickle.loads(blob)
    return fn


def _arguments(payload: bytes, deps: tuple) -> tuple[tuple, dict]:
    args, kwargs = pickle.loads(payload)
    if deps:
        args = tuple(deps[a.id] if type(a) is ArgRef else a for a in args)
        kwargs = {k: deps[v.id] if type(v) is ArgRef else v for k, v in kwargs.items()}
    return args, kwargs


def task_error(exc: BaseException, name: str, skip: int) -> TaskError:
    """``exc`` as an error that is both jpar.TaskError and ``exc``'s type, carrying the traceback
    (without this module's ``skip`` frames); a cause that does not survive pickling travels as a
    RemoteException naming its type (jpar.pickling, as on every backend)."""
    from ...pickling import RemoteException, cloud_dumps, remote_traceback

    text = remote_traceback(exc, skip)
    cause: BaseException = exc
    try:
        pickle.loads(cloud_dumps(exc))
    except Exception:
        cause = RemoteException(type(exc).__qualname__, str(exc))
    cause.__traceback__ = None
    return TaskError(name, text, cause).as_instanceof_cause()


def _retryable(exc: BaseException, retry: Any) -> bool:
    if retry is True:
        return isinstance(exc, Exception)
    return bool(retry) and isinstance(exc, tuple(retry))


def run_task(header: tuple, blob: bytes, payload: bytes, *deps: Any) -> Any:
    """Run one jpar task on this worker: ``header`` is (fn_hash, name, task_id, cluster_id, owner,
    root, events, retry, max_retries); ``deps`` the values of its top-level ref arguments (Dask
    resolved them here), which ArgRef(i) stands for in ``payload``."""
    _install()
    fn_hash, name, task_id, cluster_id, owner, root, events, retry, max_retries = header
    ctx = _Ctx(task_id, name, owner, root, events, cluster_id)
    prev = getattr(_local, "ctx", None)
    _local.ctx = ctx
    _event(ctx, "running")
    from ... import context

    context.set_current(task_id=task_id, engine_id=ctx.engine, cluster_id=cluster_id)
    try:
        fn = _function(fn_hash, blob)
        args, kwargs = _arguments(payload, deps)
        tries = 0
        while True:
            try:
                result = fn(*args, **kwargs)
                break
            except BaseException as exc:   # the user's error: jpar.TaskError and its own type
                if tries < max_retries and _retryable(exc, retry):
                    tries += 1
                    continue
                err = task_error(exc, name, 1)
                _flush(ctx)
                _event(ctx, "failed", error=f"{type(exc).__name__}: {exc}")
                raise err from None
        _flush(ctx)
        _event(ctx, "done")
        return result
    finally:
        _local.ctx = prev
        context.set_current(task_id=prev.task_id if prev else None)


def pick(value: Any, i: int, n: int, name: str) -> Any:
    """Element ``i`` of a task's result declared with ``num_returns=n``."""
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = f"a {type(value).__name__}" + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else "")
        raise TaskError(name, f"{name} was declared with num_returns={n} but returned {got}.\n",
                        ValueError(f"Task {name} returned {got}, not a sequence of {n} values (num_returns={n})."
                                   )).as_instanceof_cause()
    return value[i]


def fail_with(error: BaseException) -> Any:
    """A task that fails at once (an actor call on an actor this driver knows is dead)."""
    raise error


# ---------------------------------------------------------------- actors
class ActorHost:
    """What Dask hosts for a jpar actor: the user's instance, calls run one at a time on a thread
    of its own, each caller's calls in the order it made them (``seq``)."""

    def __init__(self, header: tuple, blob: bytes, payload: bytes, *deps: Any):
        _install()
        fn_hash, name, actor_id, cluster_id, owner, events = header
        self._name, self._actor_id, self._cluster_id = name, actor_id, cluster_id
        self._next: dict[int, int] = {}
        self._turn: asyncio.Condition | None = None
        self._dead: str | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"jpar-actor-{actor_id:x}")
        self._outcomes: dict[int, tuple] = {}      # call id -> (ok, value): kept until the caller forgets it
        self._waiting: dict[int, asyncio.Future] = {}
        ctx = _Ctx(actor_id, f"{name}.__init__", owner, actor_id, events, cluster_id, actor=actor_id)
        prev = getattr(_local, "ctx", None)
        _local.ctx = ctx
        try:
            cls = _function(fn_hash, blob)
            args, kwargs = _arguments(payload, deps)
            try:
                self._instance = cls(*args, **kwargs)
            except BaseException as exc:
                raise task_error(exc, f"{name}.__init__", 1) from None
            finally:
                _flush(ctx)
        finally:
            _local.ctx = prev

    async def call(self, caller: int, seq: int, header: tuple, payload: bytes) -> Any:
        """Run method ``header[1]`` once this caller's earlier calls have started, and keep its
        outcome for :meth:`outcome` until the caller forgets it (the caller gets it back directly,
        as a Dask actor future; a Dask task asks for it only when the call's ref becomes another
        task's argument). Dask runs coroutine methods of actors on the worker's event loop."""
        task_id = header[0]
        try:
            value = await self._call(caller, seq, header, payload)
        except BaseException as exc:
            self._settle(task_id, False, exc)
            raise
        self._settle(task_id, True, value)
        return value

    def _settle(self, task_id: int, ok: bool, value: Any) -> None:
        self._outcomes[task_id] = (ok, value)
        waiter = self._waiting.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def outcome(self, task_id: int) -> Any:
        """The value of call ``task_id`` (raising its error), once it has run."""
        if task_id not in self._outcomes:
            waiter = self._waiting.get(task_id)
            if waiter is None:
                waiter = self._waiting[task_id] = asyncio.get_running_loop().create_future()
            await waiter
        ok, value = self._outcomes[task_id]
        if not ok:
            raise value
        return value

    async def forget(self, task_ids: list) -> None:
        """The caller dropped these calls' refs: their outcomes are not asked for any more."""
        for t in task_ids:
            self._outcomes.pop(t, None)

    async def _call(self, caller: int, seq: int, header: tuple, payload: bytes) -> Any:
        if self._turn is None:
            self._turn = asyncio.Condition()
        turn = self._turn
        async with turn:
            await turn.wait_for(lambda: self._dead is not None or self._next.get(caller, 0) >= seq)
            if self._next.get(caller, 0) == seq:
                self._next[caller] = seq + 1
            turn.notify_all()
            if self._dead is not None:
                raise ActorDiedError(self._dead)
            fut = asyncio.get_running_loop().run_in_executor(self._pool, self._run, header, payload)
        return await fut

    def _run(self, header: tuple, payload: bytes) -> Any:
        task_id, method, owner, root, events = header
        if self._dead is not None:
            raise ActorDiedError(self._dead)
        name = f"{self._name}.{method}"
        ctx = _Ctx(task_id, name, owner, root, events, self._cluster_id, actor=self._actor_id)
        _local.ctx = ctx
        from ... import context

        context.set_current(task_id=task_id, engine_id=ctx.engine, actor_id=self._actor_id,
                            cluster_id=self._cluster_id)
        _event(ctx, "running", actor=self._actor_id)
        try:
            args, kwargs = pickle.loads(payload)
            args, kwargs = _resolve_top_refs(args, kwargs)
            try:
                result = getattr(self._instance, method)(*args, **kwargs)
            except BaseException as exc:
                _flush(ctx)
                _event(ctx, "failed", actor=self._actor_id, error=f"{type(exc).__name__}: {exc}")
                raise task_error(exc, name, 1) from None
            _flush(ctx)
            _event(ctx, "done", actor=self._actor_id)
            return result
        finally:
            _local.ctx = None
            context.set_current(task_id=None, actor_id=None)

    async def kill(self, why: str) -> bool:
        self._dead = why
        if self._turn is not None:
            async with self._turn:
                self._turn.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for task_id in list(self._waiting):       # calls that will never run here
            self._settle(task_id, False, ActorDiedError(why))
        return True


def _resolve_top_refs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Top-level ObjectRef arguments of an actor call become their values (fetched here, on the
    actor's worker); an error among them is the call's error."""
    from ...refs import ObjectRef

    refs = [a for a in (*args, *kwargs.values()) if isinstance(a, ObjectRef)]
    if not refs:
        return args, kwargs
    from .. import current

    values = dict(zip((id(r) for r in refs), current().get(refs, None)))
    return (tuple(values.get(id(a), a) if isinstance(a, ObjectRef) else a for a in args),
            {k: values.get(id(v), v) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()})


def call_outcome(actor: Any, task_id: int) -> Any:
    """The Dask task that stands for an actor call made directly (its ref became another task's
    argument): the call's value, asked of the actor, without holding a worker thread (seceded)."""
    from distributed import secede

    secede()      # no rejoin: the thread ends with this task
    return actor.outcome(task_id).result()


def run_actor_call(actor: Any, caller: int, seq: int, header: tuple, payload: bytes) -> Any:
    """The Dask task behind an actor call's ObjectRef: hand the call to the actor and wait for it,
    without holding a worker thread (seceded)."""
    from distributed import secede

    secede()      # no rejoin: the thread ends with this task
    return actor.call(caller, seq, header, payload).result()
