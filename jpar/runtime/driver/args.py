"""A task's arguments on their way out: top-level ObjectRefs become placeholders the engine
swaps for values (and dependencies the head waits for); large values go into the object store
once and travel like refs."""

from __future__ import annotations

from ..wire import serialization
from ...refs import ArgRef, ObjectRef, check_cluster

__all__ = ["split_refs", "put_large", "top_refs"]


def split_refs(args: tuple, kwargs: dict, cluster: str) -> tuple[tuple, dict, tuple]:
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


def put_large(driver, args: tuple, kwargs: dict, deps: tuple, measure: bool = False):
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
        return ArgRef(ref.id, once=True)

    new_args = tuple(swap(a) for a in args)
    new_kwargs = {k: swap(v) for k, v in kwargs.items()} if kwargs else kwargs
    if not keep:
        return args, kwargs, deps, keep
    return new_args, new_kwargs, deps + tuple(r.id for r in keep), keep


def top_refs(args: tuple, kwargs: dict) -> list:
    refs = [a for a in args if type(a) is ObjectRef]
    if kwargs:
        refs.extend(v for v in kwargs.values() if type(v) is ObjectRef)
    return refs
