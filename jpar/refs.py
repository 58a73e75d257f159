"""ObjectRef: a handle to a value that lives (or will live) in the cluster.

A ref holds no data, only an id and the number of the client that owns it, so keeping
refs in IPython's ``Out[]`` history pins nothing large. The owner releases the value
when the ref that ``.remote()`` or ``put()`` returned is garbage collected. A ref that
was pickled (put inside a container argument, a result, or a stored object) may be
alive elsewhere, so its owner keeps the value until the cluster stops: correctness
first, a borrowing protocol can refine this later.

A ref also carries the id of the cluster that made it: object ids restart with every
cluster, so a ref kept across ``jpar.shutdown()`` / ``jpar.init()`` would otherwise name
an unrelated value of the new cluster. Every use of a ref checks it
(:class:`~jpar.errors.ForeignRefError`).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

__all__ = ["ObjectRef", "ArgRef", "check_cluster"]


class ObjectRef:
    """A future value in the cluster; pass it to tasks, ``jpar.get`` it, or ``await`` it."""

    __slots__ = ("id", "owner", "cluster", "_driver", "_escaped", "__weakref__")

    def __init__(self, object_id: int, owner: int, driver: Any = None, cluster: str | None = None):
        self.id = object_id
        self.owner = owner
        self.cluster = driver.cluster_id if driver is not None else cluster
        self._driver = driver          # set only on the owner's own refs: they release on collection
        self._escaped = False

    def __del__(self):
        d = self._driver
        if d is not None and not self._escaped:
            try:
                d.released.append(self.id)
            except Exception:  # interpreter shutdown
                pass

    def __reduce__(self):
        self._escaped = True
        escaping = getattr(self._driver, "ref_escaping", None)   # a backend that must publish the ref first
        if escaping is not None:
            escaping(self)
        return (_rebuild_ref, (self.id, self.owner, self.cluster))

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other.id == self.id and other.cluster == self.cluster

    def __hash__(self):
        return hash(self.id)

    def hex(self) -> str:
        return f"{self.id:016x}"

    def __repr__(self) -> str:
        return f"ObjectRef({self.hex()})"

    def _repr_html_(self) -> str:
        """State, size, producing task and engine; nothing of the value (so Out[] pins no data)."""
        import html

        from . import backends

        d = backends.current()
        if d is None or d.closed:
            return f"<code>ObjectRef({self.hex()})</code> <small>(no cluster connected)</small>"
        if self.cluster != d.cluster_id:
            return f"<code>ObjectRef({self.hex()})</code> <small>(made by cluster {self.cluster}, not this one)</small>"
        info = d.describe_ref(self)
        made = ""
        if info["task"]:
            made = f" · from <code>{html.escape(info['task'])}</code>"
            if info["engine"] is not None:
                made += f" on engine {info['engine']}"
        return f"<code>ObjectRef({self.hex()})</code> <small>{html.escape(info['state'])}{made}</small>"

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future resolved when the value arrives."""
        from . import backends

        return backends.require("ObjectRef.future()").future(self)

    def __await__(self):
        import asyncio  # only code that awaits refs pays for importing asyncio

        return asyncio.wrap_future(self.future()).__await__()


class ArgRef:
    """Stands in for a top-level ref argument inside a task's pickled arguments; the engine
    swaps it for the value. (Pickling the ObjectRef itself would mark it escaped.)

    ``once`` marks a large argument passed by value (stored only for this task): the engine lets
    go of its mapping when the task ends, so the head can recycle its segment at once and the
    driver's next large write reuses it with no page faults."""

    __slots__ = ("id", "once")

    def __init__(self, object_id: int, once: bool = False):
        self.id = object_id
        self.once = once

    def __reduce__(self):
        return (ArgRef, (self.id, True) if self.once else (self.id,))


def _rebuild_ref(object_id: int, owner: int, cluster: str | None = None) -> ObjectRef:
    return ObjectRef(object_id, owner, cluster=cluster)


def check_cluster(refs, cluster: str) -> None:
    """Raise ForeignRefError for the first of ``refs`` made by another cluster than ``cluster``."""
    for r in refs:
        if r.cluster != cluster:
            from .errors import ForeignRefError

            raise ForeignRefError(
                f"ObjectRef({r.hex()}) was made by cluster {r.cluster or 'unknown'}, not by the one connected "
                f"now ({cluster}): refs do not outlive jpar.shutdown(). Re-run the code that made it on this "
                "cluster.")
