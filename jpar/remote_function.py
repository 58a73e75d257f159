"""RemoteFunction: what ``@jpar.remote`` makes of a function, and its ``.remote()`` call."""

from __future__ import annotations

import functools
import hashlib
import pickle
from typing import Any, Callable, Generic, ParamSpec, TypeVar

from . import protocol as P
from . import serialization
from .driver import current_driver, require_driver
from .options import TaskOptions
from .refs import ArgRef, ObjectRef, check_cluster

__all__ = ["RemoteFunction", "display_name", "first_use_driver"]

Params = ParamSpec("Params")
R = TypeVar("R")


class RemoteFunction(Generic[Params, R]):
    """A function that runs as a task on the cluster: call ``.remote(...)``, not the function."""

    def __init__(self, fn: Callable[Params, R], options: TaskOptions):
        self._fn = fn
        self._options = options
        self._name = options.name or display_name(fn)
        self._blob: bytes | None = None
        self._fn_id: int | None = None
        self._resources = options.resource_tuple()
        self._retry = (
            options.retry_exceptions if isinstance(options.retry_exceptions, bool)
            else pickle.dumps(tuple(options.retry_exceptions))
        )
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
            new._blob, new._fn_id = self._blob, self._fn_id   # same code: ship it once
        return new

    def _definition(self) -> tuple[int, bytes]:
        if self._fn_id is None:
            self._blob = serialization.dumps_function(self._fn, self._name)
            self._fn_id = int.from_bytes(hashlib.blake2b(self._blob, digest_size=7).digest(), "big")
        return self._fn_id, self._blob

    def remote(self, *args: Params.args, **kwargs: Params.kwargs) -> Any:
        """Submit a task; returns an ObjectRef (a list of them when num_returns > 1)."""
        what = f"{self._name}.remote()"
        driver = require_driver(what) if current_driver() is not None else first_use_driver(what)
        fn_id, blob = self._definition()
        driver.ensure_function(fn_id, self._name, lambda: blob)
        args, kwargs, deps = _split_refs(args, kwargs, driver.cluster_id)
        args, kwargs, deps, keep = _put_large(driver, args, kwargs, deps)   # keep: refs live until submitted
        payload = serialization.dumps_args(self._name, args, kwargs)
        if len(payload) >= driver.store.threshold and not keep:
            args, kwargs, deps, keep = _put_large(driver, args, kwargs, deps, measure=True)
            payload = serialization.dumps_args(self._name, args, kwargs)
        opts = self._options
        n = opts.num_returns
        task_id = driver.new_ids(n)
        max_retries = driver.config.max_retries if opts.max_retries is None else opts.max_retries
        if max_retries < 0:
            max_retries = 1 << 30
        driver.submit(P.TaskSpec(task_id, fn_id, self._name, payload, deps, n, self._resources,
                                 max_retries, self._retry, driver.current_task, 0, opts.placement))
        if n == 1:
            return ObjectRef(task_id, driver.client_no, driver)
        return [ObjectRef(task_id + i, driver.client_no, driver) for i in range(n)]

    def __repr__(self) -> str:
        return f"<jpar.RemoteFunction {self._name}>"


def first_use_driver(what: str):
    """No current driver: start a local cluster as Ray does on first use (see jpar.api._driver)."""
    from .api import _driver   # api imports this module

    return _driver(what)


def display_name(fn) -> str:
    """A function's qualified name without the ``<locals>`` of enclosing functions."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return name.rsplit("<locals>.", 1)[-1]


def _split_refs(args: tuple, kwargs: dict, cluster: str) -> tuple[tuple, dict, tuple]:
    """Swap top-level ObjectRef arguments for placeholders and list them as dependencies
    (a ref made by another cluster than ``cluster`` raises ForeignRefError)."""
    deps = []
    if any(type(a) is ObjectRef for a in args):
        new = []
        for a in args:
            if type(a) is ObjectRef:
                deps.append(a)
                new.append(ArgRef(a.id))
            else:
                new.append(a)
        args = tuple(new)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = dict(kwargs)
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                deps.append(v)
                kwargs[k] = ArgRef(v.id)
    if deps:
        check_cluster(deps, cluster)
    return args, kwargs, tuple(r.id for r in deps)


_SMALL = frozenset({int, float, bool, type(None), complex, str})


def _put_large(driver, args: tuple, kwargs: dict, deps: tuple, measure: bool = False):
    """Put large top-level arguments into the object store once and pass them like refs.

    Buffers (numpy, pandas, bytes...) are recognised by their size without pickling; with
    ``measure`` every other argument is pickled to find the large ones. Returns the new
    (args, kwargs, deps) and the temporary refs, which must live until the task is submitted
    (their release must not reach the head before the Submit that holds the objects)."""
    threshold = driver.store.threshold
    keep: list = []

    def swap(a):
        t = type(a)
        if t in _SMALL or t is ArgRef:
            return a
        n = getattr(a, "nbytes", None) if t is not bytes and t is not bytearray else len(a)
        if type(n) is not int:
            n = len(serialization.dumps(a)) if measure else 0
        if n < threshold:
            return a
        ref = driver.put(a)
        keep.append(ref)
        return ArgRef(ref.id)

    new_args = tuple(swap(a) for a in args)
    new_kwargs = {k: swap(v) for k, v in kwargs.items()} if kwargs else kwargs
    if not keep:
        return args, kwargs, deps, keep
    return new_args, new_kwargs, deps + tuple(r.id for r in keep), keep
