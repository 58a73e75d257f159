"""The Ray backend's code that runs inside Ray's processes (and the driver's shared pieces).

* :class:`RefTable`: jpar ObjectRef id -> Ray ObjectRef, one per process. A jpar ref crosses Ray's
  serialization (task arguments, results, ``put`` values) carrying its Ray ObjectRef, through a
  serializer registered with ``ray.util.register_serializer``, so Ray's own borrowing keeps the
  value alive wherever the jpar ref went; the process that unpickles it registers the pair here.
  A collected jpar ref (``table.released``) drops the table's Ray ref.
* :func:`run_task`: the task wrapper (a ``ray.remote`` function): loads the user's function
  (shipped once per function as cloudpickle bytes, cached here by id), runs it with jpar's
  context set, captures stdout/stderr under jpar's task id, and turns an exception into one that
  is both :class:`jpar.TaskError` and the original type.
* :class:`ActorHost` / :class:`AsyncActorHost`: the Ray actor classes that host a user's class.
* :class:`Engine`: the jpar-managed actors that stand for engines (``%%remote``, ``placement=``).
* :class:`Sink`: the per-driver actor that output chunks and task notices go through to the driver.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import io
import os
import pickle
import random
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import ray

from ... import backends
from ... import context as jctx
from ...errors import TaskError
from ...pickling import cloud_dumps
from ...refs import ObjectRef

__all__ = ["RefTable", "table", "set_table", "new_id", "run_task", "ActorHost", "AsyncActorHost", "Engine", "Sink",
           "register_serializer", "EV", "outbox"]

EV = 1          # meta flag: a driver watches events; send running/done/failed notices

# ---------------------------------------------------------------- ids and the ref table


def new_id(n: int = 1) -> int:
    """A random 62-bit id with room for ``n`` consecutive ones (num_returns). From a generator of
    jpar's own, not ``os.urandom`` (a system call per task): seeded from the OS, and afresh in a
    forked child; not the ``random`` module's, which user code may seed (same ids every run)."""
    return _bits(46) << 16 if n <= 0xFFFF else _bits(62)


_rng = random.Random()
_bits = _rng.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)


class RefTable:
    """jpar ref id -> [Ray ObjectRef, count of live jpar ObjectRef objects made here for it].

    It is the ``driver`` of the ObjectRefs this process makes: they append their id to
    ``released`` when collected, and :meth:`drain` drops the Ray ref once none is left."""

    def __init__(self, cluster_id: str | None):
        self.cluster_id = cluster_id
        self.namespace: str | None = None
        self.client_mode = False         # connected through Ray Client (ray://): see _ser
        self.released: collections.deque = collections.deque()
        self.refs: dict[int, list] = {}
        self.lock = threading.Lock()

    def add(self, jid: int, rayref: Any) -> None:
        with self.lock:
            e = self.refs.get(jid)
            if e is None:
                self.refs[jid] = [rayref, 1]
            else:
                e[1] += 1

    def ref_escaping(self, ref: ObjectRef) -> None:
        """A ref of this table is being pickled by something else than Ray (ObjectRef.__reduce__;
        Ray's own pickles go through :func:`_ser`): publish its Ray ref for the session's other
        processes (see escaped.py)."""
        rr = self.lookup(ref.id)
        if rr is not None and self.cluster_id is not None:
            from . import escaped

            escaped.publish(self.cluster_id, self.namespace, ref.id, rr)

    def make(self, jid: int, owner: int, rayref: Any) -> ObjectRef:
        self.add(jid, rayref)
        return ObjectRef(jid, owner, self)

    def lookup(self, jid: int) -> Any:
        e = self.refs.get(jid)
        return None if e is None else e[0]

    def drain(self) -> None:
        rel = self.released
        if not rel:
            return
        with self.lock:
            while rel:
                try:
                    jid = rel.popleft()
                except IndexError:
                    break
                e = self.refs.get(jid)
                if e is not None:
                    e[1] -= 1
                    if e[1] <= 0:
                        del self.refs[jid]


_TABLE: RefTable | None = None


def table() -> RefTable:
    global _TABLE
    if _TABLE is None:
        _TABLE = RefTable(None)
    return _TABLE


def set_table(t: RefTable | None) -> None:
    global _TABLE
    _TABLE = t


def _ser(ref: ObjectRef) -> tuple:
    t = _TABLE
    rr = None if t is None else t.lookup(ref.id)
    if rr is not None and t.client_mode:   # Ray Client: the cluster side unpickles without _deser
        t.ref_escaping(ref)
    return (ref.id, ref.owner, ref.cluster, rr)


def _deser(state: tuple) -> ObjectRef:
    jid, owner, cluster, rayref = state
    r = ObjectRef(jid, owner, cluster=cluster)
    if rayref is not None:
        t = table()
        t.add(jid, rayref)
        r._driver = t
    return r


_registered = False


def register_serializer() -> None:
    """Teach Ray's serializer (this process) to carry a jpar ref's Ray ObjectRef with it."""
    global _registered
    if not _registered:
        ray.util.register_serializer(ObjectRef, serializer=_ser, deserializer=_deser)
        _registered = True


# ---------------------------------------------------------------- output and notices to the driver
class _Current:
    __slots__ = ("task_id", "name", "engine", "root", "flags")

    def __init__(self, task_id, name, engine, root, flags):
        self.task_id, self.name, self.engine, self.root, self.flags = task_id, name, engine, root, flags


_task_var: contextvars.ContextVar = contextvars.ContextVar("jpar_ray_task", default=None)


def current_task() -> _Current | None:
    return _task_var.get()


class _Outbox:
    """Records for the driver's sink, sent in batches by a flusher thread (every ~50 ms while
    there is something) and at the end of every task that printed (its output reaches the driver
    before its result does). A task's notices alone wait for the flusher: sending them at the end
    of every task was one more Ray actor call per task, and the dashboard open cost 60 % of the
    throughput."""

    def __init__(self):
        self.buf: list = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.sink_name: str | None = None
        self.namespace: str | None = None
        self.sink = None
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.output = False             # output waits in buf: flush at the end of the task

    def set_sink(self, name: str, namespace: str | None) -> None:
        if name != self.sink_name:
            self.flush()
            self.sink_name, self.namespace, self.sink = name, namespace, None

    def add(self, rec: tuple, output: bool = False) -> None:
        with self.lock:
            self.buf.append(rec)
            if output:
                self.output = True
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="jpar-outbox", daemon=True)
            self.thread.start()
        self.wake.set()

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            time.sleep(0.05)    # batch what arrives meanwhile
            self.wake.clear()
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self.buf:
                return
            batch, self.buf = self.buf, []
            self.output = False
        if self.sink_name is None:
            return
        try:
            if self.sink is None:
                self.sink = ray.get_actor(self.sink_name, namespace=self.namespace)
            self.sink.put.remote(_coalesce(batch))
        except Exception:   # the driver is gone: its output has nowhere to go
            self.sink = None


def _coalesce(batch: list) -> list:
    out: list = []
    for rec in batch:
        if out and rec[0] == "out" and out[-1][0] == "out" and out[-1][1] == rec[1] and out[-1][5] == rec[5]:
            last = out[-1]
            out[-1] = last[:6] + (last[6] + rec[6],) + last[7:]
        else:
            out.append(rec)
    return out


outbox = _Outbox()


class _Stream(io.TextIOBase):
    """sys.stdout / sys.stderr of a Ray worker: text written by a task goes to its driver under
    the task's id; anything else to the worker's own stream (Ray's log files)."""

    def __init__(self, name: str, orig: Any):
        self.name_ = name
        self.orig = orig

    def write(self, s: str) -> int:
        cur = _task_var.get()
        if cur is None:
            return self.orig.write(s)
        if s:
            outbox.add(("out", cur.task_id, cur.engine, outbox.pid, cur.name, self.name_, str(s), cur.root), True)
        return len(s)

    def flush(self) -> None:
        if _task_var.get() is None:
            try:
                self.orig.flush()
            except Exception:
                pass

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.orig.fileno()

    @property
    def encoding(self):
        return getattr(self.orig, "encoding", "utf-8")


def notice(cur: _Current, state: str, info: dict | None = None) -> None:
    if cur.flags & EV:
        outbox.add(("ev", time.time(), "task", cur.task_id, state,
                    {"name": cur.name, "engine": cur.engine, "pid": outbox.pid, **(info or {})}))


# ---------------------------------------------------------------- the worker process's jpar state
_worker_backend = None
_setup_done = False
_FNS: dict[int, Any] = {}


def _setup(cluster_id: str, sink: str, namespace: str | None) -> None:
    global _setup_done
    t = table()
    if t.cluster_id != cluster_id:
        t.cluster_id = cluster_id
    t.namespace = namespace
    outbox.set_sink(sink, namespace)
    if _setup_done:
        return
    _setup_done = True
    register_serializer()
    if not isinstance(sys.stdout, _Stream):
        sys.stdout = _Stream("stdout", sys.stdout)
    if not isinstance(sys.stderr, _Stream):
        sys.stderr = _Stream("stderr", sys.stderr)
    _install_interrupt()
    if backends.engine_client() is None and backends.current() is None:
        backends.set_engine_client(_engine_client)
    jctx.set_cancel_check(_is_cancelled)


# Ray interrupts a running task (ray.cancel without force) with _thread.interrupt_main(), which only
# flags a simulated SIGINT; Ray's workers block SIGINT, so it never reaches a task that sleeps or
# waits in C. jpar's wrapper turns that call into a real signal to the main thread, whose handler
# raises KeyboardInterrupt in the task (Ray then reports it cancelled).
_INTERRUPT = signal.SIGUSR2
_main_busy = [False]


def _install_interrupt() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(_INTERRUPT) not in (signal.SIG_DFL, None):
            return
        signal.signal(_INTERRUPT, _on_interrupt)
    except (ValueError, OSError):
        return
    import _thread

    original = _thread.interrupt_main

    def interrupt_main(*args, **kwargs):
        if _main_busy[0]:
            signal.pthread_kill(threading.main_thread().ident, _INTERRUPT)
        else:
            original(*args, **kwargs)

    _thread.interrupt_main = interrupt_main


def _on_interrupt(signum, frame) -> None:
    if _main_busy[0]:
        raise KeyboardInterrupt


def _engine_client():
    """The RayBackend that jpar.* calls inside a task use (nested tasks, get, put, actors)."""
    global _worker_backend
    if _worker_backend is None:
        from . import RayBackend

        _worker_backend = RayBackend.in_worker(table(), outbox.sink_name, outbox.namespace)
    return _worker_backend


def _is_cancelled(task_id: int) -> bool:
    try:
        return bool(ray.get_runtime_context().is_canceled())
    except Exception:
        return False


def load_function(fnbox: tuple) -> Any:
    fn_id, payload = fnbox
    fn = _FNS.get(fn_id)
    if fn is None:
        blob = payload if isinstance(payload, bytes) else ray.get(payload[0])
        fn = _FNS[fn_id] = pickle.loads(blob)
    return fn


def _unpack(values: tuple | None, refs: tuple) -> tuple:
    """The call's flat arguments from what :meth:`RayBackend._pack` sent: ``values`` = (the values,
    the positions of the refs), or None for a call without arguments; ``refs`` the refs' values
    (Ray resolved them here)."""
    if values is None:
        return ()
    flat, pos = values
    if not pos:
        return flat
    flat = list(flat)
    for i, v in zip(pos, refs):
        flat[i] = v
    return tuple(flat)


def _split(flat: tuple, kw_names: tuple) -> tuple[tuple, dict]:
    if not kw_names:
        return flat, {}
    k = len(kw_names)
    return flat[:-k], dict(zip(kw_names, flat[-k:]))


class _RemoteException(Exception):
    """Stands in for an exception that does not survive pickling."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message

    def __reduce__(self):
        return (_RemoteException, (self.type_name, self.message))


def task_error(exc: BaseException, name: str, skip: int = 1) -> BaseException:
    """The exception a failed task raises to Ray: both TaskError and the original type, carrying
    the traceback without this module's frames."""
    tb = exc.__traceback__
    for _ in range(skip):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    cause: BaseException = exc
    try:
        pickle.loads(cloud_dumps(exc))
    except Exception:
        cause = _RemoteException(type(exc).__qualname__, str(exc))
    try:
        cause.__traceback__ = None
    except Exception:
        pass
    err = TaskError(name, text, cause).as_instanceof_cause()
    try:
        pickle.loads(cloud_dumps(err))
    except Exception:
        err = TaskError(name, text, _RemoteException(type(exc).__qualname__, str(exc)))
    return err


_NODE: dict = {}


def _node_id() -> str | None:
    n = _NODE.get("id")
    if n is None:
        try:
            n = _NODE["id"] = ray.get_runtime_context().get_node_id()
        except Exception:
            return None
    return n


class _Running:
    """The context of one task (or actor call) while it runs here."""

    __slots__ = ("cur", "token", "prev")

    def __init__(self, meta: tuple, engine: int, actor_id: int | None = None):
        task_id, name, _fn, _kw, cluster_id, sink, flags, root, namespace = meta
        _setup(cluster_id, sink, namespace)
        table().drain()
        self.cur = _Current(task_id, name, engine, root or task_id, flags)
        self.token = _task_var.set(self.cur)
        self.prev = dict(jctx._current)
        jctx.set_current(task_id=task_id, engine_id=engine, node=_node_id(), actor_id=actor_id, cluster_id=cluster_id)
        notice(self.cur, "running")

    def done(self, error: BaseException | None) -> None:
        if error is None:
            notice(self.cur, "done")
        else:
            notice(self.cur, "failed", {"error": f"{type(error).__name__}: {error}"[:300]})

    def close(self) -> None:
        _task_var.reset(self.token)
        jctx._current.update(self.prev)
        if outbox.output:
            outbox.flush()


def execute(meta: tuple, fnbox: tuple, flat: tuple, engine: int = -1) -> Any:
    """Run one task here (a pool worker or an engine actor)."""
    run = _Running(meta, engine)
    main = threading.current_thread() is threading.main_thread()
    if main:
        _main_busy[0] = True
    try:
        fn = load_function(fnbox)
        args, kwargs = _split(flat, meta[3])
        try:
            result = fn(*args, **kwargs)
        except (Exception, SystemExit) as exc:
            err = task_error(exc, meta[1])
            run.done(exc)
            raise err from None
        run.done(None)
        return result
    finally:
        if main:
            _main_busy[0] = False
        run.close()


@ray.remote
def run_task(packed: list, *refs) -> Any:
    """The task wrapper: every jpar task is one call of this Ray function; ``packed`` is [meta,
    function, values] (plain lists: see RayBackend._pack), ``refs`` the values of its top-level
    ref arguments."""
    meta, fnbox, values = packed
    return execute(meta, fnbox, _unpack(values, refs))


# ---------------------------------------------------------------- actors
def _blocking_check() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    import warnings

    warnings.warn("jpar.get() inside an async actor method blocks the actor's event loop; use `await ref`.",
                  RuntimeWarning, stacklevel=3)


class _HostBase:
    def _make(self, meta: tuple, clsbox: tuple, flat: tuple, info: dict) -> None:
        try:
            aid = actor_jid(bytes.fromhex(ray.get_runtime_context().get_actor_id()))
        except Exception:
            aid = 0
        self._info = dict(info, actor_id=aid)
        self._actor_id = aid
        run = _Running(meta, -1, self._actor_id)
        try:
            cls = load_function(clsbox)
            args, kwargs = _split(flat, meta[3])
            try:
                self._obj = cls(*args, **kwargs)
            except Exception as exc:
                run.done(exc)      # the constructor's node ends failed on the dashboard
                raise task_error(exc, meta[1]) from None
            run.done(None)
        finally:
            run.close()

    def meta(self) -> dict:
        return self._info


class ActorHost(_HostBase):
    """Hosts a user's (synchronous) class as a Ray actor."""

    def __init__(self, meta: tuple, clsbox: tuple, info: dict, *flat):
        self._make(meta, clsbox, flat, info)

    def call(self, packed: list, *refs) -> Any:
        meta, values = packed
        run = _Running(meta, -1, self._actor_id)
        try:
            args, kwargs = _split(_unpack(values, refs), meta[3])
            try:
                result = getattr(self._obj, meta[2])(*args, **kwargs)
            except (Exception, SystemExit) as exc:
                run.done(exc)
                raise task_error(exc, meta[1]) from None
            run.done(None)
            return result
        finally:
            run.close()


class AsyncActorHost(_HostBase):
    """Hosts a class with async methods: Ray runs its calls on an event loop."""

    def __init__(self, meta: tuple, clsbox: tuple, info: dict, *flat):
        self._make(meta, clsbox, flat, info)
        backends.set_blocking_check(_blocking_check)

    async def call(self, packed: list, *refs) -> Any:
        meta, values = packed
        run = _Running(meta, -1, self._actor_id)
        try:
            args, kwargs = _split(_unpack(values, refs), meta[3])
            try:
                result = getattr(self._obj, meta[2])(*args, **kwargs)
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
            except (Exception, SystemExit) as exc:
                run.done(exc)
                raise task_error(exc, meta[1]) from None
            run.done(None)
            return result
        finally:
            run.close()

    async def meta(self) -> dict:   # an async actor's methods are all coroutines
        return self._info


# ---------------------------------------------------------------- engines and the sink
@ray.remote(num_cpus=0, max_restarts=-1, concurrency_groups={"run": 1, "info": 2})
class Engine:
    """An engine of the Ray backend: a long-lived actor whose process keeps ``%%remote``
    namespaces; placed tasks (``options(placement=i)``) run here, one at a time, in order."""

    def __init__(self, index: int, slot: int = 0, slots: int = 1):
        import psutil

        self.index = index
        self.slot, self.slots = slot, max(1, slots)     # this engine's place among its node's engines
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)
        self.running = 0
        self.peers: dict = {}      # pid -> psutil.Process of the node's Ray workers (cpu_percent needs the object)

    @ray.method(concurrency_group="run")
    def run(self, meta: tuple, fnbox: tuple, *flat) -> Any:
        self.running, self.thread = meta[0], threading.get_ident()
        try:
            return execute(meta, fnbox, flat, engine=self.index)
        except KeyboardInterrupt:
            from ...errors import TaskCancelledError

            raise TaskCancelledError(f"task {meta[1]}") from None
        finally:
            self.running = 0

    @ray.method(concurrency_group="info")
    def interrupt(self, task_id: int) -> bool:
        """Raise KeyboardInterrupt in the placed task ``task_id`` if it is running here (at its next
        Python instruction: Ray does not interrupt calls of threaded actors)."""
        if self.running != task_id:
            return False
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread), ctypes.py_object(KeyboardInterrupt))
        return True

    @ray.method(concurrency_group="info")
    def info(self) -> dict:
        """This engine's figures: its own process plus its share of the node's working Ray workers.

        Tasks do not run in engine actors (only placed ones do): Ray runs them in worker processes
        it leases per CPU. Each engine stands for one CPU slot of its node, so the node's busy
        workers are dealt to its engines (busiest first, round robin): a row's CPU is what that
        slot burns, and the rows of a node add up to what Ray's workers burn there."""
        p = self.proc
        try:
            mem = p.memory_info()
            rss, shared = mem.rss, getattr(mem, "shared", 0)
            cpu = p.cpu_percent(None)
        except Exception:
            rss = shared = 0
            cpu = 0.0
        for w_cpu, w_rss, w_shared in self._my_workers():
            cpu += w_cpu
            rss += w_rss
            shared += w_shared
        return {"id": self.index, "pid": os.getpid(), "node": _node_id() or "", "host": socket.gethostname(),
                "cpu": cpu, "rss": rss, "shared": shared, "task": self.running}

    def _my_workers(self) -> list:
        """(cpu, rss, shared) of the node's working Ray workers dealt to this engine's slot."""
        import psutil

        try:
            raylet = self.proc.parent()
            children = raylet.children() if raylet is not None else []
        except psutil.Error:
            return []
        seen, rows = set(), []
        for c in children:
            pid = c.pid
            if pid == self.proc.pid:
                continue
            w = self.peers.get(pid)
            if w is None:
                w = self.peers[pid] = c
                try:
                    w.cpu_percent(None)      # the first call only starts the interval
                except psutil.Error:
                    continue
            seen.add(pid)
            try:
                title = w.name()
                if not _works_for_jobs(title):
                    continue
                mem = w.memory_info()
                rows.append((w.cpu_percent(None), mem.rss, getattr(mem, "shared", 0), pid))
            except psutil.Error:
                continue
        for pid in list(self.peers):
            if pid not in seen:
                del self.peers[pid]
        rows.sort(key=lambda r: (-r[0], r[3]))
        return [r[:3] for i, r in enumerate(rows) if i % self.slots == self.slot]


def _works_for_jobs(title: str) -> bool:
    """Whether a Ray worker process (by its title, "ray::<what it runs>") runs users' work: not an
    idle worker, not Ray's agents, not jpar's own engines or sink."""
    if not title.startswith("ray::"):
        return False
    what = title[5:]
    return what not in ("IDLE", "DashboardAgent", "RuntimeEnvAgent") and not what.startswith(("Engine", "Sink"))


@ray.remote(num_cpus=0)
class Sink:
    """Where the workers of one driver send output chunks and task notices; the driver long-polls
    :meth:`take`."""

    def __init__(self):
        self.buf: list = []
        self.event: asyncio.Event | None = None

    async def put(self, records: list) -> None:
        self.buf.extend(records)
        if self.event is not None:
            self.event.set()

    async def take(self, wait: float) -> list:
        if not self.buf and wait > 0:
            if self.event is None:
                self.event = asyncio.Event()
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), wait)
            except asyncio.TimeoutError:
                pass
        out, self.buf = self.buf, []
        return out


def actor_jid(binary: bytes) -> int:
    """jpar's id of a Ray actor (from Ray's actor id, so every handle agrees on it)."""
    return int.from_bytes(hashlib.blake2b(binary, digest_size=8).digest(), "big") >> 2



@ray.remote(num_cpus=0, max_retries=0)
def fail_with(error: BaseException) -> Any:
    """A call's result that is an error known in the driver (a call on an actor this driver killed)."""
    raise error
