"""Releasing the values of the refs a Dask driver dropped: what :meth:`DaskBackend._drain` does.

A collected ObjectRef appends its id to the backend's ``released`` deque, and the backend's next
call drains it here (never in ``__del__``, which may run in any thread, in the middle of anything).

Dropping a ``distributed.Future`` costs two hops through the client's event loop (``_dec_ref``,
then a scheduler message ``client-releases-keys`` of that one key), so the 1000 refs of
``jpar.get([f.remote(i) for i in range(1000)])`` cost the next call 13-44 ms, and the scheduler
(in the driver's process with a LocalCluster) 60-80 ms more (2-core VM): the "chain of 50" after
them measured 1.2-2.9x Dask's. :func:`drain` releases the futures that only the backend holds,
when there are many, in one loop callback and one message, as Dask's own ``_dec_ref`` and
``_release_key`` would one by one (1.5 ms, and 20 ms in the scheduler). A future something else
still holds (a done callback, another structure of the backend) is dropped as before: Dask
releases its key when the last holder lets it go. Actor calls' outcomes are forgotten in batches
too (:func:`send_forget`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from distributed import Future

__all__ = ["drain", "send_forget"]

_MINE = 2    # sys.getrefcount of a future held only by the caller's local name (and the call's argument)
_BATCH_MIN = 32   # fewer go Dask's own way: one at a time, a batch measured slower (1.33x vs 1.02x a round trip)


def drain(b: Any) -> None:
    """Forget the refs collected since the last call, and release their values."""
    rel = b.released
    if rel:
        forget = b._forget
        drop: list = []
        while rel:
            i = rel.popleft()
            aid = b._call_actor.pop(i, None)
            if aid is not None:
                forget.setdefault(aid, []).append(i)
                b._forget_n += 1
            f = b._futures.pop(i, None)
            if type(f) is Future and sys.getrefcount(f) == _MINE:
                drop.append(f)
            f = None
            b._main.pop(i, None)
            b._names.pop(i, None)
            b._cancelled.discard(i)
            b._actor_calls.discard(i)
            b.frontend._forget(i)
        if len(drop) >= _BATCH_MIN:
            _release(b.client, drop)
    if b._forget_n >= 1000 or (b._forget_n and time.monotonic() - b._forgot > 1.0):
        send_forget(b)
    while b._dropped_actors:
        aid = b._dropped_actors.popleft()
        if aid not in b._escaped_actors and aid not in b._actor_names:   # the owner's handle is gone
            b._actors.pop(aid, None)
            b._actor_futures.pop(aid, None)
            b._proxies.pop(aid, None)


def _release(client: Any, futures: list) -> None:
    """Release ``futures`` (held by nobody else) in one event-loop callback: each is marked released,
    so its ``__del__`` sends nothing; their keys go in one message. A Dask without the fields this
    reads drops them one by one, as before."""
    if not all(hasattr(client, a) for a in ("generation", "refcount", "_refcount_lock", "_send_to_scheduler_safe")):
        return
    generation, keys = client.generation, []
    for f in futures:
        if not getattr(f, "_cleared", True) and getattr(f, "_generation", None) == generation:
            f._cleared = True
            keys.append(f.key)
    if keys:
        try:
            client.loop.add_callback(_release_keys, client, keys)
        except Exception:   # the client is closing
            pass


def _release_keys(client: Any, keys: list) -> None:
    """On the client's event loop: Dask's ``Client._dec_ref`` for each key, then one
    ``client-releases-keys`` message for those no future of this client holds any more."""
    gone = []
    with client._refcount_lock:
        for key in keys:
            n = client.refcount.get(key, 0) - 1
            if n > 0:
                client.refcount[key] = n
                continue
            client.refcount.pop(key, None)
            st = client.futures.pop(key, None)
            if st is not None:
                st.cancel()
            gone.append(key)
    if gone and client.status != "closed":
        client._send_to_scheduler_safe({"op": "client-releases-keys", "keys": gone, "client": client.id})


def send_forget(b: Any) -> list:
    """Tell the actors which calls' refs are gone (they keep each call's outcome until then), in
    batches: a message per call would double an actor call's cost. Returns the messages' futures."""
    forget, b._forget, b._forget_n, b._forgot = b._forget, {}, 0, time.monotonic()
    sent = []
    for aid, ids in forget.items():
        proxy = b._proxy(aid)
        if proxy is not None:
            try:
                sent.append(proxy.forget(ids))
            except Exception:   # the actor is gone
                pass
    return sent
