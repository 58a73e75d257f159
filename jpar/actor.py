"""Actors: ``@jpar.remote`` classes, their handles, and the caller's connections to actor processes.

::

    Cls.remote(*args) --RegisterFunction + CreateActor--> head --spawns--> actor process
    handle.m.remote() --(driver lock)--> conn.ready --flush--> PUSH --Calls--> actor process
                      \\--> call notice (TaskSpec, actor set) --> head (objects, event stream)
    actor process --Results--> this driver's PULL --> results table (like task results)
    head --ActorInfo (alive at endpoints / restarting / dead)--> receiver thread --> conn state

Each process talks to an actor over one PUSH socket, so its calls arrive in the order it
made them. Calls made before the actor is alive wait in ``conn.waiting`` (in order) and are
sent when the head says it is alive. Top-level ObjectRef arguments are resolved here, by the
caller, before the call leaves (a call waits behind any earlier call whose refs are not
ready): the actor process then never asks the head for anything on the call path. Sends
are batched like task submissions: the first queued call wakes the receiver thread, which
sends everything queued by then in one message per actor (blocking calls flush first).

The caller owns the fate of its calls when the actor's process dies: calls that
``max_task_retries`` allows are resent to the restarted process, in order; the others fail
with ActorDiedError here and are reported to the head.
"""

from __future__ import annotations

import collections
import hashlib
import socket
import threading
import time
from typing import Any

from . import protocol as P
from . import serialization, transport
from .driver import Driver, current_driver, require_driver
from .errors import ActorDiedError, GetTimeoutError
from .options import ActorOptions, method_options
from .refs import ObjectRef
from .remote_function import _split_refs, display_name, first_use_driver

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "method", "make_actor_class", "kill", "get_actor"]


def method(*, num_returns: int = 1, **options):
    """Decorate an actor method to set options (Ray's ``@ray.method(num_returns=2)``). Harmless Ray
    options (``enable_task_events``) are accepted and ignored, as for tasks; any other is a ConfigError."""
    method_options(num_returns, **options)

    def wrap(fn):
        fn.__jpar_num_returns__ = num_returns
        return fn

    return wrap


def _methods(cls: type) -> dict:
    """name -> (num_returns, is_async) for every public method of the class (and its bases)."""
    import inspect  # here, not at import: engines import jpar and should start fast

    out = {}
    for name in dir(cls):
        if name.startswith("__") and name.endswith("__"):
            continue
        attr = inspect.getattr_static(cls, name)
        fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if not callable(fn):
            continue
        is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        out[name] = (int(getattr(fn, "__jpar_num_returns__", 1)), is_async)
    return out


class ActorClass:
    """A class made remote: ``Cls.remote(*args)`` starts an actor and returns its ActorHandle."""

    def __init__(self, cls: type, options: ActorOptions):
        self._cls = cls
        self._options = options
        self._name = display_name(cls)   # as for functions: no <locals> of enclosing functions
        self._methods = _methods(cls)
        self._is_async = any(a for _, a in self._methods.values())
        self._blob: bytes | None = None
        self._fn_id: int | None = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self._name}()', use '{self._name}.remote()'.")

    def __mro_entries__(self, bases):
        """``class Sub(RemoteCls)`` subclasses the original class; decorate Sub with @jpar.remote to use it."""
        return (self._cls,)

    def __reduce__(self):
        return (ActorClass, (self._cls, self._options))

    def __repr__(self) -> str:
        return f"<jpar.ActorClass {self._name}>"

    def options(self, **changes) -> "ActorClass":
        """The same class with some actor options changed (``Cls.options(name="a").remote()``)."""
        new = ActorClass(self._cls, ActorOptions.build(self._options, **changes))
        new._blob, new._fn_id = self._blob, self._fn_id
        return new

    def _definition(self) -> tuple[int, bytes]:
        if self._fn_id is None:
            self._blob = serialization.dumps_function(self._cls, self._name)
            self._fn_id = int.from_bytes(hashlib.blake2b(self._blob, digest_size=7).digest(), "big")
        return self._fn_id, self._blob

    def remote(self, *args, **kwargs) -> "ActorHandle":
        """Start an actor running ``Cls(*args, **kwargs)`` in its own process; returns its handle at once."""
        d = first_use_driver(f"{self._name}.remote()")
        client = actor_client(d)
        opts = self._options
        fn_id, blob = self._definition()
        d.ensure_function(fn_id, self._name, lambda: blob)
        dep_refs = _top_refs(args, kwargs)
        args, kwargs, deps = _split_refs(args, kwargs, d.cluster_id)
        payload = serialization.dumps_args(f"{self._name}.__init__", args, kwargs)
        if dep_refs:  # the creator resolves constructor refs (an error among them fails __init__)
            d.wait(dep_refs, len(dep_refs), None)
            deps = tuple((oid, *d.results[oid]) for oid in deps)
        meta = {"class_name": self._name, "methods": self._methods, "max_task_retries": opts.max_task_retries}
        actor_id = d.new_ids()
        spec = P.ActorSpec(actor_id, fn_id, self._name, payload, deps, opts.resource_tuple(), {
            "max_restarts": opts.max_restarts, "max_task_retries": opts.max_task_retries,
            "max_concurrency": opts.max_concurrency, "is_async": self._is_async, "detached": opts.detached,
            "methods": self._methods, "owner": d.client_no, "owner_endpoint": d.endpoint,
        }, opts.name or "")
        client.open(actor_id, meta, subscribe=False)
        if opts.name:
            answer = client.ask(lambda req: P.CreateActor(req, spec, opts.get_if_exists), timeout=60)
            if answer["error"]:
                raise ValueError(answer["error"])
            if answer["actor_id"] != actor_id:  # get_if_exists found the existing one
                client.forget(actor_id)
                return ActorHandle(answer["actor_id"], meta)
        else:
            d._send(P.CreateActor(0, spec, False))
        return ActorHandle(actor_id, meta, d if not opts.detached else None)


class ActorHandle:
    """A reference to a running actor: ``handle.method.remote(...)``; pass it to tasks and other actors."""

    __slots__ = ("_actor_id", "_meta", "_driver", "_cache", "__weakref__")

    def __init__(self, actor_id: int, meta: dict, owner: Driver | None = None):
        self._actor_id = actor_id
        self._meta = meta
        self._cache: dict = {}
        self._driver = owner          # set on the owner's handles: they end the actor when collected
        if owner is not None:
            actor_client(owner).handle_made(actor_id)

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("__") or name in ActorHandle.__slots__:
            raise AttributeError(name)
        m = self._cache.get(name)
        if m is None:
            spec = self._meta["methods"].get(name)
            if spec is None:
                raise AttributeError(
                    f"The actor {self._meta['class_name']} has no method {name!r}. "
                    f"Its methods: {', '.join(sorted(self._meta['methods'])) or '(none)'}.")
            m = self._cache[name] = ActorMethod(self, name, spec[0])
        return m

    def __reduce__(self):
        d = self._driver
        if d is not None:
            actor_client(d).escaped.add(self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._meta))

    def __del__(self):
        d = self._driver
        if d is not None:
            try:
                d._actor_client.released.append(self._actor_id)
            except Exception:  # interpreter shutdown
                pass

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._meta['class_name']}, {self._actor_id:016x})"

    def _repr_html_(self) -> str:
        """Class, id, state as this process knows it (pending, alive, restarting, dead) and methods."""
        import html

        from .driver import current_driver

        d = current_driver()
        conn = d._actor_client.conns.get(self._actor_id) if d is not None and d._actor_client else None
        state = conn.state if conn is not None and conn.state != "unknown" else "not called from here yet"
        methods = ", ".join(sorted(self._meta.get("methods", {})))
        name = self._meta.get("name") or ""
        return (f"<code>Actor({html.escape(self._meta['class_name'])}, {self._actor_id:016x})</code> "
                f"<small>{html.escape(state)}{' · named ' + html.escape(name) if name else ''}"
                f" · methods: {html.escape(methods)}</small>")


def _rebuild_handle(actor_id: int, meta: dict) -> ActorHandle:
    return ActorHandle(actor_id, meta)


class ActorMethod:
    """``handle.method``: call ``.remote(...)`` (or ``.options(num_returns=n).remote(...)``)."""

    __slots__ = ("_handle", "_name", "_num_returns")

    def __init__(self, handle: ActorHandle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        cls = self._handle._meta["class_name"]
        raise TypeError(f"Actor methods cannot be called directly. Instead of '{cls}.{self._name}()', "
                        f"try 'handle.{self._name}.remote()'.")

    def options(self, *, num_returns: int | None = None, **options) -> "ActorMethod":
        """This method with other options: ``num_returns``, and the harmless Ray options accepted by
        :func:`method`; any other option is a ConfigError."""
        method_options(num_returns, **options)
        return ActorMethod(self._handle, self._name, self._num_returns if num_returns is None else num_returns)

    def remote(self, *args, **kwargs):
        d = require_driver("actor method .remote()") if current_driver() is not None else \
            first_use_driver("actor method .remote()")
        client = d._actor_client or actor_client(d)
        return client.call(self._handle, self._name, self._num_returns, args, kwargs)


# ---------------------------------------------------------------- the caller's side of calls
class _Call:
    __slots__ = ("task_id", "method", "args", "deps", "num_returns", "attempt", "dep_refs", "incarnation", "conn")

    def __init__(self, task_id, method, args, deps, num_returns, dep_refs, conn):
        self.task_id = task_id
        self.method = method
        self.args = args
        self.deps = deps
        self.num_returns = num_returns
        self.attempt = 0
        self.dep_refs = dep_refs          # refs not resolved yet (None once deps holds their values)
        self.incarnation = -1             # which process of the actor it was sent to
        self.conn = conn


class _Conn:
    """This process's connection to one actor."""

    __slots__ = ("actor_id", "state", "incarnation", "chan", "waiting", "ready", "dirty", "retries", "names",
                 "class_name", "dead_blob")

    def __init__(self, actor_id: int, meta: dict):
        self.actor_id = actor_id
        self.state = "unknown"
        self.incarnation = -1
        self.chan = None
        self.waiting: collections.deque = collections.deque()   # not sendable yet (actor not alive / refs)
        self.ready: list = []                                     # sendable, goes out at the next flush
        self.dirty = False
        self.retries = int(meta.get("max_task_retries", 0))
        self.class_name = meta["class_name"]
        self.names: dict = {}
        self.dead_blob = b""


class ActorClient:
    """Per-driver actor state: connections, calls in flight, handle counts. Guarded by the driver's lock."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.conns: dict[int, _Conn] = {}
        self.inflight: dict[int, _Call] = {}     # task id -> call sent and not answered
        self.dirty: list = []
        self.blocked: set = set()                # alive conns whose waiting calls wait for refs
        self.released: collections.deque = collections.deque()
        self._tick_lock = threading.Lock()
        self.handles: dict[int, int] = {}
        self.escaped: set = set()
        self.local_host = socket.gethostname()

    # ---- connections
    def open(self, actor_id: int, meta: dict, subscribe: bool = True) -> _Conn:
        conn = self.conns.get(actor_id)
        if conn is not None:
            return conn
        conn = self.conns.setdefault(actor_id, _Conn(actor_id, meta))
        if subscribe and conn.state == "unknown":
            conn.state = "pending"
            self.driver._send(P.ActorLookup(actor_id))
        elif not subscribe:
            conn.state = "pending"
        return conn

    def forget(self, actor_id: int) -> None:
        self.conns.pop(actor_id, None)

    def handle_made(self, actor_id: int) -> None:
        self.handles[actor_id] = self.handles.get(actor_id, 0) + 1

    def ask(self, make_msg, timeout: float) -> Any:
        """Send a request carrying a fresh req_id and wait for the head's Answer."""
        d = self.driver
        req = next(d._req)
        d._send(make_msg(req))
        deadline = time.monotonic() + timeout
        with d.cond:
            while req not in d._answers:
                d._check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GetTimeoutError(f"The head did not answer within {timeout} s.")
                d.cond.wait(min(left, 0.2))
            return d._answers.pop(req)

    # ---- calls
    def call(self, handle: ActorHandle, method: str, n: int, args: tuple, kwargs: dict) -> Any:
        d = self.driver
        conn = self.conns.get(handle._actor_id) or self.open(handle._actor_id, handle._meta)
        name = conn.names.get(method)
        if name is None:
            name = conn.names[method] = f"{conn.class_name}.{method}"
        dep_refs = None
        deps = ()
        if args and any(type(a) is ObjectRef for a in args) or kwargs and any(
                type(v) is ObjectRef for v in kwargs.values()):
            dep_refs = _top_refs(args, kwargs)
            args, kwargs, deps = _split_refs(args, kwargs, d.cluster_id)
            d._request_missing(dep_refs)
        payload = serialization.dumps_args(name, args, kwargs)
        tid = d.new_ids(n)
        if d.submit_context is not None:
            d.task_context[tid] = d.submit_context(tid)
        call = _Call(tid, method, payload, deps, n, dep_refs, conn)
        notice = P.TaskSpec(tid, 0, name, b"", deps, n, (), conn.retries, False, d.current_task, conn.actor_id, -1)
        dead = None
        with d.lock:
            if conn.state == "dead":
                dead = conn.dead_blob
            elif conn.state == "alive" and dep_refs is None and not conn.waiting:
                conn.ready.append(call)
                if not conn.dirty:
                    conn.dirty = True
                    self.dirty.append(conn)
            else:
                conn.waiting.append(call)
                if dep_refs is not None and conn.state == "alive":
                    self.blocked.add(conn)
                    self._advance(conn)
            d._enqueue_locked(notice)
        if dead is not None:
            self._fail([call], dead, report=False)
        if n == 1:
            return ObjectRef(tid, d.client_no, d)
        return [ObjectRef(tid + i, d.client_no, d) for i in range(n)]

    def _advance(self, conn: _Conn) -> None:
        """(lock held) Move waiting calls to ready, in order, while the actor is alive and refs are ready."""
        if conn.state != "alive":
            return
        w = conn.waiting
        moved = False
        while w:
            c = w[0]
            if c.dep_refs is not None and not self._resolve(c):
                break
            w.popleft()
            conn.ready.append(c)
            moved = True
        if not w:
            self.blocked.discard(conn)
        else:
            self.blocked.add(conn)
        if moved and not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    def _resolve(self, c: _Call) -> bool:
        d = self.driver
        results, requested = d.results, d._requested
        for r in c.dep_refs:
            if r.id not in results or r.id in requested:
                return False
        c.deps = tuple((oid, *results[oid]) for oid in c.deps)
        c.dep_refs = None
        return True

    def flush_locked(self) -> None:
        """(lock held) Send every connection's ready calls, one Calls message per actor."""
        dirty, self.dirty = self.dirty, []
        d = self.driver
        inflight = self.inflight
        for conn in dirty:
            conn.dirty = False
            calls, conn.ready = conn.ready, []
            if not calls:
                continue
            if conn.chan is None:     # not alive any more: back in line
                conn.waiting.extendleft(reversed(calls))
                continue
            inc = conn.incarnation
            recs = []
            for c in calls:
                c.incarnation = inc
                inflight[c.task_id] = c
                recs.append((c.task_id, c.method, c.args, c.deps, c.num_returns, c.attempt))
            conn.chan.send(P.Calls(d.client_no, d.endpoint, recs))

    # ---- events from the receiver thread
    def on_results(self, records) -> None:
        inflight = self.inflight
        if inflight:
            for r in records:
                inflight.pop(r[0], None)
        if self.blocked:
            with self.driver.lock:
                for conn in list(self.blocked):
                    self._advance(conn)
                self.flush_locked()

    def on_info(self, msg: P.ActorInfo) -> None:
        conn = self.conns.get(msg.actor_id)
        if conn is None:
            return
        d = self.driver
        failed, retry_fail = [], []
        with d.lock:
            state = msg.state
            if state == "alive":
                if conn.incarnation != msg.incarnation or conn.chan is None:
                    self._reconnect(conn, msg)
                    stale = self._stale(conn, msg.incarnation)
                    again = []
                    for c in stale:
                        if conn.retries < 0 or c.attempt < conn.retries:
                            c.attempt += 1
                            again.append(c)
                        else:
                            retry_fail.append(c)
                    if again:
                        conn.waiting.extendleft(reversed(again))
                conn.state = "alive"
                self._advance(conn)
                self.flush_locked()
            elif state == "restarting":
                conn.state = "restarting"
                if conn.chan is not None:
                    conn.chan.close()
                    conn.chan = None
                again = []
                for c in self._stale(conn, msg.incarnation):
                    if conn.retries < 0 or c.attempt < conn.retries:
                        c.attempt += 1
                        again.append(c)
                    else:
                        retry_fail.append(c)
                pending = again + conn.ready + list(conn.waiting)
                conn.ready = []
                conn.waiting = collections.deque(sorted(pending, key=lambda c: c.task_id))
                self.blocked.discard(conn)
            elif state == "dead":
                failed = self._mark_dead(conn, msg.detail)
            else:
                conn.state = state
        if retry_fail:
            self._fail(retry_fail, serialization.dumps_error(ActorDiedError(
                f"The actor {conn.class_name} ({conn.actor_id:#x}) died while this call was in flight, and "
                f"max_task_retries={conn.retries} allows no retry. It is restarting; call it again, or create it "
                "with .options(max_task_retries=N) to retry such calls.")), report=True)
        if failed:
            self._fail(failed, conn.dead_blob, report=True)

    def _mark_dead(self, conn: _Conn, blob: bytes) -> list:
        """(lock held) The actor is dead for good: every call not answered fails."""
        conn.state = "dead"
        conn.dead_blob = blob or serialization.dumps_error(ActorDiedError(
            f"The actor {conn.class_name} ({conn.actor_id:#x}) is dead. Create a new actor."))
        if conn.chan is not None:
            conn.chan.close()
            conn.chan = None
        failed = self._stale(conn, 1 << 62) + list(conn.waiting) + conn.ready
        conn.waiting.clear()
        conn.ready = []
        self.blocked.discard(conn)
        return failed

    def _stale(self, conn: _Conn, incarnation: int) -> list:
        """(lock held) Calls in flight to processes of this actor older than ``incarnation``, in order."""
        out = [c for c in self.inflight.values() if c.conn is conn and c.incarnation < incarnation]
        for c in out:
            self.inflight.pop(c.task_id, None)
        out.sort(key=lambda c: c.task_id)
        return out

    def _reconnect(self, conn: _Conn, msg: P.ActorInfo) -> None:
        if conn.chan is not None:
            conn.chan.close()
        eps = list(msg.endpoints)
        local = self.driver.conn.get("local", True) and msg.host == self.local_host
        ep = next((e for e in eps if e.startswith("ipc://")), None) if local else None
        ep = ep or next((e for e in eps if e.startswith("tcp://")), eps[0])
        conn.chan = transport.connect_push(ep, self.driver.signer)
        conn.incarnation = msg.incarnation

    def _fail(self, calls: list, blob: bytes, report: bool) -> None:
        """(no lock) Fail calls here with ``blob``; tell the head so their objects settle."""
        d = self.driver
        by_actor: dict[int, list] = {}
        records = []
        for c in calls:
            objs = tuple((c.task_id + i, P.ERROR, blob) for i in range(c.num_returns))
            records.extend(objs)
            by_actor.setdefault(c.conn.actor_id, []).append(
                P.CallDoneRecord(c.task_id, c.attempt, P.ERROR, objs, 0.0, 0.0))
        d._store(records)
        if report and not d.closed:
            for actor_id, done in by_actor.items():
                try:
                    d._send(P.ActorCallsDone(actor_id, done))
                except Exception:  # closing
                    pass

    # ---- handles and kill
    def tick(self) -> None:
        """Handles collected since last time: release actors no handle holds. The receiver thread
        calls this; so may any thread that needs the releases sent now (one at a time)."""
        rel = self.released
        with self._tick_lock:
            while True:
                try:
                    actor_id = rel.popleft()
                except IndexError:
                    break
                n = self.handles.get(actor_id, 0) - 1
                if n > 0:
                    self.handles[actor_id] = n
                    continue
                self.handles.pop(actor_id, None)
                if actor_id not in self.escaped:
                    self.driver._send(P.ReleaseActor(actor_id))

    def kill(self, actor_id: int, meta: dict, no_restart: bool) -> None:
        d = self.driver
        d._send(P.KillActor(actor_id, no_restart))
        if not no_restart:
            return
        conn = self.conns.get(actor_id)
        if conn is None:
            return
        with d.lock:
            failed = self._mark_dead(conn, serialization.dumps_error(ActorDiedError(
                f"The actor {conn.class_name} ({actor_id:#x}) was killed with jpar.kill(). Create a new actor.")))
        if failed:
            self._fail(failed, conn.dead_blob, report=True)

    def close(self) -> None:
        for conn in self.conns.values():
            if conn.chan is not None:
                conn.chan.close()
                conn.chan = None


def actor_client(d: Driver) -> ActorClient:
    c = d._actor_client
    if c is None:
        with d.lock:
            c = d._actor_client
            if c is None:
                c = d._actor_client = ActorClient(d)
    return c


def _top_refs(args: tuple, kwargs: dict) -> list:
    refs = [a for a in args if type(a) is ObjectRef]
    if kwargs:
        refs.extend(v for v in kwargs.values() if type(v) is ObjectRef)
    return refs


# ---------------------------------------------------------------- public functions
def make_actor_class(cls: type, options: dict) -> ActorClass:
    """What ``@jpar.remote`` makes of a class."""
    if isinstance(cls, ActorClass):
        raise TypeError("This class is already remote; apply @jpar.remote once.")
    return ActorClass(cls, ActorOptions.build(**options))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """End an actor now: calls in flight and later ones raise ActorDiedError. With
    ``no_restart=False`` an actor with restarts left is restarted instead (like a crash)."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"jpar.kill() takes an actor handle, got {type(actor).__name__}. "
                        "To stop a task use jpar.cancel(ref).")
    d = first_use_driver("jpar.kill()")
    actor_client(d).kill(actor._actor_id, actor._meta, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with ``.options(name=name)``, from any driver of the cluster."""
    if not isinstance(name, str) or not name:
        raise ValueError("jpar.get_actor() needs the actor's name as a non-empty string.")
    d = first_use_driver("jpar.get_actor()")
    info = d.query("actor", name, timeout=30)
    if info is None:
        raise ValueError(f"Failed to look up actor with name {name!r}: no live actor has it. Create it with "
                         f"Cls.options(name={name!r}).remote() (or get_if_exists=True to do both).")
    meta = {"class_name": info["class_name"], "methods": info["methods"],
            "max_task_retries": info.get("max_task_retries", 0)}
    return ActorHandle(info["actor_id"], meta)
