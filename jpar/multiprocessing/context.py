"""Start methods and context objects, as the stdlib's ``multiprocessing.context`` offers them.

A jpar Process always starts the same way, whatever the start method says: its target is
pickled with cloudpickle and run in a fresh process on a cluster engine's host (as ``spawn``
does, but with a process that jpar keeps warm, and with functions defined in ``__main__`` or a
notebook shipped by value). So ``set_start_method('fork')`` and ``get_context('forkserver')``
are accepted and recorded, and change nothing: a program that picks a method runs unchanged.

A context object exposes every name of the module (``ctx.Process``, ``ctx.Queue()``,
``ctx.Lock()``, ``ctx.Manager()``, ...). The synchronization objects are made by their own
modules (``queues``, ``synchronize``, ...), imported when first used, and get the context as
their ``ctx`` keyword, as the stdlib's do.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

__all__ = ["Context", "default_context", "get_context", "set_start_method", "get_start_method", "get_all_start_methods",
           "DEFAULT_START_METHOD"]

#: what get_start_method() says when none was set: a jpar Process is a fresh process, like spawn's
DEFAULT_START_METHOD = "spawn"
_METHODS = ("spawn", "fork", "forkserver")


class Context:
    """The names of ``jpar.multiprocessing`` bound to one start method (which changes nothing);
    ``method`` None is the default context, whose method is whatever set_start_method() chose."""

    def __init__(self, method: str | None):
        self._name = method

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing context {self._name or 'default'!r}>"

    # -- start methods --------------------------------------------------------------------------
    def get_context(self, method: str | None = None) -> "Context":
        return get_context(method)

    def get_start_method(self, allow_none: bool = False) -> str | None:
        return self._name if self._name is not None else get_start_method(allow_none)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        set_start_method(method, force)

    def get_all_start_methods(self) -> list:
        return get_all_start_methods()

    # -- processes --------------------------------------------------------------------------------
    @property
    def Process(self) -> type:
        from .process import Process

        return Process

    def current_process(self):
        from .process import current_process

        return current_process()

    def parent_process(self):
        from .process import parent_process

        return parent_process()

    def active_children(self) -> list:
        from .process import active_children

        return active_children()

    def cpu_count(self) -> int:
        from . import cpu_count

        return cpu_count()

    def freeze_support(self) -> None:
        """Nothing to do: no frozen executable is started."""

    def set_executable(self, executable: Any) -> None:
        """Accepted and ignored: processes run the interpreter of the cluster's engines."""

    def set_forkserver_preload(self, module_names: list) -> None:
        """Accepted and ignored: there is no fork server."""

    def allow_connection_pickling(self) -> None:
        """Accepted: jpar's connections pickle always."""

    def log_to_stderr(self, level: Any = None):
        import multiprocessing.util

        return multiprocessing.util.log_to_stderr(level)

    def get_logger(self):
        import multiprocessing.util

        return multiprocessing.util.get_logger()

    @property
    def reducer(self):
        import multiprocessing.reduction

        return multiprocessing.reduction

    # -- the pool ---------------------------------------------------------------------------------
    def Pool(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None):
        from ..pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self)

    # -- synchronization and sharing (the sync modules, imported on first use) ------------------
    def Queue(self, maxsize: int = 0):
        return _make("queues", "Queue")(maxsize, ctx=self)

    def JoinableQueue(self, maxsize: int = 0):
        return _make("queues", "JoinableQueue")(maxsize, ctx=self)

    def SimpleQueue(self):
        return _make("queues", "SimpleQueue")(ctx=self)

    def Pipe(self, duplex: bool = True):
        return _make("connection", "Pipe")(duplex)

    def Lock(self):
        return _make("synchronize", "Lock")(ctx=self)

    def RLock(self):
        return _make("synchronize", "RLock")(ctx=self)

    def Condition(self, lock: Any = None):
        return _make("synchronize", "Condition")(lock, ctx=self)

    def Semaphore(self, value: int = 1):
        return _make("synchronize", "Semaphore")(value, ctx=self)

    def BoundedSemaphore(self, value: int = 1):
        return _make("synchronize", "BoundedSemaphore")(value, ctx=self)

    def Event(self):
        return _make("synchronize", "Event")(ctx=self)

    def Barrier(self, parties: int, action: Any = None, timeout: float | None = None):
        return _make("synchronize", "Barrier")(parties, action, timeout, ctx=self)

    def RawValue(self, typecode_or_type: Any, *args):
        return _make("sharedctypes", "RawValue")(typecode_or_type, *args)

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any):
        return _make("sharedctypes", "RawArray")(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type: Any, *args, lock: Any = True):
        return _make("sharedctypes", "Value")(typecode_or_type, *args, lock=lock, ctx=self)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True):
        return _make("sharedctypes", "Array")(typecode_or_type, size_or_initializer, lock=lock, ctx=self)

    def Manager(self):
        """A started ``SyncManager`` (``with Manager() as m:`` works, as in the stdlib)."""
        manager = _make("managers", "SyncManager")(ctx=self)
        manager.start()
        return manager

    # -- errors -----------------------------------------------------------------------------------
    @property
    def ProcessError(self):
        from multiprocessing import ProcessError

        return ProcessError

    @property
    def BufferTooShort(self):
        from multiprocessing import BufferTooShort

        return BufferTooShort

    @property
    def AuthenticationError(self):
        from multiprocessing import AuthenticationError

        return AuthenticationError

    @property
    def TimeoutError(self):
        from ..pool import TimeoutError

        return TimeoutError


def _make(module: str, name: str):
    """``jpar.multiprocessing.<module>.<name>``, imported now (not when jpar.multiprocessing is)."""
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


_contexts = {m: Context(m) for m in _METHODS}
#: what the module's own names use: naming them (``from jpar.multiprocessing import Queue``) does not
#: fix the start method, so set_start_method() may still follow, as with the stdlib
default_context = Context(None)
_lock = threading.Lock()
_chosen: str | None = None


def get_context(method: str | None = None) -> Context:
    """The context of ``method`` ('spawn', 'fork' or 'forkserver'), or the default one."""
    if method is None:
        return _contexts[get_start_method()]
    try:
        return _contexts[method]
    except KeyError:
        raise ValueError(f"cannot find context for {method!r}: jpar.multiprocessing accepts "
                         f"{', '.join(map(repr, _METHODS))} (all run processes the same way).") from None


def set_start_method(method: str | None, force: bool = False) -> None:
    """Record the start method (a RuntimeError if one was set already, unless ``force``, as in
    the stdlib). It changes nothing: see this module's docstring."""
    global _chosen
    with _lock:
        if _chosen is not None and not force:
            raise RuntimeError("context has already been set")
        if method is not None and method not in _METHODS:
            raise ValueError(f"cannot find context for {method!r}: jpar.multiprocessing accepts "
                             f"{', '.join(map(repr, _METHODS))}.")
        _chosen = method


def get_start_method(allow_none: bool = False) -> str | None:
    """The method set with set_start_method(), else 'spawn' (fixed from then on, as in the stdlib);
    None with ``allow_none`` when none was set."""
    global _chosen
    with _lock:
        if _chosen is None:
            if allow_none:
                return None
            _chosen = DEFAULT_START_METHOD
        return _chosen


def get_all_start_methods() -> list:
    return [DEFAULT_START_METHOD] + [m for m in _METHODS if m != DEFAULT_START_METHOD]
