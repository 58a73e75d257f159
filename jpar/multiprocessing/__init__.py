"""The stdlib's ``multiprocessing`` on a jpar cluster: one changed import.

``import multiprocessing`` -> ``import jpar.multiprocessing as multiprocessing`` (and
``from multiprocessing.pool import Pool`` -> ``from jpar.multiprocessing.pool import Pool``)::

    jpar.multiprocessing            the stdlib's public names (this module)
      .process    Process, current_process, parent_process, active_children: each Process is a
                  process of its own on a cluster host (a jpar actor that takes no CPU slot)
      .context    get_context / set_start_method: accepted, recorded, change nothing
      .pool       Pool and its results (jpar.pool): chunks of work as balanced tasks
      .queues .connection .synchronize .sharedctypes .managers
                  Queue, Pipe, Lock, Event, Value, Manager, ...: state kept by a state server
                  (a jpar actor), so they work between processes on any host

The synchronization names are imported from their modules when first used (module
``__getattr__``), so ``import jpar.multiprocessing`` stays cheap. Exceptions are the stdlib's
(``TimeoutError`` here is a subclass of ``multiprocessing.TimeoutError``, of the builtin
``TimeoutError`` and of ``jpar.JparError``). What differs from the stdlib: docs/dropins.md.
"""

import os
from multiprocessing import AuthenticationError, BufferTooShort, ProcessError

from jpar.pool import (ApplyResult, AsyncResult, IMapIterator, IMapUnorderedIterator, MapResult,
                       MaybeEncodingError, Pool, RemoteTraceback, TimeoutError)

from .context import default_context, get_all_start_methods, get_context, get_start_method, set_start_method
from .process import Process, active_children, current_process, parent_process

__all__ = [
    # processes
    "Process", "current_process", "parent_process", "active_children", "cpu_count", "freeze_support",
    "set_executable", "set_forkserver_preload", "allow_connection_pickling", "log_to_stderr", "get_logger",
    # start methods
    "get_context", "set_start_method", "get_start_method", "get_all_start_methods",
    # the pool
    "Pool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator", "IMapUnorderedIterator",
    "MaybeEncodingError", "RemoteTraceback",
    # synchronization and sharing (imported on first use)
    "Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
    "Event", "Condition", "Barrier", "Value", "Array", "RawValue", "RawArray", "Manager",
    # errors
    "TimeoutError", "ProcessError", "AuthenticationError", "BufferTooShort",
]

#: names made by the default context (as the stdlib binds them), imported on first use
_LAZY = ("Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
         "Event", "Condition", "Barrier", "Value", "Array", "RawValue", "RawArray", "Manager", "reducer")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(default_context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))


def cpu_count() -> int:
    """The cluster's CPU count if jpar is initialized, else this machine's (which is what a
    ``Pool()`` started from here would get)."""
    import jpar

    if jpar.is_initialized():
        return max(1, int(jpar.cluster_resources().get("CPU", 1)))
    n = os.cpu_count()
    if n is None:
        raise NotImplementedError("cannot determine number of cpus")
    return n


def freeze_support() -> None:
    """Nothing to do: processes are not started from a frozen executable."""


def set_executable(executable) -> None:
    """Accepted and ignored: processes run the interpreter of the cluster's engines."""


def set_forkserver_preload(module_names) -> None:
    """Accepted and ignored: there is no fork server."""


def allow_connection_pickling() -> None:
    """Accepted: jpar's connections always pickle."""


def log_to_stderr(level=None):
    """The stdlib's: the 'multiprocessing' logger of this process, logging to stderr."""
    import multiprocessing.util

    return multiprocessing.util.log_to_stderr(level)


def get_logger():
    """The stdlib's 'multiprocessing' logger of this process."""
    import multiprocessing.util

    return multiprocessing.util.get_logger()
