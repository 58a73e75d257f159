"""RemoteFunction: what ``@jpar.remote`` makes of a function, and its ``.remote()`` call."""

from __future__ import annotations

import functools
from typing import Any, Callable, Generic, ParamSpec, TypeVar

from . import backends as _backends
from . import call_sites
from .options import TaskOptions

__all__ = ["RemoteFunction", "display_name", "first_use_backend"]

Params = ParamSpec("Params")
R = TypeVar("R")


class RemoteFunction(Generic[Params, R]):
    """A function that runs as a task on the cluster: call ``.remote(...)``, not the function."""

    def __init__(self, fn: Callable[Params, R], options: TaskOptions):
        self._fn = fn
        self._options = options
        self._name = options.name or display_name(fn)
        self._backend_cache: dict = {}   # what a backend keeps per function (its shipped definition)
        self._prepared: dict = {}        # what a backend derives from these options (not shared by .options())
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running '{self._name}()', "
            f"try '{self._name}.remote()'."
        )

    def options(self, **changes) -> "RemoteFunction[Params, R]":
        """The same function with some options changed (Ray's ``f.options(num_cpus=2).remote()``)."""
        new = RemoteFunction(self._fn, TaskOptions.build(self._options, **changes))
        if changes.keys() <= {"num_cpus", "num_gpus", "resources", "num_returns", "max_retries",
                              "retry_exceptions"}:
            new._backend_cache = self._backend_cache   # same code: ship it once
        return new

    def remote(self, *args: Params.args, **kwargs: Params.kwargs) -> Any:
        """Submit a task; returns an ObjectRef (a list of them when num_returns > 1)."""
        backend = _backends.current()
        if backend is None or backend.closed:     # the name is formatted only off the hot path
            backend = first_use_backend(f"{self._name}.remote()")
        if self._options.placement >= 0 and not backend.capabilities.placement:
            backend.require("placement")
        ident = call_sites.begin(2)   # the dashboard groups a function's tasks by where they were submitted
        try:
            refs = backend.submit(self, args, kwargs, self._options)
            tid = getattr(refs[0] if type(refs) is list and refs else refs, "id", None)   # the task's id
            if tid is not None:
                call_sites.note(tid, ident=ident)
        finally:
            call_sites.submitting.pop(ident, None)   # after the note: a reader never sees neither
        return refs

    def __repr__(self) -> str:
        return f"<jpar.RemoteFunction {self._name}>"


def first_use_backend(what: str):
    """The current backend; with none, start a local cluster as Ray does on first use (see jpar.api._backend)."""
    from .api import _backend   # api imports this module

    return _backend(what)


def display_name(fn) -> str:
    """A function's qualified name without the ``<locals>`` of enclosing functions."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return name.rsplit("<locals>.", 1)[-1]
