"""The seam between jpar's API and the engine that runs the work.

Everything a user calls (``jpar.remote``, ``get``, ``put``, actors, the drop-ins, the notebook
layer, the dashboard) talks to one :class:`Backend`: the one :func:`current` returns. A backend
turns those calls into work on an engine: ``native`` is jpar's own runtime (``jpar.runtime``:
driver, head, engines, object store, wire); other engines plug in here as further classes in
``_REGISTRY``, loaded on first use so that ``import jpar`` imports none of them.

What a backend can and cannot do is data, :class:`Capabilities`: the API checks a flag at
decoration or submission time and raises :class:`~jpar.errors.UnsupportedOnBackend`, and the
docs' feature table is generated from the same flags.

Refs are backend-neutral: an :class:`~jpar.refs.ObjectRef` is an integer id, the id of the
cluster that made it, and (on its owner) the backend that releases it when it is collected.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from typing import Any, Callable, ClassVar

from ..errors import MissingExtraError, NotInitializedError, UnsupportedOnBackend

__all__ = ["Backend", "Capabilities", "FrontEnd", "FEATURES", "backend_class", "current", "require", "set_current",
           "set_engine_client", "engine_client", "set_blocking_check", "blocking_check", "names"]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a backend supports. One flag per user-visible feature that some engine lacks."""

    interrupt_running: bool   #: cancel() interrupts a task that is already running
    force_cancel: bool        #: cancel(force=True) kills the process running the task
    actor_restart: bool       #: actors restart after a crash (max_restarts)
    actor_concurrency: bool   #: max_concurrency > 1 and async actors
    placement: bool           #: options(placement=...) pins a task to an engine
    add_engines: bool         #: the cluster grows and shrinks from the notebook (+1 engine)
    notebook_engines: bool    #: %%remote cells run on engines with namespaces kept across cells
    processes: bool = True    #: jpar.multiprocessing.Process: a process of its own per Process (actors are processes)
    free_any: bool = False    #: any process may jpar.free a value for the whole cluster, not only its owner


#: flag -> (feature as users name it, what to do instead when it is missing): the docs' table
FEATURES: dict[str, tuple[str, str]] = {
    "interrupt_running": ("cancel() of a running task", "the task runs to its end and its result is discarded"),
    "force_cancel": ("cancel(force=True)", "cancel() without force"),
    "actor_restart": ("actor restarts (max_restarts)", "create a new actor after ActorDiedError"),
    "actor_concurrency": ("concurrent and async actors (max_concurrency)", "several actors"),
    "placement": ("options(placement=engine)", "resources (num_cpus, custom resources)"),
    "add_engines": ("adding and removing engines from the notebook", "the cluster's own scaling"),
    "notebook_engines": ("%%remote cells", "tasks"),
    "processes": ("jpar.multiprocessing.Process", "jpar.multiprocessing.Pool or tasks (the native or ray backend)"),
    "free_any": ("jpar.free by any process (a large multiprocessing Queue or Pipe item's storage goes once it is got)",
                 "large items stay in the store until the cluster stops: send them as smaller pieces"),
}


class Backend:
    """The interface every backend implements. One instance is one connection to one cluster.

    Attributes every backend sets: ``name`` (``"native"``), ``capabilities``, ``cluster_id`` (a
    string unique to the cluster, carried by its refs), ``released`` (a deque: ObjectRefs append
    their id when collected; the backend releases them), ``closed``, ``frontend`` (a
    :class:`FrontEnd`).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    cluster_id: str
    closed: bool

    @property
    def owns_cluster(self) -> bool:
        """Whether :meth:`close` stops the cluster itself (this backend started it), not only this
        connection: what a front end's stop button says it will do."""
        return False

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, address: Any, config: Any, init_args: dict) -> "Backend":
        """Start a cluster (``address`` None) or connect to one; ``init_args`` are init()'s."""
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect; a cluster this backend started is stopped."""
        raise NotImplementedError

    def describe(self) -> dict:
        """``{"address", "cluster_id", "engines": [...], "resources": {...}}`` for reprs."""
        raise NotImplementedError

    # -- tasks and objects --------------------------------------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, options: Any) -> list:
        """Run ``fn`` (a RemoteFunction) as a task: its ObjectRef, or a list of ``num_returns`` of them."""
        raise NotImplementedError

    def put(self, value: Any) -> Any:
        raise NotImplementedError

    def get(self, refs: list, timeout: float | None) -> list:
        raise NotImplementedError

    def wait(self, refs: list, num_returns: int, timeout: float | None, fetch_local: bool) -> tuple[list, list]:
        raise NotImplementedError

    def cancel(self, ref: Any, force: bool, recursive: bool) -> None:
        raise NotImplementedError

    def free(self, refs: list) -> None:
        """Release the values of ``refs`` now though the refs remain (:func:`jpar.free` says the
        semantics): later gets, and tasks given them, raise ObjectFreedError; a pending ref's value is
        dropped when made (its task runs on); unknown or already freed refs are skipped."""
        raise NotImplementedError

    def future(self, ref: Any) -> Any:
        """A concurrent.futures.Future resolved with the ref's value."""
        raise NotImplementedError

    def describe_ref(self, ref: Any) -> dict:
        """``{"state", "task", "engine"}`` of a ref, for its HTML repr."""
        raise NotImplementedError

    # -- actors -------------------------------------------------------------------------------
    def create_actor(self, actor_class: Any, args: tuple, kwargs: dict, options: Any) -> tuple[int, dict]:
        """Start an actor; ``(actor_id, meta)`` that an ActorHandle is built from."""
        raise NotImplementedError

    def call_actor(self, handle: Any, method: str, num_returns: int, args: tuple, kwargs: dict) -> Any:
        raise NotImplementedError

    def kill_actor(self, handle: Any, no_restart: bool) -> None:
        raise NotImplementedError

    def get_actor(self, name: str, namespace: str | None) -> tuple[int, dict]:
        raise NotImplementedError

    def actor_handle_made(self, actor_id: int, meta: dict) -> None:
        """A handle was built (here, or unpickled here): count it."""

    def actor_handle_escaped(self, actor_id: int) -> None:
        """A handle was pickled: its actor may be used elsewhere."""

    def actor_handle_dropped(self, actor_id: int) -> None:
        """The owner's handle was collected."""

    def actor_state(self, actor_id: int) -> str:
        """A few words for the handle's HTML repr."""
        return ""

    # -- the cluster --------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        raise NotImplementedError

    def cluster_resources(self) -> dict:
        raise NotImplementedError

    def available_resources(self) -> dict:
        raise NotImplementedError

    def runtime_context(self) -> dict:
        """``{"task_id", "engine_id", "node_id", "actor_id", "cancelled": callable}`` of the calling task."""
        return {}

    def check_alive(self) -> None:
        """Raise the error that says why this connection is closed (HeadDiedError, ...)."""
        from ..errors import ClusterError

        raise ClusterError(f"This {self.name} connection is closed; call jpar.init() again.")

    # -- checks -------------------------------------------------------------------------------
    def require(self, flag: str) -> None:
        """Raise UnsupportedOnBackend unless this backend has capability ``flag``."""
        if not getattr(self.capabilities, flag):
            feature, instead = FEATURES[flag]
            raise UnsupportedOnBackend(self.name, feature, instead)


class FrontEnd:
    """What front ends (the notebook layer, the dashboard, the sidebar, the CLI) ask of a cluster,
    through :mod:`jpar.hooks`; a backend exposes one as ``backend.frontend``. Task ids are the ints
    of the refs the backend made (``ref.id``); records are :mod:`jpar.events`' ``OutputRecord`` and
    ``Event``."""

    #: what set_submit_hook / set_output_handler installed (the backend reads them)
    submit_hook: Callable[[int], Any] | None = None
    output_handler: Callable[[Any, Any], None] | None = None

    def set_submit_hook(self, hook: Callable[[int], Any] | None) -> None:
        """``hook(task_id)`` at every submission from this process; its result is the context
        handed to the output handler with that task's output."""
        self.submit_hook = hook

    def set_output_handler(self, handler: Callable[[Any, Any], None] | None) -> None:
        """``handler(OutputRecord, context)`` for every chunk of task output; None: print it."""
        self.output_handler = handler

    def apply(self, submit_hook, output_handler) -> None:
        """Install both hooks unless they are installed already (cheap: runs before every cell)."""
        if self.submit_hook is not submit_hook:
            self.set_submit_hook(submit_hook)
        if output_handler is not None and self.output_handler is not output_handler:
            self.set_output_handler(output_handler)

    def cancel_tasks(self, task_ids, force: bool) -> None:
        raise NotImplementedError

    def cancel_driver_tasks(self, client_no: int | None, force: bool, timeout: float) -> int:
        raise NotImplementedError

    def add_engines(self, count: int, timeout: float | None) -> dict:
        """``{"engine_ids", "pids", "resources", "fixed"}`` (only with the add_engines capability)."""
        raise NotImplementedError

    def remove_engines(self, count: int, ids: list, wait: bool, timeout: float | None) -> tuple[dict, bool]:
        raise NotImplementedError

    def task_ids_done(self, task_ids) -> list:
        """Which of these task ids have a result (or error) in this process already."""
        raise NotImplementedError

    def status(self, timeout: float) -> dict:
        """``{"engines": [{"id", "pid", "node", "host", "cpu", "rss", "queued", ...}], "resources",
        "actors": [...], "clients": [...], "tasks": {state: count}, ...}`` as the native head reports it."""
        raise NotImplementedError

    def subscribe_events(self, summary: bool = False) -> Any:
        """An object with ``poll(timeout) -> list[Event]``, iteration, ``close()`` and ``summary`` (True
        where it reads the summary stream that ``summary=True`` asks for; backends without one give
        the full stream), live from now on."""
        raise NotImplementedError

    def summary_expand(self, groups: list, on: bool) -> bool:
        """Ask for every task of these summary groups ``(owner, name, site)`` one by one (``on``), or no
        longer; False where there is no summary stream (the full stream has every task anyway)."""
        return False

    def task_error(self, task_id: int) -> str | None:
        raise NotImplementedError

    def store_statistics(self, timeout: float) -> dict:
        raise NotImplementedError

    def release_now(self, timeout: float) -> None:
        raise NotImplementedError

    def driver_info(self) -> dict:
        """``{"cluster_id", "address", "client_no"}``."""
        raise NotImplementedError

    def pending_tasks(self) -> dict:
        """``{task_id: (context, name)}`` of this process's unfinished tasks that the submit hook saw."""
        raise NotImplementedError


#: name -> (module, class, the extra that installs its engine); loaded on first use
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "native": ("jpar.backends.native", "NativeBackend", None),
    "dask": ("jpar.backends.dask", "DaskBackend", "pip install 'jpar[dask]'"),
    "ray": ("jpar.backends.ray", "RayBackend", "pip install 'jpar[ray]'"),
}


def names() -> list[str]:
    return list(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``; its engine's package is imported now, not at ``import jpar``."""
    try:
        module, cls, extra = _REGISTRY[name]
    except KeyError:
        from ..errors import ConfigError

        raise ConfigError(f"Unknown backend {name!r}: choose one of {', '.join(_REGISTRY)}.") from None
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if extra is None or exc.name is None or exc.name.startswith("jpar"):
            raise
        raise MissingExtraError(exc.name, f"the {name} backend", extra) from exc
    return getattr(mod, cls)


_lock = threading.RLock()
_current: Backend | None = None
_engine_client: Callable[[], Backend] | None = None   # set inside engine processes: nested API use
_blocking_check: Callable[[], None] | None = None     # set in async actors: get() on their loop warns


def current() -> Backend | None:
    """The backend this process talks to (None before init(); an engine's own client inside tasks)."""
    if _current is None and _engine_client is not None:
        return _engine_client()
    return _current


def set_current(backend: Backend | None) -> None:
    global _current
    _current = backend


def set_engine_client(factory: Callable[[], Backend] | None) -> None:
    """Engines call this: the API inside a task reaches the cluster through ``factory()``."""
    global _engine_client
    _engine_client = factory


def engine_client() -> Callable[[], Backend] | None:
    return _engine_client


def set_blocking_check(check: Callable[[], None] | None) -> None:
    """Async actors call this: ``check()`` runs before every blocking get() (it warns on the actor's loop)."""
    global _blocking_check
    _blocking_check = check


def blocking_check() -> Callable[[], None] | None:
    return _blocking_check


def require(what: str = "This call") -> Backend:
    """The current backend, or NotInitializedError naming ``what``."""
    b = current()
    if b is None:
        raise NotInitializedError(what)
    if b.closed:
        b.check_alive()
    return b
