"""jpar.free on Dask: drop keys' data on the workers now, and make their refs raise ObjectFreedError.

::

    jpar.free(ref) --> backend._futures[ref.id] = future of a tiny task raising ObjectFreedError
         |               (key "<key>-freed"): get, wait, .future() and tasks given the ref as an
         |               argument all meet that error through the one table they read
         +--> scheduler: every client's wish for the key withdrawn (client_releases_keys for each
                         of who_wants): the scheduler forgets the key and tells its workers to drop
                         the data, once no task still running needs it

``Client.cancel`` would drop the data too, but it also cancels the key's dependents, finished ones
included, whose values other refs still hold. A key whose task has not finished is released when
it finishes (a done callback holds its future until then): released now, Dask would drop the task
(it runs only what someone wants), and jpar.free does not cancel, on any backend.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ...errors import ObjectFreedError
from ...refs import ObjectRef, check_cluster
from . import actor_calls as AC
from . import worker as W

__all__ = ["free"]

log = logging.getLogger("jpar.dask")

FREED_SUFFIX = "-freed"


def free(b: Any, refs: list) -> None:
    """Free ``refs`` on the DaskBackend ``b`` (see :func:`jpar.free`); unknown or freed ones are skipped."""
    check_cluster(refs, b.cluster_id)
    b._drain()
    now: list = []
    for ref in refs:
        f = b._futures.get(ref.id)
        if f is None:
            known = b.key(ref.id)
            if known not in b.client.futures:   # never seen here: nothing to free, as on the other backends
                continue
            f = b._fut(ref)
        if str(getattr(f, "key", "")).endswith(FREED_SUFFIX):
            continue                            # freed already
        b._futures[ref.id] = _failing(b, ref)
        aid = b._call_actor.pop(ref.id, None)
        if aid is not None:                     # a direct actor call: its actor keeps the outcome until told
            b._forget.setdefault(aid, []).append(ref.id)
            b._forget_n += 1
        if type(f) is AC.CallFuture:
            continue
        if f.done():
            now.append(f.key)
        else:
            b._freeing[f.key] = f               # keeps the task wanted (running) until it finishes
            f.add_done_callback(lambda fut, b=b: _release_later(b, fut.key))
    if now:
        _release(b, now)


def _failing(b: Any, ref: ObjectRef) -> Any:
    """The future of a task that raises ObjectFreedError naming ``ref``: the freed ref's stand-in."""
    return b.client.submit(W.fail_with, ObjectFreedError(repr(ref)), key=b.key(ref.id) + FREED_SUFFIX, pure=False)


def _release_later(b: Any, key: str) -> None:
    """A freed key's task finished: release it from a thread (this runs on the client's event loop,
    which the scheduler call below needs)."""
    def go():
        _release(b, [key])
        b._freeing.pop(key, None)

    threading.Thread(target=go, name="jpar-dask-free", daemon=True).start()


def _release(b: Any, keys: list) -> None:
    if b.closed:
        return
    try:
        b.client.run_on_scheduler(_release_everywhere, keys)
    except Exception as exc:   # the scheduler is gone: so is the data
        log.debug("jpar.free of %d key(s) on the scheduler failed: %s", len(keys), exc)


def _release_everywhere(keys: list, dask_scheduler: Any = None) -> int:
    """On the scheduler: every client releases ``keys``; how many keys were known."""
    known = 0
    stimulus = f"jpar-free-{time.time()}"
    for key in keys:
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            continue
        known += 1
        for cs in list(ts.who_wants or ()):
            dask_scheduler.client_releases_keys(keys=[key], client=cs.client_key, stimulus_id=stimulus)
    return known
