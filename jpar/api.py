"""The public API, Ray's names and semantics: init, remote, get, put, wait, cancel, shutdown."""

from __future__ import annotations

import atexit
import sys
import threading
from typing import Any, Callable

from . import backends, call_sites
from . import hooks as _hooks
from .backends import Backend
from .config import Config
from .options import TaskOptions
from .refs import ObjectRef
from .remote_function import RemoteFunction
from .context import get_runtime_context

__all__ = ["nodes", "get_runtime_context", "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel",
           "free", "cluster_resources", "available_resources", "ClusterContext", "kill", "get_actor"]

_init_lock = threading.RLock()
_atexit_registered = False


_auto_started: bool = False    # the current cluster was started on first use, not by init()
_init_args: dict = {}          # the arguments of the init() that made the current cluster


def _backend(what: str) -> Backend:
    """The current backend; with none (and outside an engine), start a local cluster on first use
    as Ray does (``JPAR_AUTO_INIT=0`` turns that off). What put/get/wait/cancel/kill/get_actor and
    ``.remote()`` use; read-only calls (cluster_resources, nodes, hooks) never start one."""
    global _auto_started
    b = backends.current()
    if b is None:
        with _init_lock:
            if backends.current() is None and Config.from_env().auto_init:
                init()
                _auto_started = True
    elif not b.closed:
        return b
    return backends.require(what)


class ClusterContext:
    """What init() returns: which backend, where the cluster is and what it has. Usable as a context manager."""

    def __init__(self, backend: Backend):
        self._backend = backend

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def address(self) -> str:
        return self._backend.describe()["address"]

    @property
    def cluster_id(self) -> str:
        return self._backend.cluster_id

    @property
    def address_info(self) -> dict:
        return self._backend.describe()["address_info"]

    def status(self) -> dict:
        return self._backend.describe()["status"]

    def __enter__(self) -> "ClusterContext":
        return self

    def __exit__(self, *exc) -> None:
        shutdown()

    def __repr__(self) -> str:
        if self._backend.closed:
            return "ClusterContext(closed)"
        d = self._backend.describe()
        return (f"ClusterContext(backend={self.backend!r}, address={d['address']!r}, engines={len(d['engines'])}, "
                f"resources={d['resources']})")

    def _repr_html_(self) -> str:
        if self._backend.closed:
            return "<b>jpar</b> cluster (closed)"
        d = self._backend.describe()
        engines, res = d["engines"], d["resources"]
        rows = "".join(
            f"<tr><td>{e['id']}</td><td>{e['node']}</td><td>{e['pid']}</td><td>{e['cpu']:.0f}%</td>"
            f"<td>{e['rss'] / 2**20:.0f} MiB</td></tr>" for e in engines)
        resources = ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items()))
        return (f"<div><b>jpar</b> ({self.backend}) cluster <code>{self.cluster_id}</code> at "
                f"<code>{d['address']}</code><br>{len(engines)} engines; resources {resources}"
                f"<table><tr><th>engine</th><th>node</th><th>pid</th><th>CPU</th><th>RSS</th></tr>{rows}</table></div>")


def init(address: str | None = None, *, ssh: list[str] | str | None = None, backend: str | None = None,
         num_engines: int | None = None,
         num_cpus: float | None = None, num_gpus: float | None = None, resources: dict | None = None,
         ignore_reinit_error: bool = True, **config_overrides: Any) -> ClusterContext:
    """Start a local cluster (head + engines), or connect to a running one.

    ``backend``: the engine that runs the work (default ``JPAR_BACKEND``, else ``"native"``,
    jpar's own runtime); see :mod:`jpar.backends`.

    Engines: ``num_engines`` if given, else one per declared CPU (``num_cpus=4``: 4 engines, so 4
    tasks run at once, as Ray starts 4 workers), else one per core. A declared ``num_cpus`` is the
    node's fixed CPU count; without it the node has one CPU per engine (an engine added later brings
    its CPU, see :func:`jpar.hooks.add_engines`).

    Calling it again returns the same cluster, so re-running a notebook cell is harmless. As in Ray,
    a cluster already running (one started on first use of put/get/remote() included) is kept:
    different arguments then raise RuntimeError with ``ignore_reinit_error=False`` and are ignored
    with a warning otherwise (jpar's default, so notebook cells can be re-run); call
    :func:`shutdown` first to start another. ``address`` may be ``"auto"`` (the newest cluster on this
    machine), a head's ``tcp://host:port`` or the path of a connection file.

    ``ssh=["host1", "host2"]`` starts the head here and ``num_engines`` engines (default: one per
    core) on each of those hosts over ssh, as ``jpar up --ssh`` does (see docs/scaling-out.md);
    ``ssh_python=``, ``ssh_options=`` and ``bind_host=`` tune it. :func:`shutdown` stops them all.
    With ``ssh``, ``resources`` are the hosts' custom resources: ``{"bigmem": 1}`` for every host, or
    ``{"host2": {"gpu_node": 1}}`` per host (``"*"``: every host).
    """
    global _atexit_registered, _auto_started, _init_args
    args = {k: v for k, v in dict(address=address, ssh=ssh, backend=backend, num_engines=num_engines, num_cpus=num_cpus,
                                  num_gpus=num_gpus, resources=resources, **config_overrides).items() if v is not None}
    with _init_lock:
        d = backends.current()
        if d is not None and not d.closed:
            how = "started on first use" if _auto_started else f"started by init({_fmt_args(_init_args)})"
            msg = (f"jpar.init({_fmt_args(args)}) was called while a cluster ({how}) is running, so that cluster "
                   "is used and these arguments have no effect. Call jpar.shutdown() before jpar.init(...) to "
                   "start a cluster with other settings.")
            if not ignore_reinit_error:   # Ray's behaviour when asked not to ignore a second init
                raise RuntimeError(f"Maybe you called jpar.init twice by accident? {msg} Pass "
                                   "ignore_reinit_error=True (jpar's default) to get the running cluster instead.")
            if _auto_started and args and args != _init_args:
                import warnings

                warnings.warn(msg, RuntimeWarning, stacklevel=2)
            return ClusterContext(d)
        config = Config.from_env(num_engines=num_engines, num_cpus=num_cpus, num_gpus=num_gpus, backend=backend,
                                 **config_overrides)
        if ssh and config.backend != "native":
            from .errors import ConfigError

            raise ConfigError(f"jpar.init(ssh=...) starts jpar's own engines over ssh, not a {config.backend} cluster. "
                              "Start that cluster with its own tools and pass its address, or use backend='native'.")
        b = backends.backend_class(config.backend).connect(
            address, config, {"num_engines": num_engines, "resources": resources, "ssh": ssh})
        backends.set_current(b)
        _auto_started, _init_args = False, args
        from . import hooks

        hooks.apply_front_end()   # a notebook front end's hooks apply to this new driver too
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
        return ClusterContext(b)


def _fmt_args(args: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())




def shutdown() -> None:
    """Disconnect; a cluster this process started is stopped, with all its processes."""
    with _init_lock:
        b = backends.current()
        if b is None or backends.engine_client() is not None:   # inside an engine: not ours to stop
            return
        backends.set_current(None)
        global _auto_started, _init_args
        _auto_started, _init_args = False, {}
        put_sites.clear()            # object ids start over with the next cluster
        call_sites.clear()
        b.close()


def is_initialized() -> bool:
    b = backends.current()
    return b is not None and not b.closed


def remote(*args, **options):
    """Make a function a remote function (a task) — bare ``@remote`` or ``@remote(num_cpus=2, ...)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@jpar.remote takes either a function/class or keyword options, e.g. @jpar.remote(num_cpus=2).")
    return lambda target: _make_remote(target, options)


def _make_remote(target, options: dict):
    if isinstance(target, type):
        from .actor import make_actor_class

        return make_actor_class(target, options)
    if not callable(target):
        raise TypeError(f"@jpar.remote expects a function or a class, got {type(target).__name__}.")
    return RemoteFunction(target, TaskOptions.build(**options))


def get(object_refs, *, timeout: float | None = None):
    """The value(s) of one ref or a list of refs, in order; raises a task's error as soon as it is known.
    ``timeout``: seconds (>= 0, or None to wait for ever); GetTimeoutError when they pass."""
    if timeout is not None and not timeout >= 0:   # also rejects NaN
        raise ValueError(f"jpar.get(timeout={timeout!r}): timeout must be a number of seconds >= 0, or None to "
                         "wait until the values are ready.")
    d = _backend("jpar.get()")
    check = backends.blocking_check()
    if check is not None:
        check()
    if isinstance(object_refs, ObjectRef):
        return d.get([object_refs], timeout)[0]
    refs = _ref_list(object_refs, "jpar.get()")
    if _hooks._progress_reporter is not None:
        return _with_progress(refs, "get", len(refs), lambda: d.get(refs, timeout))
    return d.get(refs, timeout)


def _ref_list(object_refs: Any, what: str) -> list:
    """``object_refs`` (one ref, or a list or tuple of them) as a list; a TypeError naming ``what``
    and the offending type otherwise."""
    if isinstance(object_refs, ObjectRef):
        return [object_refs]
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, got {type(object_refs).__name__}.")
    refs = list(object_refs)
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"{what} takes an ObjectRef or a list of ObjectRefs, found {type(r).__name__} in the list.")
    return refs


#: object id -> (file, line, function) of the jpar.put call that made it, the newest PUT_SITES_MAX
#: puts of this process: what the dashboard names a stored object by. Three fields of the
#: caller's frame, never the frame or a traceback (they would keep the caller's locals alive).
put_sites: dict = {}
PUT_SITES_MAX = 16384


def put(value: Any) -> ObjectRef:
    """Store a value in the cluster once; pass the ref to many tasks instead of the value."""
    if isinstance(value, ObjectRef):
        raise TypeError("Calling jpar.put() on an ObjectRef is not allowed; pass the ref itself to tasks.")
    ref = _backend("jpar.put()").put(value)
    f = sys._getframe(1)
    sites = put_sites
    sites[ref.id] = (f.f_code.co_filename, f.f_lineno, f.f_code.co_name)
    if len(sites) > PUT_SITES_MAX:      # keep the newer half: amortized O(1) (deleting the oldest one
        keep = list(sites.items())[PUT_SITES_MAX // 2:]   # by one makes next(iter()) scan the holes)
        sites.clear()
        sites.update(keep)
    return ref


def wait(object_refs: list, *, num_returns: int = 1, timeout: float | None = None, fetch_local: bool = True):
    """Split refs into (ready, not_ready) once ``num_returns`` are ready or ``timeout`` passes."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError("jpar.wait() takes a list of ObjectRefs (wrap a single ref in a list).")
    refs = list(object_refs)
    if len(set(r.id for r in refs)) != len(refs):
        raise ValueError("jpar.wait() got the same ObjectRef twice; pass each ref once.")
    if not 0 <= num_returns <= len(refs):
        raise ValueError(f"num_returns={num_returns} must be between 0 and the number of refs ({len(refs)}).")
    if timeout is not None and not timeout >= 0:   # also rejects NaN
        raise ValueError(f"jpar.wait(timeout={timeout!r}): timeout must be a number of seconds >= 0, or None to "
                         "wait until num_returns refs are ready.")
    d = _backend("jpar.wait()")
    if _hooks._progress_reporter is not None:
        return _with_progress(refs, "wait", num_returns, lambda: d.wait(refs, num_returns, timeout, fetch_local))
    return d.wait(refs, num_returns, timeout, fetch_local)


def _with_progress(refs: list, what: str, target: int, call: Callable[[], Any]):
    """Run a blocking get/wait inside the installed progress reporter's context (jpar.hooks)."""
    reporter = _hooks._progress_reporter
    ctx = reporter(refs, what, target) if reporter is not None else None
    if ctx is None:
        return call()
    with ctx:
        return call()


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task behind a ref: queued ones never run, running ones get KeyboardInterrupt
    (``force=True`` kills the engine process instead); its get() raises TaskCancelledError."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"jpar.cancel() takes an ObjectRef, got {type(object_ref).__name__}.")
    _backend("jpar.cancel()").cancel(object_ref, force, recursive)


def free(object_refs) -> None:
    """Release the values of one ref or a list of refs now, though refs to them still exist (what
    Ray's internal ``free`` did): their memory goes back at once, and every later ``get`` of them,
    or task given one as an argument, raises :class:`~jpar.errors.ObjectFreedError` (never a hang).

    For freeing what a notebook no longer needs without hunting down every variable that holds a
    ref (the dashboard's store table calls it). Semantics, the same on every backend:

    - a ref whose task has not finished: the task is *not* cancelled (``jpar.cancel`` does that);
      it runs on, its value is dropped as soon as it is made, and ``get`` raises at once;
    - a task already running with the value as an argument keeps it until it ends (the memory
      goes back then); tasks submitted later with the ref fail with ObjectFreedError;
    - freeing a ref twice, or a ref its cluster no longer knows (released), does nothing; a ref of
      another (shut down) cluster raises ForeignRefError, as every use of such a ref does.
    """
    refs = _ref_list(object_refs, "jpar.free()")
    if refs:
        b = backends.require("jpar.free()")
        from .refs import check_cluster

        check_cluster(refs, b.cluster_id)
        b.free(refs)


def nodes() -> list[dict]:
    """One entry per node (host), Ray's ``ray.nodes()`` shape: NodeID, Alive, Resources, engines."""
    return backends.require("jpar.nodes()").nodes()


def cluster_resources() -> dict:
    """Total resources of the cluster, e.g. {'CPU': 2.0}."""
    return backends.require("jpar.cluster_resources()").cluster_resources()


def available_resources() -> dict:
    """Resources not held by queued or running tasks right now."""
    return backends.require("jpar.available_resources()").available_resources()


def kill(actor, *, no_restart: bool = True) -> None:
    """End an actor now; its pending and later calls raise ActorDiedError (``no_restart=False``:
    restart it if its max_restarts allow, as after a crash)."""
    from .actor import kill as _kill

    _kill(actor, no_restart=no_restart)


def get_actor(name: str, namespace: str | None = None):
    """The handle of the live actor named ``name`` (``Cls.options(name=...)``), from any driver."""
    from .actor import get_actor as _get_actor

    return _get_actor(name, namespace)
