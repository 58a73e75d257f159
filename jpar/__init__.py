"""jpar: interactive parallel computing from Jupyter, with Ray's API on a fast local cluster."""

from .actor import ActorClass, ActorHandle, method
from .api import ClusterContext, available_resources, cancel, cluster_resources, free, get, get_actor, get_runtime_context, init, is_initialized, kill, nodes, put, remote, shutdown, wait
from .errors import ActorDiedError, ActorError, ClusterError, ConfigError, EngineCrashedError, GetTimeoutError, ForeignRefError, HeadDiedError, JparError, NotInitializedError, ObjectFreedError, ObjectLostError, ObjectStoreFullError, ResourceError, SecurityError, SerializationError, TaskCancelledError, TaskError, UnsupportedOnBackend
from . import backends, exceptions, hooks
from .refs import ObjectRef
from .remote_function import RemoteFunction
from .trace import timeline

__version__ = "0.1.0"


def dashboard(**options):
    """A live widget of the current cluster (task DAG, engines' CPU and memory, object store, totals):
    make it a notebook cell's last expression. Options: see :func:`jpar.notebook.dashboard.dashboard`.
    Needs the ``notebook`` extra (anywidget); imports nothing of the notebook stack until called."""
    from .notebook.dashboard import dashboard as _dashboard

    return _dashboard(**options)


def __getattr__(name: str):
    """``jpar.executor`` loads concurrent.futures' process machinery only when first used, and
    ``jpar.util`` (ActorPool, Queue: Ray's ``ray.util``) loads on first use, as ``ray.util`` is there
    after ``import ray``."""
    if name == "executor":
        from .process_executor import executor

        globals()["executor"] = executor   # found directly from now on
        return executor
    if name == "util":
        import importlib

        return importlib.import_module(".util", __name__)
    raise AttributeError(f"module 'jpar' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"executor", "util"})


def load_ipython_extension(ipython) -> None:
    """``%load_ext jpar``: the magics, output routing and interrupt handling (see jpar.notebook).
    Defined here and importing IPython only when called: engines import jpar too."""
    from .notebook import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext jpar``."""
    from .notebook import unload_ipython_extension as unload

    unload(ipython)


def _register_sidebar_comm() -> None:
    """Inside a Jupyter kernel, answer the JupyterLab sidebar's questions about this notebook
    (jpar.notebook.sidebar_comm); a no-op elsewhere, and engines never load ipykernel."""
    import sys

    if "ipykernel" in sys.modules:
        try:
            from .notebook.sidebar_comm import register

            register()
        except Exception:   # the sidebar is a convenience: never break `import jpar` for it
            pass


_register_sidebar_comm()

__all__ = [
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "free",
    "cluster_resources", "available_resources", "nodes", "get_runtime_context", "exceptions",
    "ClusterContext", "ObjectRef", "RemoteFunction", "executor",
    "kill", "get_actor", "method", "ActorClass", "ActorHandle", "dashboard", "timeline",
    "JparError", "ClusterError", "ConfigError", "NotInitializedError", "HeadDiedError", "SecurityError", "SerializationError", "ResourceError",
    "TaskError", "TaskCancelledError", "EngineCrashedError", "ActorError", "ActorDiedError",
    "GetTimeoutError", "ObjectLostError", "ObjectFreedError", "ForeignRefError", "ObjectStoreFullError", "UnsupportedOnBackend", "hooks",
    "backends",
    "load_ipython_extension", "unload_ipython_extension", "__version__",
]
