"""The Ray backend: jpar's API on a Ray cluster.

``jpar.init(backend="ray")`` starts a local Ray (``ray.init(num_cpus=...)``, stopped by
``jpar.shutdown()``); ``address="auto"``, ``"host:port"`` or ``"ray://host:10001"`` connects to a
running cluster (``jpar.shutdown()`` only disconnects); a Ray already initialized in the process is
used as it is (and left running).

How the API maps onto Ray:

* a task is one call of :func:`~jpar.backends.ray.worker.run_task` (a ``ray.remote`` function)
  with Ray's options (num_returns, max_retries, retry_exceptions, num_cpus/num_gpus/resources);
  the user's function travels as jpar's cloudpickle bytes (source lines kept for tracebacks) and
  is unpickled once per worker process;
* a jpar ObjectRef is a random 62-bit id mapped to a Ray ObjectRef in this process's
  :class:`~jpar.backends.ray.worker.RefTable`; top-level ref arguments are passed to Ray as Ray
  refs (Ray resolves them where the task runs), refs nested in values travel with their Ray ref
  (Ray's borrowing keeps them alive); a collected jpar ref drops its Ray ref;
* an actor is a Ray actor hosting the user's class (:class:`~.worker.ActorHost`); its handle's
  metadata carries the Ray actor handle, so Ray's reference counting decides its lifetime;
* output: the task wrapper captures stdout/stderr under jpar's task id and sends it (and, while a
  front end watches events, running/done/failed notices) to a per-driver :class:`~.worker.Sink`
  actor that this process long-polls; Ray's ``log_to_driver`` is off when jpar starts Ray;
* engines (``%%remote``, ``options(placement=i)``): jpar-managed :class:`~.worker.Engine` actors,
  one per CPU of the cluster, pinned to their node, started on first use; placed tasks are calls
  on them, run one at a time in order, so ``jpar.notebook.engine_ns`` namespaces persist. They
  hold no CPU (``num_cpus=0``): a placed task runs beside Ray's own tasks.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any

import ray

from .. import Backend, Capabilities
from ...errors import (ActorDiedError, ClusterError, EngineCrashedError, ForeignRefError, GetTimeoutError,
                       ObjectFreedError, ObjectLostError, TaskCancelledError, TaskError)
from ...refs import ObjectRef
from ...pickling import shipped_definition
from . import escaped
from . import worker as W
from .frontend import RayFrontEnd

__all__ = ["RayBackend"]

_INLINE_FN = 64 * 1024        # a pickled function below this travels with each task; larger ones via ray.put
_HOST = ray.remote(W.ActorHost)
_ASYNC_HOST = ray.remote(W.AsyncActorHost)


class RayBackend(Backend):
    """The API on a Ray cluster (a local one it starts, or one it connects to)."""

    name = "ray"
    capabilities = Capabilities(interrupt_running=True, force_cancel=True, actor_restart=True,
                                actor_concurrency=True, placement=True, add_engines=False, notebook_engines=True)

    def __init__(self, table: W.RefTable, *, owns: bool, connected: bool, address: str, driver: bool,
                 sink_name: str | None, namespace: str | None, config: Any = None):
        self.table = table
        table.namespace = namespace       # where the session's registry of escaped refs lives (escaped.py)
        self.owns = owns                  # we started this Ray: close() stops it
        self.connected = connected        # we called ray.init: close() disconnects
        self.address = address
        self.is_driver = driver
        self.sink_name = sink_name
        self.namespace = namespace
        self.config = config
        self.max_retries = 3 if config is None else config.max_retries
        self.client_no = os.getpid()
        self.closed = False
        self.started = time.time()
        self._cancelled: set = set()
        self._actor_calls: set = set()
        self._killed: set[str] = set()    # Ray ids of the actors this driver killed for good
        self._recancel: dict = {}         # task id -> [ray ref, force, recursive, first cancel, next delay]
        self._metas: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # actor metas holding Ray handles
        self.frontend = RayFrontEnd(self)

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def connect(cls, address: Any, config: Any, init_args: dict) -> "RayBackend":
        owns = connected = False
        if not ray.is_initialized():
            kwargs: dict = {"log_to_driver": False, "ignore_reinit_error": True}
            if address is None and not os.environ.get("RAY_ADDRESS"):
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                n = config.num_cpus or init_args.get("num_engines") or config.num_engines or None
                kwargs.update(address="local", num_cpus=n, include_dashboard=False)   # a new one, not ray_current_cluster's
                if config.num_gpus >= 0:
                    kwargs["num_gpus"] = config.num_gpus
                if init_args.get("resources"):
                    kwargs["resources"] = dict(init_args["resources"])
                owns = True
            else:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ClusterError(f"Could not connect to the Ray cluster at {address!r}: {exc}") from exc
            connected = True
        ctx = ray.get_runtime_context()
        try:
            gcs = ctx.gcs_address
        except Exception:
            gcs = str(address or "ray")
        cluster_id = f"ray-{ctx.get_job_id()}-{os.urandom(3).hex()}"
        namespace = ctx.namespace
        table = W.RefTable(cluster_id)
        table.client_mode = ray.util.client.ray.is_connected()   # address "ray://...": Ray Client
        W.set_table(table)
        W.register_serializer()
        sink_name = f"jpar-sink-{cluster_id}"
        b = cls(table, owns=owns, connected=connected, address=gcs, driver=True, sink_name=sink_name,
                namespace=namespace, config=config)
        b.frontend.start(W.Sink.options(name=sink_name, namespace=namespace).remote())
        return b

    @classmethod
    def in_worker(cls, table: W.RefTable, sink_name: str | None, namespace: str | None) -> "RayBackend":
        """The backend jpar.* uses inside a Ray task or actor (nested tasks)."""
        try:
            address = ray.get_runtime_context().gcs_address
        except Exception:
            address = "ray"
        return cls(table, owns=False, connected=False, address=address, driver=False, sink_name=sink_name,
                   namespace=namespace)

    @property
    def cluster_id(self) -> str:
        return self.table.cluster_id

    @property
    def released(self):
        return self.table.released

    def check_alive(self) -> None:
        raise ClusterError("This ray connection is closed; call jpar.init() again.")

    @property
    def owns_cluster(self) -> bool:
        return self.owns

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.frontend.stop()
        self._drop_ray_handles()
        if self.is_driver:
            escaped.forget(self.cluster_id, self.namespace, kill=ray.is_initialized())
        if W._TABLE is self.table:
            W.set_table(None)
        if self.connected and ray.is_initialized():
            ray.shutdown()

    def _drop_ray_handles(self) -> None:
        """Let go of the Ray handles and refs this connection holds while it is still connected, so
        Ray counts them against this cluster; a jpar actor handle used afterwards (in a notebook,
        after jpar.shutdown() and a new jpar.init()) says that its connection is closed instead of
        sending through a handle of a Ray connection that is gone."""
        for meta in list(self._metas.values()):
            meta.pop("ray", None)
        self._metas.clear()
        self.table.refs.clear()
        self._recancel.clear()

    def describe(self) -> dict:
        st = self.frontend.status(30, start_engines=False)
        return {"backend": self.name, "address": self.address, "cluster_id": self.cluster_id, "engines": st["engines"],
                "resources": self.cluster_resources(), "status": st,
                "address_info": {"address": self.address, "cluster_id": self.cluster_id, "backend": "ray"}}

    # -- tasks and objects ----------------------------------------------------------------------
    def _meta(self, task_id: int, name: str, what: Any, kw_names: list) -> list:
        """The task's header for the wrapper, as a list of plain values (see :meth:`_pack`)."""
        cur = W.current_task()
        flags = (W.EV if self.frontend.watching() else 0) | (cur.flags if cur is not None else 0)
        root = cur.root if cur is not None else 0
        return [task_id, name, what, kw_names, self.cluster_id, self.sink_name, flags, root, self.namespace]

    def _ray_ref(self, ref: ObjectRef) -> Any:
        rr = self.table.lookup(ref.id)
        if rr is None and ref.cluster == self.cluster_id:   # pickled outside Ray by another process?
            rr = escaped.find(self.cluster_id, self.namespace, ref.id)
            if rr is not None:
                self.table.add(ref.id, rr)
        if rr is None:
            if ref.cluster != self.cluster_id:
                raise ForeignRefError(
                    f"ObjectRef({ref.hex()}) was made by cluster {ref.cluster or 'unknown'}, not by the one connected "
                    f"now ({self.cluster_id}): refs do not outlive jpar.shutdown(). Re-run the code that made it.")
            raise ObjectLostError(f"ObjectRef({ref.hex()}) is not known to this process any more (its value was "
                                  "released).")
        return rr

    def _flatten(self, args: tuple, kwargs: dict) -> tuple[list, tuple, list]:
        flat, deps = [], []
        for a in (*args, *kwargs.values()):
            if type(a) is ObjectRef:
                flat.append(self._ray_ref(a))
                deps.append(a.id)
            else:
                flat.append(a)
        return flat, list(kwargs), deps

    def _pack(self, args: tuple, kwargs: dict) -> tuple[Any, list, list, list]:
        """(values, Ray refs, kw_names, dep ids): the call's values go to Ray as one argument (with
        the task's meta), and only its top-level refs as arguments of their own, which Ray resolves
        where the task runs. Ray serializes each argument separately, at ~50 us each (2-core VM):
        meta, function and each value apart made a no-op task cost twice what it does in Ray.

        That argument is a list of plain values (ints, strs, bytes, lists, None), which Ray packs
        with msgpack alone; a tuple anywhere in it made Ray pickle it (twice the cost to send, and
        to unpack in the worker). The user's values keep their tuple (pickled, as Ray pickles any
        argument it cannot msgpack exactly); a call without arguments sends None."""
        if not args and not kwargs:
            return None, [], [], []
        values, rrs, pos, deps = [], [], [], []
        for i, a in enumerate((*args, *kwargs.values())):
            if type(a) is ObjectRef:
                rrs.append(self._ray_ref(a))
                pos.append(i)
                deps.append(a.id)
                values.append(None)
            else:
                values.append(a)
        return (tuple(values), tuple(pos)), rrs, list(kwargs), deps

    def _ship(self, holder: Any, target: Any, name: str) -> list:
        """[fn_id, payload] of a function or class: pickled once (per holder), its bytes inline or,
        when large, one ray.put per process; the list itself is made once per cluster and process
        (a list, not a tuple: Ray msgpacks it, see :meth:`_pack`)."""
        cache = holder._backend_cache
        key = ("ray-box", self.cluster_id, os.getpid())
        box = cache.get(key)
        if box is None:
            fn_id, blob = shipped_definition(cache, "ray", target, name, "the Ray workers")
            box = cache[key] = [fn_id, blob if len(blob) < _INLINE_FN else [ray.put(blob)]]
        return box

    def _task_remote(self, fn: Any, options: Any) -> Any:
        prepared = fn._prepared.get("ray")
        if prepared is None:
            max_retries = self.max_retries if options.max_retries is None else options.max_retries
            opts: dict = {"num_returns": options.num_returns, "max_retries": max_retries,
                          "num_cpus": options.num_cpus, "name": fn._name}
            if options.num_gpus:
                opts["num_gpus"] = options.num_gpus
            if options.resources:
                opts["resources"] = dict(options.resources)
            r = options.retry_exceptions
            if r:
                opts["retry_exceptions"] = True if r is True else list(r)
            prepared = fn._prepared["ray"] = W.run_task.options(**opts)
        return prepared

    def submit(self, fn: Any, args: tuple, kwargs: dict, options: Any) -> Any:
        table = self.table
        table.drain()
        fnbox = self._ship(fn, fn._fn, fn._name)
        n = options.num_returns
        task_id = W.new_id(n)
        engine = None
        if options.placement >= 0:
            flat, kw_names, deps = self._flatten(args, kwargs)
            meta = self._meta(task_id, fn._name, None, kw_names)
            engine = options.placement
            handle = self.frontend.engine_handle(engine)
            rr = handle.run.options(num_returns=n, name=fn._name).remote(meta, fnbox, *flat)
        else:
            values, rrs, kw_names, deps = self._pack(args, kwargs)
            meta = self._meta(task_id, fn._name, None, kw_names)
            rr = self._task_remote(fn, options).remote([meta, fnbox, values], *rrs)
        rrs = [rr] if n == 1 else list(rr)
        refs = [table.make(task_id + i, self.client_no, rrs[i]) for i in range(n)]
        self.frontend.submitted(task_id, fn._name, rrs[0], deps, engine)
        return refs[0] if n == 1 else refs

    def put(self, value: Any) -> ObjectRef:
        self.table.drain()
        rr = ray.put(value)
        return self.table.make(W.new_id(), self.client_no, rr)

    def get(self, refs: list, timeout: float | None) -> list:
        self.table.drain()
        rrs = [self._ray_ref(r) for r in refs]
        try:
            values = ray.get(rrs, timeout=timeout)
        except BaseException as exc:
            err = self.translate(exc, refs)
            if err is exc:
                raise
            raise err from None
        self.frontend.fetched(refs)
        return values

    def translate(self, exc: BaseException, refs: list) -> BaseException:
        """A Ray error as the jpar error users expect."""
        E = ray.exceptions
        cancelled = any(r.id in self._cancelled for r in refs)
        if isinstance(exc, E.GetTimeoutError):
            return GetTimeoutError(f"jpar.get() timed out: {len(refs)} ref(s) not all ready in time.")
        if isinstance(exc, E.TaskCancelledError):
            return TaskCancelledError(self._name_of(refs))
        if isinstance(exc, E.RayTaskError):
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TaskError):
                return cause if type(cause) is not TaskError else cause.as_instanceof_cause()
            if isinstance(cause, (TaskCancelledError, ObjectFreedError, ActorDiedError)):
                return cause
            if isinstance(cause, E.TaskCancelledError):
                return TaskCancelledError(self._name_of(refs))
            if isinstance(cause, (E.RayActorError,)):
                return ActorDiedError(str(cause))
            return TaskError(getattr(exc, "function_name", "task"), str(exc), cause).as_instanceof_cause()
        if isinstance(exc, E.WorkerCrashedError):
            if cancelled:
                return TaskCancelledError(self._name_of(refs), "jpar.cancel(force=True)")
            return EngineCrashedError(f"The Ray worker running the task died and its retries are spent: {exc}")
        if isinstance(exc, E.RayActorError):
            if cancelled:
                return TaskCancelledError(self._name_of(refs))
            return ActorDiedError(str(exc))
        if isinstance(exc, E.ObjectFreedError):
            return ObjectFreedError(f"ObjectRef({exc.object_ref_hex})")
        if isinstance(exc, E.ObjectLostError):
            return ObjectLostError(str(exc))
        return exc

    def _name_of(self, refs: list) -> str:
        names = {self.frontend.name_of(r.id) for r in refs if r.id in self._cancelled}
        return f"task {'/'.join(sorted(n for n in names if n)) or 'the task'}"

    def wait(self, refs: list, num_returns: int, timeout: float | None, fetch_local: bool) -> tuple[list, list]:
        self.table.drain()
        if num_returns == 0 or not refs:
            return [], list(refs)
        rrs = [self._ray_ref(r) for r in refs]
        ready, _ = ray.wait(rrs, num_returns=num_returns, timeout=timeout, fetch_local=fetch_local)
        ready = set(ready)
        done = [r for r, rr in zip(refs, rrs) if rr in ready]
        rest = [r for r, rr in zip(refs, rrs) if rr not in ready]
        return done, rest

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self.cancel_id(ref.id, force, recursive)

    def cancel_id(self, task_id: int, force: bool, recursive: bool) -> None:
        """ray.cancel the task behind this id (never raises); its get() raises TaskCancelledError."""
        rr = self.table.lookup(task_id)
        if rr is None:
            return
        self._cancelled.add(task_id)
        is_actor_call = task_id in self._actor_calls or task_id in self.frontend.placed   # Ray cannot force-cancel those
        force = force and not is_actor_call
        try:
            ray.cancel(rr, force=force, recursive=recursive)
        except Exception:
            pass
        placed = self.frontend.placed.get(task_id)
        if placed is not None:     # a placed task runs as an engine's actor call: interrupt it there
            try:
                self.frontend.engine_handle(placed[0]).interrupt.remote(task_id)
            except Exception:
                pass
        # ray.cancel is best effort: one that reaches a task while its worker is being leased is
        # lost, so the output pump repeats it until the task ends (see recancel)
        self._recancel[task_id] = [rr, force, recursive, time.monotonic(), 0.1]
        self.frontend.cancelled(task_id)

    def recancel(self) -> None:
        """Repeat the cancels of tasks that have not ended yet (backing off, for up to a minute)."""
        items = list(self._recancel.items())
        if not items:
            return
        try:
            ready, _ = ray.wait([e[0] for _, e in items], num_returns=len(items), timeout=0, fetch_local=False)
        except Exception:
            return
        ready = set(ready)
        now = time.monotonic()
        for tid, e in items:
            rr, force, recursive, since, delay = e
            if rr in ready or now - since > 60:
                self._recancel.pop(tid, None)
            elif now - since >= delay:
                e[4] = delay * 2
                try:
                    ray.cancel(rr, force=force, recursive=recursive)
                except Exception:
                    pass

    def free(self, refs: list) -> None:
        """jpar.free: each ref's entry in this process's table now names a stored error (a Ray task
        error whose cause is ObjectFreedError) instead of its value, so get, wait, futures, tasks
        given the ref and copies of it sent elsewhere all raise ObjectFreedError; the table's Ray ref
        to the value goes, and Ray frees the value once no other process borrows it (a task still
        running with it). Ray's own ``internal.free`` is gone (absent from Ray 2.60), so dropping the reference
        is the way. A pending task runs on; Ray discards the value it makes."""
        table = self.table
        table.drain()
        with table.lock:
            entries = [(r, table.refs.get(r.id)) for r in refs]
        for ref, e in entries:
            if e is None or len(e) > 2:
                continue            # unknown here (released), or freed already (marked by a third item)
            err = ray.exceptions.RayTaskError("jpar.free", "", ObjectFreedError(repr(ref)))
            e[0] = ray.put(err)
            e.append("freed")
            self.frontend._finish(ref.id)   # its output context stays (late output), its Ray ref goes

    def future(self, ref: ObjectRef):
        import concurrent.futures

        rr = self._ray_ref(ref)
        out: concurrent.futures.Future = concurrent.futures.Future()
        inner = rr.future()

        def done(f):
            try:
                out.set_result(f.result())
            except BaseException as exc:
                err = self.translate(exc, [ref])
                out.set_exception(err)

        inner.add_done_callback(done)
        return out

    def describe_ref(self, ref: ObjectRef) -> dict:
        rr = self.table.lookup(ref.id)
        if rr is None:
            return {"state": "released", "task": None, "engine": None}
        ready, _ = ray.wait([rr], timeout=0, fetch_local=False)
        return {"state": "ready" if ready else "pending", "task": self.frontend.name_of(ref.id), "engine": None}

    # -- actors ---------------------------------------------------------------------------------
    def create_actor(self, actor_class: Any, args: tuple, kwargs: dict, options: Any) -> tuple[int, dict, bool]:
        opts = options
        name = actor_class._name
        clsbox = self._ship(actor_class, actor_class._cls, name)
        flat, kw_names, _deps = self._flatten(args, kwargs)
        ray_opts: dict = {"num_cpus": opts.num_cpus, "max_restarts": opts.max_restarts,
                          "max_task_retries": opts.max_task_retries}
        if opts.num_gpus:
            ray_opts["num_gpus"] = opts.num_gpus
        if opts.resources:
            ray_opts["resources"] = {k: v for k, v in opts.resources.items() if v}
        if opts.max_concurrency is not None:
            ray_opts["max_concurrency"] = opts.max_concurrency
        if opts.max_pending_calls != -1:
            ray_opts["max_pending_calls"] = opts.max_pending_calls
        if opts.name:
            ray_opts["name"] = opts.name
            ray_opts["namespace"] = opts.namespace or self.namespace
            ray_opts["get_if_exists"] = opts.get_if_exists
        if opts.lifetime == "detached":
            ray_opts["lifetime"] = "detached"
        host = _ASYNC_HOST if actor_class._is_async else _HOST
        task_id = W.new_id()
        info = {"class_name": name, "methods": actor_class._methods, "max_task_retries": opts.max_task_retries,
                "name": opts.name or "", "actor_id": 0}
        meta = self._meta(task_id, f"{name}.__init__", None, kw_names)
        h = host.options(**ray_opts).remote(meta, clsbox, info, *flat)
        actor_id = _actor_id(h)   # derived from Ray's id: every handle (get_actor's too) agrees on it
        meta_out = self._held(_Meta(info, actor_id=actor_id, ray=h, is_async=actor_class._is_async))
        return actor_id, meta_out, not opts.detached

    def _held(self, meta: "_Meta") -> "_Meta":
        self._metas[id(meta)] = meta
        return meta

    def _ray_handle(self, handle: Any) -> Any:
        h = handle._meta.get("ray")
        if h is None:
            raise ClusterError(f"This handle of the actor {handle._meta.get('class_name', '?')} belongs to a Ray "
                               "connection that jpar.shutdown() closed; get the actor again with jpar.get_actor() "
                               "(named actors) or create it again on the running cluster.")
        return h

    def call_actor(self, handle: Any, method: str, num_returns: int, args: tuple, kwargs: dict) -> Any:
        self.table.drain()
        m = handle._meta
        h = self._ray_handle(handle)
        values, rrs, kw_names, deps = self._pack(args, kwargs)
        task_id = W.new_id(num_returns)
        name = f"{m['class_name']}.{method}"
        meta = self._meta(task_id, name, method, kw_names)
        if h._actor_id.hex() in self._killed:
            # ray.kill is asynchronous in the core worker: a call right after it may still reach the
            # actor, so the driver that killed it fails the call itself, as the API promises.
            error = ActorDiedError(f"The actor {m['class_name']} was killed (jpar.kill).")
            call = W.fail_with if num_returns == 1 else W.fail_with.options(num_returns=num_returns)
            rr = call.remote(error)
        else:
            call = h.call if num_returns == 1 else h.call.options(num_returns=num_returns)
            rr = call.remote([meta, values], *rrs)
        rrs = [rr] if num_returns == 1 else list(rr)
        refs = [self.table.make(task_id + i, self.client_no, rrs[i]) for i in range(num_returns)]
        self._actor_calls.add(task_id)
        if len(self._actor_calls) > 100_000:
            self._actor_calls.clear()
        self.frontend.submitted(task_id, name, rrs[0], deps, None, actor=handle._actor_id)
        return refs[0] if num_returns == 1 else refs

    def kill_actor(self, handle: Any, no_restart: bool) -> None:
        h = self._ray_handle(handle)
        try:
            ray.kill(h, no_restart=no_restart)
        except ValueError:
            return
        if no_restart:   # ray.kill is asynchronous: return once the GCS has it dead, so later calls fail
            self._killed.add(h._actor_id.hex())
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    state = ray._private.state.actors(actor_id=h._actor_id.hex()).get("State")
                except Exception:
                    break
                if state == "DEAD":
                    break
                time.sleep(0.02)

    def get_actor(self, name: str, namespace: str | None) -> tuple[int, dict] | None:
        try:
            h = ray.get_actor(name, namespace=namespace or self.namespace)
        except ValueError:
            return None
        try:
            info = ray.get(h.meta.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            return None
        actor_id = _actor_id(h)
        return actor_id, self._held(_Meta(info, actor_id=actor_id, ray=h))

    def actor_state(self, actor_id: int) -> str:
        return "a Ray actor"

    # -- the cluster ----------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        engines: dict = {}
        for e in self.frontend.engine_rows(started_only=True):
            engines.setdefault(e["node"], []).append(e["id"])
        out = []
        for n in ray.nodes():
            if n.get("Alive"):
                out.append(dict(n, Engines=engines.get(n["NodeID"], [])))
        return out

    def cluster_resources(self) -> dict:
        return {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}

    def available_resources(self) -> dict:
        return {k: v for k, v in ray.available_resources().items() if not k.startswith("node:")}

    def runtime_context(self) -> dict:
        from ...context import get_runtime_context

        c = get_runtime_context()
        return {"task_id": c.task_id, "engine_id": c.engine_id, "node_id": c.node, "actor_id": c.actor_id,
                "cancelled": lambda: c.is_canceled() if c.task_id is not None else False}

    def __repr__(self) -> str:
        return f"RayBackend({self.address!r})"


class _Meta(dict):
    """An actor handle's metadata (a dict), weakly referable so the backend can drop the Ray handle in it
    at close (see RayBackend._drop_ray_handles)."""

    __slots__ = ("__weakref__",)


def _actor_id(h: Any) -> int:
    return W.actor_jid(h._actor_id.binary())
