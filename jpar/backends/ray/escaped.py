"""Refs pickled where Ray does not see them, on the Ray backend.

A jpar ref that crosses Ray's own serialization (task arguments, results, ``put`` values) carries
its Ray ObjectRef (worker.py's registered serializer), so Ray's borrowing keeps the value alive
wherever it went. Pickled by anything else (an item of a ``jpar.multiprocessing`` Queue or Pipe,
whose state server keeps bytes; a value a user pickles by hand), only the jpar id travels, and the
process that unpickles it has no Ray ref for that id: its ``get`` raised ObjectLostError "not known
to this process". So when such a pickle takes a ref (ObjectRef.__reduce__ calls the table's
``ref_escaping``), the ref is published here: one small actor per jpar session on Ray (named after
the session's cluster id, no CPU) holds its Ray ref, and a process of the same session that meets
an id it does not know asks that actor. Holding it keeps the value alive until the session ends, as
a pickled ref pins its value on the native backend. The actor starts on the first escape only; Ray
ties an actor to the process that made it, so one first made by a task's worker (a task that put a
large item on a Queue before the driver escaped any ref) lives as long as that worker does.
"""

from __future__ import annotations

import threading
from typing import Any

import ray

__all__ = ["publish", "find", "forget"]

_lock = threading.Lock()
_handles: dict[str, Any] = {}        # cluster id -> the registry actor's handle
_published: set = set()              # (cluster id, jpar id) published from this process


@ray.remote(num_cpus=0)
class _Registry:
    """jpar id -> Ray ObjectRef of the refs of one session that were pickled outside Ray."""

    def __init__(self):
        self.refs: dict[int, Any] = {}

    def publish(self, jid: int, boxed: list) -> None:
        self.refs.setdefault(jid, boxed[0])     # boxed: Ray passes a nested ref as itself (borrowed)

    def find(self, jid: int) -> list | None:
        rr = self.refs.get(jid)
        return None if rr is None else [rr]


def _name(cluster_id: str) -> str:
    return f"jpar-escaped-{cluster_id}"


def _registry(cluster_id: str, namespace: str | None, create: bool) -> Any:
    with _lock:
        h = _handles.get(cluster_id)
        if h is None:
            if create:
                h = _Registry.options(name=_name(cluster_id), namespace=namespace, get_if_exists=True).remote()
            else:
                try:
                    h = ray.get_actor(_name(cluster_id), namespace=namespace)
                except ValueError:           # nothing of this session escaped yet
                    return None
            _handles[cluster_id] = h
        return h


def publish(cluster_id: str, namespace: str | None, jid: int, rayref: Any, timeout: float = 60.0) -> None:
    """Make ``jid`` findable by the session's other processes (once per ref and process); returns
    once the registry holds it, so whoever reads the pickle next finds it."""
    if (cluster_id, jid) in _published:
        return
    h = _registry(cluster_id, namespace, True)
    ray.get(h.publish.remote(jid, [rayref]), timeout=timeout)
    _published.add((cluster_id, jid))


def find(cluster_id: str, namespace: str | None, jid: int, timeout: float = 60.0) -> Any:
    """The Ray ref published for ``jid`` in this session, or None."""
    h = _registry(cluster_id, namespace, False)
    if h is None:
        return None
    got = ray.get(h.find.remote(jid), timeout=timeout)
    return None if got is None else got[0]


def forget(cluster_id: str, namespace: str | None = None, kill: bool = False) -> None:
    """The session ends: forget its registry (``kill``, by its driver: stop the actor and the values
    it held with it; on a cluster jpar only connected to, the driver's job goes on and would keep it)."""
    with _lock:
        h = _handles.pop(cluster_id, None)
        for key in [k for k in _published if k[0] == cluster_id]:
            _published.discard(key)
    if not kill:
        return
    try:
        if h is None:                 # made by a task of the session, if at all
            h = ray.get_actor(_name(cluster_id), namespace=namespace)
        ray.kill(h)
    except Exception:   # none, or already gone with its cluster
        pass
