"""A clear error for the stdlib's process-local objects (multiprocessing.Lock, Queue, ...) sent to
a jpar Process, task or actor: they only work between a parent and the children it forks, so they
cannot reach a cluster engine; each has a jpar.multiprocessing twin that can."""

from __future__ import annotations

from jpar.errors import JparError

__all__ = ["StdlibObjectError", "check_not_stdlib", "jpar_name_for"]


class StdlibObjectError(JparError, TypeError):
    """A stdlib multiprocessing object was passed where it cannot go (to another cluster process)."""


_SEMLOCK_NAMES = {"Lock": "Lock", "RLock": "RLock", "Semaphore": "Semaphore",
                  "BoundedSemaphore": "BoundedSemaphore", "Condition": "Condition", "Event": "Event",
                  "Barrier": "Barrier"}


def jpar_name_for(obj) -> str | None:
    """The jpar.multiprocessing name that replaces ``obj`` if it is a stdlib multiprocessing object
    that cannot leave its process tree, else None."""
    mod = type(obj).__module__ or ""
    name = type(obj).__name__
    if mod == "multiprocessing.synchronize" and name in _SEMLOCK_NAMES:
        return _SEMLOCK_NAMES[name]
    if mod == "multiprocessing.queues" and name in ("Queue", "SimpleQueue", "JoinableQueue"):
        return name
    if mod == "multiprocessing.connection" and name in ("Connection", "PipeConnection"):
        return "Pipe"
    if mod == "multiprocessing.sharedctypes":
        return "Array" if "Array" in name else "Value"
    if mod.startswith("multiprocessing.managers") and name in ("SyncManager", "BaseManager"):
        return "Manager"
    if mod == "multiprocessing.managers":   # proxies: usable on this host only, through the manager's socket
        return "Manager"
    return None


def check_not_stdlib(*objects, where: str = "a jpar Process") -> None:
    """Raise :class:`StdlibObjectError` naming the jpar replacement if any of ``objects`` (or an
    item of a list, tuple, set or dict value among them, one level deep) is a stdlib
    multiprocessing object. What ``Process(args=..., kwargs=...)`` calls on its arguments."""
    for obj in objects:
        items = [obj]
        if isinstance(obj, (list, tuple, set, frozenset)):
            items.extend(obj)
        elif isinstance(obj, dict):
            items.extend(obj.values())
        for item in items:
            name = jpar_name_for(item)
            if name is not None:
                raise StdlibObjectError(
                    f"A stdlib multiprocessing.{type(item).__name__} was passed to {where}. Stdlib "
                    "multiprocessing objects work only between a process and the children it starts, not "
                    f"on cluster engines: use jpar.multiprocessing.{name} instead (same API).")


def explain(exc: BaseException, obj, where: str = "a jpar Process") -> BaseException:
    """For a pickling error raised while sending ``obj``: a StdlibObjectError if a stdlib object
    was the cause (the stdlib raises RuntimeError '... should only be shared between processes
    through inheritance'), else ``exc`` itself."""
    try:
        check_not_stdlib(obj, where=where)
    except StdlibObjectError as err:
        err.__cause__ = exc
        return err
    if isinstance(exc, RuntimeError) and "inheritance" in str(exc):
        err = StdlibObjectError(f"{exc}. A stdlib multiprocessing object was passed to {where}; use its "
                                "jpar.multiprocessing twin (Lock, Queue, Value, ...) instead.")
        err.__cause__ = exc
        return err
    return exc
