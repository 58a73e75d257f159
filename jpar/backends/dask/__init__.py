"""The dask backend: jpar's API on a Dask distributed cluster.

``jpar.init(backend="dask")`` starts a ``LocalCluster`` (one single-threaded worker process per
engine, each declaring the resource ``CPU: 1``) that ``shutdown()`` stops;
``address="tcp://host:port"`` connects to a running scheduler and a ``distributed.Client``
passed as ``address`` is used as it is (and left open). An engine is a Dask worker; its engine
id is the worker's name when that is an integer (LocalCluster's 0, 1, ...).

How the API maps onto Dask:

- A task is a Dask task keyed ``jpar-<cluster>-<ref id>`` running :func:`.worker.run_task`; the
  function is pickled once (``fn._backend_cache["dask"]``) and unpickled once per worker process.
  Top-level ObjectRef arguments travel as Dask futures, so Dask resolves them where the task
  runs; refs nested in containers travel as refs and ``jpar.get`` inside the task rebuilds the
  future from the key. ``num_returns=n`` adds n small tasks picking the tuple's items.
- Errors: the wrapper raises an error that is both ``jpar.TaskError`` and the user's type, with
  the remote traceback. ``retry_exceptions`` reruns inside the wrapper; a task whose worker died
  is rerun by Dask's scheduler, at most ``max_retries`` times (:mod:`.retries`, a scheduler plugin,
  bounds Dask's cluster-wide ``allowed-failures`` per task), then fails with EngineCrashedError.
- Cancel: queued tasks are dropped (``Client.cancel``); a running task cannot be interrupted: it
  runs to its end and its result is discarded; ``force=True`` restarts its worker (needs a
  nanny), as Ray's force kills its worker.
- Resources: ``num_cpus`` / ``num_gpus`` / custom resources become Dask resources (``CPU``,
  ``GPU``, ...). A request no worker can ever meet raises ResourceError at submission. On a
  cluster whose workers declare no ``CPU`` resource, ``num_cpus`` is not enforced (each worker
  thread runs one task at a time).
- Actors are Dask actors hosting :class:`.worker.ActorHost`, which runs each caller's calls in
  order, one at a time. A call to a placed actor goes straight to its worker (a Dask actor call,
  :mod:`.actor_calls`); before the actor is placed, a call is a Dask task that hands it on. A
  direct call's ref becomes a Dask key only when another task or process needs it. Names live in the scheduler's metadata, so ``get_actor`` works from
  every client of the cluster while the creating driver holds the actor.
- Output: see :mod:`.worker`; the driver receives it on a topic and hands it to the output
  handler as :class:`jpar.events.OutputRecord` under the ref's id.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import random
import threading
import time
from typing import Any

import distributed
from distributed import Client, Future

from .. import Backend, Capabilities
from ...errors import (ActorDiedError, ClusterError, EngineCrashedError, GetTimeoutError, JparError, ResourceError,
                       TaskCancelledError)
from ...pickling import dumps_args, shipped_definition
from ...refs import ArgRef, ObjectRef, check_cluster
from . import actor_calls as AC
from . import release as REL
from . import retries as R
from . import worker as W

__all__ = ["DaskBackend", "engine_backend"]

log = logging.getLogger("jpar.dask")

_ACTORS = "jpar-actors"     # scheduler metadata: name -> [actor_id, meta]


class DaskBackend(Backend):
    """The API on one Dask cluster, through one ``distributed.Client``."""

    name = "dask"
    capabilities = Capabilities(interrupt_running=False, force_cancel=True, actor_restart=False,
                                actor_concurrency=False, placement=True, add_engines=False, notebook_engines=True,
                                processes=False)   # Dask actors live in a worker process

    def __init__(self, client: Client, cluster_id: str, *, cluster: Any = None, owns_client: bool = False,
                 engine: bool = False):
        self.client = client
        self.cluster_id = cluster_id
        self._cluster = cluster                  # the LocalCluster this backend started (stopped by close)
        self._owns_client = owns_client
        self._engine = engine                    # inside a worker: the engine's own client
        self.closed = False
        self.released: collections.deque = collections.deque()
        self.prefix = random.getrandbits(30) | (1 << 30)     # this client's part of every id it makes
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}    # ref id -> the Dask future (refs this process made)
        self._names: dict[int, str] = {}
        self._main: dict[int, Future] = {}       # num_returns > 1: item ref id -> the task's future
        self._cancelled: set[int] = set()
        self._freeing: dict = {}                 # key -> Future: freed while pending, released when done (.free)
        self._actor_calls: set[int] = set()
        self._call_actor: dict[int, int] = {}    # actor call ref id -> the actor (its outcome is kept there)
        self._proxies: dict[int, Any] = {}       # actor id -> Dask's proxy of the actor (direct calls)
        self._forget: dict[int, list] = {}       # actor id -> released call ids not yet sent (_send_forget)
        self._forget_n = 0
        self._forgot = time.monotonic()
        self._actors: dict[int, Future] = {}     # actor id -> Dask actor future (kept while owned)
        self._actor_names: dict[int, str] = {}
        self._actor_futures: dict[int, Future] = {}
        self._killed: set[int] = set()
        self._seq: dict[int, itertools.count] = {}
        self._escaped_actors: set[int] = set()
        self._dropped_actors: collections.deque = collections.deque()
        self._workers_cache: tuple[float, dict] = (0.0, {})
        self._pids: dict[str, int] = {}
        self._met: dict = {}                     # resource request -> the Dask resources that met it
        self._max_retries: int | None = None
        import dask

        # the scheduler's allowed-failures (read at connect): tasks with another max_retries carry it
        self._allowed_failures = int(dask.config.get("distributed.scheduler.allowed-failures"))
        from .frontend import DaskFrontEnd

        self.frontend = DaskFrontEnd(self)

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def connect(cls, address: Any, config: Any, init_args: dict) -> "DaskBackend":
        cluster = None
        if isinstance(address, Client):
            client, owns = address, False
        elif address is None:
            from distributed import LocalCluster

            n = init_args.get("num_engines") or config.num_engines
            if not n:
                n = int(-(-config.num_cpus // 1)) if config.num_cpus else (os.cpu_count() or 1)
            resources = {"CPU": 1, **{k: v for k, v in (init_args.get("resources") or {}).items()}}
            # the workers are children of this process, in its process group: W.dask_setup makes them
            # ignore SIGINT, which Jupyter's interrupt (and Ctrl-C in a terminal) sends to the whole group
            import dask

            preload = [*(dask.config.get("distributed.worker.preload") or []), W.__name__]
            # the scheduler's HTTP server (health, metrics; Dask's dashboard when bokeh is there) on a free
            # loopback port: Dask's default, 8787, is often another cluster's, and that start then warns
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                                   host="127.0.0.1", resources=resources, silence_logs=logging.ERROR,
                                   preload=preload)
            try:
                client = Client(cluster, set_as_default=False)
            except BaseException:
                cluster.close()
                raise
            owns = True
        elif isinstance(address, str):
            try:
                client = Client(address, set_as_default=False, timeout=config.start_timeout_s)
            except OSError as exc:
                raise ClusterError(f"Could not reach the Dask scheduler at {address}: {exc}. Check the address "
                                   "(tcp://host:port) and that the scheduler runs.") from exc
            owns = True
        else:
            raise ClusterError(f"init(backend='dask', address=...) takes None (start a LocalCluster), a scheduler "
                               f"address 'tcp://host:port' or a distributed.Client, not {type(address).__name__}.")
        sid = client.scheduler_info(n_workers=0)["id"]
        b = cls(client, "dask-" + sid.split("-", 1)[-1][:12], cluster=cluster, owns_client=owns)
        b._max_retries = config.max_retries
        client.subscribe_topic(W.OUTPUT_TOPIC, b.frontend._on_output)
        try:
            client.register_plugin(R.MaxRetries())
            b._allowed_failures = client.run_on_scheduler(R.allowed_failures)
        except Exception as exc:   # a scheduler without jpar: Dask's allowed-failures rules alone
            log.warning("max_retries cannot bound reruns after worker deaths on this Dask cluster (its scheduler "
                        "could not load jpar's plugin: %s); Dask's distributed.scheduler.allowed-failures applies.",
                        exc)
        return b

    @property
    def owns_cluster(self) -> bool:
        return self._cluster is not None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.frontend._close()
        self._futures.clear()
        self._main.clear()
        self._actors.clear()
        self._actor_futures.clear()
        try:
            if self._owns_client or self._cluster is not None:
                self.client.close()
            else:
                for topic in (W.OUTPUT_TOPIC, W.EVENTS_TOPIC):
                    if topic in self.client._event_handlers:
                        self.client.unsubscribe_topic(topic)
        finally:
            if self._cluster is not None:
                self._cluster.close()

    def check_alive(self) -> None:
        raise ClusterError("This dask connection is closed; call jpar.init() again.")

    def describe(self) -> dict:
        st = self.frontend.status(10)
        addr = self.client.scheduler.address
        return {"backend": self.name, "address": addr, "cluster_id": self.cluster_id, "engines": st["engines"],
                "resources": st["resources"], "status": st,
                "address_info": {"address": addr, "cluster_id": self.cluster_id, "events": None,
                                 "connection_file": ""}}

    def __repr__(self) -> str:
        return f"DaskBackend({self.client.scheduler.address!r})"

    # -- ids, keys, refs ------------------------------------------------------------------------
    def key(self, object_id: int) -> str:
        return f"jpar-{self.cluster_id}-{object_id:x}"

    def _new_ids(self, n: int = 1) -> int:
        with self._lock:
            first = next(self._ids)
            for _ in range(n - 1):
                next(self._ids)
        return (self.prefix << 32) | first

    def _fut(self, ref: ObjectRef) -> Future:
        f = self._futures.get(ref.id)
        if f is None:   # a ref made by another client (passed in a container, or to an actor): by its key
            f = self._future_by_key(self.key(ref.id))
        return f

    def _dep(self, ref: ObjectRef) -> Future:
        """The Dask future of a ref, as another task's argument: a direct actor call becomes the
        Dask task that asks its actor for the outcome (:mod:`.actor_calls`)."""
        f = self._fut(ref)
        if type(f) is AC.CallFuture:
            meta = {"key": f"jpar-actor-{self.cluster_id}-{f.actor:x}"}
            f = self.client.submit(W.call_outcome, self._actor_future(f.actor, meta), ref.id, key=self.key(ref.id),
                                   pure=False)
            self._futures[ref.id] = f
        return f

    def ref_escaping(self, ref: ObjectRef) -> None:
        """A ref of this process is being pickled (into a value another process may read by key)."""
        if type(self._futures.get(ref.id)) is AC.CallFuture:
            self._dep(ref)

    def _future_by_key(self, key: str) -> Future:
        """A future of a key this client did not make; the scheduler is told this client wants it."""
        known = key in self.client.futures
        f = Future(key, self.client)
        if not known:
            self.client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})
        return f

    def _drain(self) -> None:
        """Forget the refs collected since the last call and release their values (:mod:`.release`)."""
        REL.drain(self)

    def _send_forget(self) -> list:
        return REL.send_forget(self)

    def _context(self) -> tuple[int, int, int, bool]:
        """(owner, root, parent, events) for a submission from this thread."""
        ctx = W.current_task()
        if ctx is not None:
            return ctx.owner, ctx.root, ctx.task_id, ctx.events
        return self.prefix, 0, 0, self.frontend.watched()

    def _pack(self, name: str, args: tuple, kwargs: dict, top_refs: bool = True) -> tuple[bytes, list, list]:
        """The call's arguments pickled, top-level refs and arrays replaced by ArgRef(i): (payload,
        futures and arrays, ref ids). A top-level numpy array goes to Dask as it is, which ships its
        buffer out of band (pickle protocol 5); inside jpar's payload it would be copied into the
        pickle, then into Dask's message, and back on the worker (3.6-4.8x slower for 10-100 MB)."""
        deps: list = []
        ids: list = []

        def sub(v):
            if top_refs:
                if isinstance(v, ObjectRef):
                    check_cluster((v,), self.cluster_id)
                    deps.append(self._dep(v))
                    ids.append(v.id)
                    return ArgRef(len(deps) - 1)
                if type(v).__name__ == "ndarray" and type(v).__module__ == "numpy" and not v.dtype.hasobject:
                    deps.append(v)
                    return ArgRef(len(deps) - 1)
            return v

        a = tuple(sub(v) for v in args)
        k = {key: sub(v) for key, v in kwargs.items()}
        return dumps_args(name, a, k), deps, ids

    # -- tasks and objects ----------------------------------------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, options: Any) -> Any:
        self._drain()
        fn_hash, blob = _definition(fn._backend_cache, fn._fn, fn._name)
        name = fn._name
        payload, deps, dep_ids = self._pack(name, args, kwargs)
        n = options.num_returns
        tid = self._new_ids(n)
        resources = self._resources(options.resource_tuple())
        workers = self._placement(options.placement) if options.placement >= 0 else None
        owner, root, parent, events = self._context()
        max_retries = options.max_retries
        if max_retries is None:
            max_retries = self._default_retries()
        retry = options.retry_exceptions
        if not isinstance(retry, bool):
            retry = tuple(retry)
        header = (fn_hash, name, tid, self.cluster_id, owner, root or tid, events, retry,
                  (1 << 30) if max_retries < 0 else max_retries)
        key = self.key(tid) if n == 1 else f"{self.key(tid)}-all"
        self.frontend._submitted(tid, n, name, dep_ids, parent, events, args=len(payload))
        if header[8] == self._allowed_failures:
            f = self.client.submit(W.run_task, header, blob, payload, *deps, key=key, pure=False, retries=0,
                                   resources=resources, workers=workers, allow_other_workers=False)
        else:   # reruns after worker deaths other than the cluster's: the scheduler plugin sets them
            import dask

            with dask.annotate(**{R.ANNOTATION: header[8]}):
                f = self.client.submit(W.run_task, header, blob, payload, *deps, key=key, pure=False, retries=0,
                                       resources=resources, workers=workers, allow_other_workers=False)
        return self._refs(tid, n, f, name)

    def _refs(self, tid: int, n: int, f: Future, name: str) -> Any:
        if n == 1:
            self._futures[tid] = f
            self._names[tid] = name
            return ObjectRef(tid, self.prefix, self)
        refs = []
        for i in range(n):
            item = self.client.submit(W.pick, f, i, n, name, key=self.key(tid + i), pure=False)
            self._futures[tid + i] = item
            self._main[tid + i] = f
            self._names[tid + i] = name
            refs.append(ObjectRef(tid + i, self.prefix, self))
        return refs

    def put(self, value: Any) -> ObjectRef:
        self._drain()
        tid = self._new_ids()
        key = self.key(tid)
        with self._blocking():
            f = self.client.scatter({key: value})[key]
        self._futures[tid] = f
        self._names[tid] = "put"
        return ObjectRef(tid, self.prefix, self)

    def get(self, refs: list, timeout: float | None) -> list:
        self._drain()
        check_cluster(refs, self.cluster_id)
        fs = [self._fut(r) for r in refs]
        with self._blocking():
            if timeout is None and not self._cancelled:   # the common case: one round trip, as Dask's own
                try:
                    if self._call_actor and any(type(f) is AC.CallFuture for f in fs):
                        return AC.gather(self.client, fs)
                    return self.client.gather(fs)
                except BaseException:   # an error, or an interrupt: the path below says which ref, in order
                    if not any(f.status in ("error", "cancelled", "lost") for f in fs) and not all(f.done() for f in fs):
                        raise
            if not all(f.done() for f in fs):
                try:
                    self._wait(fs, timeout)
                except TimeoutError:
                    raise GetTimeoutError(f"jpar.get() timed out after {timeout} s: "
                                          f"{sum(not f.done() for f in fs)} of {len(fs)} refs not ready.") from None
            for r, f in zip(refs, fs):
                if f.status != "finished" or r.id in self._cancelled:
                    self._raise(r, f)
            if self._call_actor and any(type(f) is AC.CallFuture for f in fs):
                return AC.gather(self.client, fs)
            return self.client.gather(fs)

    def _wait(self, fs: list, timeout: float | None, return_when: str = "ALL_COMPLETED") -> None:
        """distributed.wait on this backend's client (not Dask's default client)."""
        if self._call_actor and any(type(f) is AC.CallFuture for f in fs):
            AC.wait(self.client, fs, timeout, return_when == "FIRST_COMPLETED")
            return
        from distributed.client import _wait

        self.client.sync(_wait, fs, timeout=timeout, return_when=return_when)

    def _raise(self, ref: ObjectRef, f: Future) -> None:
        name = self._names.get(ref.id, "the task")
        if ref.id in self._cancelled or f.status == "cancelled":
            raise TaskCancelledError(name)
        try:
            exc = f.exception()
        except Exception as e:   # cancelled meanwhile, or the scheduler forgot it
            exc = e
        if isinstance(exc, JparError):
            raise exc
        if ref.id in self._actor_calls:
            raise ActorDiedError(f"The actor behind {name} is gone ({type(exc).__name__}: {exc}).") from exc
        if type(exc).__name__ == "KilledWorker":
            raise EngineCrashedError(f"{name} was running on engines that died ({exc}); its retries "
                                     "(max_retries) are spent.") from exc
        if "Cancelled" in type(exc).__name__:
            raise TaskCancelledError(name, "a task it depends on was cancelled") from exc
        raise exc

    def wait(self, refs: list, num_returns: int, timeout: float | None, fetch_local: bool) -> tuple[list, list]:
        self._drain()
        check_cluster(refs, self.cluster_id)
        fs = [self._fut(r) for r in refs]
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._blocking():
            while True:
                done = sum(f.done() for f in fs)
                left = None if deadline is None else deadline - time.monotonic()
                if done >= num_returns or (left is not None and left <= 0):
                    break
                try:
                    self._wait([f for f in fs if not f.done()], left, "FIRST_COMPLETED")
                except TimeoutError:
                    break
        ready = [r for r, f in zip(refs, fs) if f.done()][:max(num_returns, 0)] if num_returns else []
        chosen = {id(r) for r in ready}
        return ready, [r for r in refs if id(r) not in chosen]

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        try:
            f = self._fut(ref)
            if f.status in ("finished", "error"):
                return
            self._cancelled.add(ref.id)
            self.frontend._event(ref.id, "cancelled")
            if ref.id in self._actor_calls:   # the call keeps its place in the actor's order; its result is dropped
                return
            target = self._main.get(ref.id, f)
            where = None
            if force:
                where = next((w for w, keys in self.client.processing().items() if target.key in keys), None)
            self.client.cancel([target], force=True)
            if where is not None:
                threading.Thread(target=self._restart_worker, args=(where,), daemon=True).start()
        except Exception as exc:   # cancel never raises
            log.debug("cancel of %s failed: %s", ref, exc)

    def free(self, refs: list) -> None:
        from .free import free

        free(self, refs)

    def _restart_worker(self, address: str) -> None:
        try:
            self.client.restart_workers([address], raise_for_error=False)
        except Exception as exc:   # no nanny: the task runs to its end
            log.debug("restarting %s failed: %s", address, exc)

    def future(self, ref: ObjectRef):
        import concurrent.futures

        out: concurrent.futures.Future = concurrent.futures.Future()
        f = self._fut(ref)

        def done(_):
            try:
                out.set_result(self.get([ref], None)[0])
            except BaseException as exc:
                out.set_exception(exc)

        f.add_done_callback(done)
        return out

    def describe_ref(self, ref: ObjectRef) -> dict:
        f = self._futures.get(ref.id)
        state = "cancelled" if ref.id in self._cancelled else (f.status if f is not None else "unknown")
        return {"state": {"finished": "done", "error": "failed"}.get(state, state),
                "task": self._names.get(ref.id), "engine": None}

    # -- placement and resources ----------------------------------------------------------------
    def _workers(self, fresh: bool = False) -> dict:
        """address -> the scheduler's record of each worker, cached for a second."""
        t, workers = self._workers_cache
        if fresh or time.monotonic() - t > 1.0:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            self._workers_cache = (time.monotonic(), workers)
            if fresh:
                self._met.clear()
        return workers

    def _placement(self, engine: int) -> list:
        for fresh in (False, True):
            for addr, w in self._workers(fresh).items():
                if W.engine_id_of(w.get("name"), addr) == engine:
                    return [addr]
        raise ResourceError(f"No engine {engine} in this Dask cluster (engines: "
                            f"{sorted(W.engine_id_of(w.get('name'), a) for a, w in self._workers().items())}).")

    def _default_retries(self) -> int:
        """JPAR_MAX_RETRIES, read once (reading the environment took a tenth of each submit)."""
        if self._max_retries is None:
            from ...config import Config

            self._max_retries = Config.from_env().max_retries
        return self._max_retries

    def _resources(self, wanted: tuple) -> dict | None:
        """Dask resources for a request, or ResourceError when no worker can ever meet it. A request
        met once is remembered until the workers are listed afresh (listing them is a round trip)."""
        known = self._met.get(wanted, _UNSET)
        if known is not _UNSET:
            return known
        req = {k: v for k, v in wanted if v}
        if not req:
            return None
        for fresh in (False, True):
            declared = [w.get("resources") or {} for w in self._workers(fresh).values()]
            if not any("CPU" in d for d in declared):
                req.pop("CPU", None)     # workers declare no CPUs: their threads bound concurrency
            if not req or any(all(d.get(k, 0) >= v for k, v in req.items()) for d in declared):
                self._met[wanted] = req or None
                return req or None
        have = ", ".join(f"{d}" for d in declared) or "no workers"
        raise ResourceError(f"No worker of this Dask cluster can ever provide {req} (workers declare: {have}). "
                            "Ask for less, or start workers with more (dask worker --resources 'CPU=4,GPU=1').")

    # -- actors ---------------------------------------------------------------------------------
    def create_actor(self, actor_class: Any, args: tuple, kwargs: dict, options: Any) -> tuple[int, dict, bool]:
        self._drain()
        opts = options
        name = actor_class._name
        if opts.name:
            found = self.get_actor(opts.name, opts.namespace)
            if found is not None:
                if opts.get_if_exists:
                    return found[0], found[1], False
                raise ValueError(f"An actor named {opts.name!r} already exists; pick another name, or pass "
                                 "get_if_exists=True to get it.")
        fn_hash, blob = _definition(actor_class._backend_cache, actor_class._cls, name)
        payload, deps, _ = self._pack(f"{name}.__init__", args, kwargs)
        aid = self._new_ids()
        owner, root, parent, events = self._context()
        key = f"jpar-actor-{self.cluster_id}-{aid:x}"
        resources = self._resources(opts.resource_tuple())
        f = self.client.submit(W.ActorHost, (fn_hash, name, aid, self.cluster_id, owner, events), blob, payload,
                               *deps, key=key, actor=True, pure=False, resources=resources)
        meta = {"class_name": name, "methods": actor_class._methods, "max_task_retries": opts.max_task_retries,
                "key": key, "name": opts.name or ""}
        self._actors[aid] = f
        self._actor_futures[aid] = f
        self.frontend._actor(aid, "alive", {"class": name, "name": opts.name or ""})
        if opts.name:
            self._actor_names[aid] = opts.name
            self.client.set_metadata([_ACTORS, opts.name], [aid, meta])
        return aid, meta, not opts.detached

    def _actor_future(self, aid: int, meta: dict) -> Future:
        f = self._actor_futures.get(aid)
        if f is None:
            f = self._actor_futures[aid] = self._future_by_key(meta["key"])
        return f

    def call_actor(self, handle: Any, method: str, num_returns: int, args: tuple, kwargs: dict) -> Any:
        self._drain()
        aid, meta = handle._actor_id, handle._meta
        name = f"{meta['class_name']}.{method}"
        tid = self._new_ids(num_returns)
        owner, root, parent, events = self._context()
        key = self.key(tid) if num_returns == 1 else f"{self.key(tid)}-all"
        self.frontend._submitted(tid, num_returns, name, [], parent, events, actor=aid)
        if aid in self._killed:
            f = self.client.submit(W.fail_with, ActorDiedError(f"The actor {meta['class_name']} was killed "
                                                               "(jpar.kill)."), key=key, pure=False)
        else:
            payload, _, _ = self._pack(name, args, kwargs, top_refs=False)
            with self._lock:
                seq = next(self._seq.setdefault(aid, itertools.count()))
            header = (tid, method, owner, root or tid, events)
            actor = self._actor_future(aid, meta)
            af = self._call_directly(aid, seq, header, payload) if num_returns == 1 else None
            if af is not None:
                self._futures[tid] = AC.CallFuture(af, aid, tid, self.client.loop)
                self._names[tid] = name
                self._actor_calls.add(tid)
                self._call_actor[tid] = aid
                return ObjectRef(tid, self.prefix, self)
            f = self.client.submit(W.run_actor_call, actor, self.prefix, seq, header, payload, key=key, pure=False)
            for i in range(num_returns):
                self._call_actor[tid + i] = aid
        refs = self._refs(tid, num_returns, f, name)
        for i in range(num_returns):
            self._actor_calls.add(tid + i)
        return refs

    def _proxy(self, aid: int) -> Any:
        """Dask's proxy of a placed actor (made once), or None while it is not placed (or is gone)."""
        proxy = self._proxies.get(aid)
        if proxy is None:
            actor = self._actor_futures.get(aid)
            if actor is None or actor.status != "finished":
                return None
            try:
                proxy = actor.result()
            except Exception:
                return None
            if not self._engine:     # Dask binds a proxy to the default client: this backend's is not one
                proxy._client, proxy._future = self.client, actor
            self._proxies[aid] = proxy
        return proxy

    def _call_directly(self, aid: int, seq: int, header: tuple, payload: bytes) -> Any:
        """Send the call to the actor's worker itself (a Dask actor future), or None where only a
        Dask task can hand it on: the actor is not placed yet (taking its proxy would wait for
        that), or the caller runs beside it (Dask then runs the coroutine inline)."""
        proxy = self._proxy(aid)
        if proxy is None:
            return None
        try:
            af = proxy.call(self.prefix, seq, header, payload)
        except Exception:   # the actor's worker is gone: the Dask task reports it
            return None
        if not isinstance(af, distributed.actor.BaseActorFuture) or type(af).__name__ == "EagerActorFuture":
            if hasattr(af, "close"):
                af.close()
            return None
        return af

    def kill_actor(self, handle: Any, no_restart: bool) -> None:
        aid = handle._actor_id
        self._killed.add(aid)
        f = self._actor_future(aid, handle._meta)
        try:
            with self._blocking():
                f.result(timeout=30).kill("it was killed with jpar.kill()").result(timeout=30)
        except Exception as exc:
            log.debug("kill of actor %x: %s", aid, exc)
        name = handle._meta.get("name") or self._actor_names.pop(aid, None)
        if name:
            try:
                self.client.set_metadata([_ACTORS, name], None)
            except Exception:
                pass
        self.frontend._actor(aid, "dead", {"why": "killed"})
        self._actors.pop(aid, None)
        self._actor_futures.pop(aid, None)
        self._proxies.pop(aid, None)

    def get_actor(self, name: str, namespace: str | None) -> tuple[int, dict] | None:
        found = self.client.get_metadata([_ACTORS, name], default=None)
        if not found:
            return None
        aid, meta = found
        return int(aid), {**meta, "methods": {k: tuple(v) for k, v in meta["methods"].items()}}

    def actor_handle_escaped(self, actor_id: int) -> None:
        self._escaped_actors.add(actor_id)

    def actor_handle_dropped(self, actor_id: int) -> None:
        self._dropped_actors.append(actor_id)

    def actor_state(self, actor_id: int) -> str:
        if actor_id in self._killed:
            return "dead"
        f = self._actor_futures.get(actor_id)
        return {"finished": "alive", "pending": "pending", "error": "dead"}.get(f.status, f.status) if f else "unknown"

    # -- the cluster ----------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        by_node: dict[str, dict] = {}
        for e in self.frontend.status(30)["engines"]:
            n = by_node.setdefault(e["node"], {"NodeID": e["node"], "NodeName": e["host"], "Alive": True,
                                               "NodeManagerAddress": e["host"], "Engines": [], "Resources": {}})
            n["Engines"].append(e["id"])
            for k, v in e["resources"].items():
                n["Resources"][k] = n["Resources"].get(k, 0.0) + v
        return list(by_node.values())

    def cluster_resources(self) -> dict:
        return self.frontend.status(30)["resources"]

    def available_resources(self) -> dict:
        return self.frontend.status(30)["available"]

    # -- blocking inside a task -----------------------------------------------------------------
    def _blocking(self):
        """Around a blocking wait inside a task: leave the worker's thread pool (secede) so the
        tasks waited for can run there, and take a slot again after (rejoin)."""
        return _Seceded() if self._engine else _NOTHING


_UNSET = object()


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NOTHING = _Nothing()


class _Seceded:
    """Leave the worker's thread pool while a task waits (Dask's secede/rejoin), and lend the
    task's resources (its CPU) to the tasks it waits for: Dask keeps a seceded task's resources
    held on its worker while its scheduler still sends resource-bound tasks there, so a task
    waiting for its nested tasks would otherwise wait for ever. The resources are taken back
    after rejoin (the worker's own accounting, changed on its event loop)."""

    def __enter__(self):
        self.done = False
        self.lent: dict = {}
        ctx = W.current_task()
        if ctx is None or ctx.actor != 0 or getattr(W._local, "seceded", False):
            return self
        try:
            from distributed.worker import get_worker, thread_state

            self.worker = w = get_worker()
            ts = w.state.tasks.get(thread_state.key)
            self.lent = dict(getattr(ts, "resource_restrictions", None) or {})
            if self.lent:
                w.loop.add_callback(self._shift, 1)   # runs before the secede event it queues next
            distributed.secede()
            W._local.seceded = self.done = True
        except Exception:
            self.lent = {}
        return self

    def _shift(self, sign: int) -> None:
        avail = self.worker.state.available_resources
        for r, q in self.lent.items():
            if r in avail:
                avail[r] += sign * q

    def __exit__(self, *exc):
        if self.done:
            W._local.seceded = False
            distributed.rejoin()
            if self.lent:
                self.worker.loop.add_callback(self._shift, -1)
        return False


def _definition(cache: dict, obj: Any, name: str) -> tuple[int, bytes]:
    """A function's or class's pickled form, made once (kept in its ``_backend_cache``)."""
    return shipped_definition(cache, "dask", obj, name, "the Dask workers")


# ---------------------------------------------------------------- inside workers
_engine_backend: list = []
_engine_lock = threading.Lock()


def engine_backend() -> DaskBackend:
    """The backend jpar's API uses inside a task on a Dask worker (nested tasks, get, actors)."""
    if _engine_backend and not _engine_backend[0].closed:
        return _engine_backend[0]
    with _engine_lock:
        if not _engine_backend:
            ctx = W.current_task()
            if ctx is None:
                raise ClusterError("jpar's API inside a Dask worker works only within jpar tasks and actors.")
            _engine_backend.append(DaskBackend(distributed.get_client(), ctx.cluster_id, engine=True))
    return _engine_backend[0]
