"""Queue, SimpleQueue and JoinableQueue whose items live in the state server, so any engine,
actor or Process of the cluster (any host) can put and get.

Items are pickled here with cloudpickle (lambdas and notebook classes travel); the server keeps
them as bytes. An item holding a buffer of ``LARGE_ITEM_BYTES`` or more (a big numpy array), or
pickling to more than that, goes into the object store with ``jpar.put`` and only its ref travels
through the queue; the getter ``jpar.get``s it (on the same host: mapped from shared memory),
then, on the native backend, ``jpar.free``s it: a queued item is taken exactly once, and its
pickled ref would otherwise pin the value until the cluster stops (see jpar.refs), as it still
does on Ray and Dask. What the getter holds stays valid: the store recycles a segment only once
nobody maps it.

On the state server's host the items sit in shared memory that every process there operates
directly (:mod:`.fastqueue`: a put or a get is a few memory writes under a lock, a futex wake when
someone sleeps); processes on other hosts reach the same queue through the server. Where that fast
path is missing, every operation is a server call, and a ``put`` on an unbounded queue is sent
without waiting for the server's answer (as the stdlib's feeder thread does it in the background).
"""

from __future__ import annotations

import os
import pickle

import cloudpickle

from jpar.errors import SerializationError
from jpar.pickling import cloud_dumps

from .fastqueue import open_ring
from .server import Handle

__all__ = ["Queue", "SimpleQueue", "JoinableQueue", "LARGE_ITEM_BYTES", "dumps_item", "loads_item"]

LARGE_ITEM_BYTES = 1 << 20   # from this size on an item travels through the object store


_BY_VALUE = getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ())   # cloudpickle's registry (a set)


def _plain_dumps(obj, buffer_callback) -> bytes | None:
    """``obj`` pickled by pickle's C pickler where that gives what cloudpickle would (about 0.3 us
    for a small item against 5 us): nothing in it named by reference from ``__main__`` (cloudpickle
    ships those by value) and no module registered to be pickled by value; else None."""
    if _BY_VALUE:
        return None
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback)
    except Exception:   # a lambda, a local function...: cloudpickle's job
        return None
    return None if b"__main__" in data else data


def dumps_item(obj, what: str = "Queue.put"):
    """An item as the server stores it: pickled bytes, or ``("ref", pickled ObjectRef)``."""
    big = []

    def out_of_band(buf) -> bool:
        n = buf.raw().nbytes
        if n >= LARGE_ITEM_BYTES:
            big.append(n)
            return False
        return True

    data = _plain_dumps(obj, out_of_band)
    if data is None:
        big.clear()
        try:
            data = cloud_dumps(obj, buffer_callback=out_of_band)
        except Exception as exc:
            raise SerializationError(
                f"{what}() could not pickle the item, a {type(obj).__module__}.{type(obj).__qualname__} "
                f"({type(exc).__name__}: {exc}). "
                "Items travel between processes pickled; send only picklable objects (or the data to rebuild "
                "this one).") from exc
    if big or len(data) >= LARGE_ITEM_BYTES:
        import jpar

        if jpar.is_initialized():
            return ("ref", cloud_dumps(jpar.put(obj)))
        if big:
            data = cloud_dumps(obj)
    return data


def loads_item(item):
    if type(item) is tuple:
        if item[0] == "bytes":   # sent with Connection.send_bytes
            return pickle.loads(item[1])
        return _take(pickle.loads(item[1]))
    return pickle.loads(item)


def _take(ref):
    """The value of a queued item's ref, its storage released where any process may free a value for
    the whole cluster (the backend's ``free_any`` flag: native): the item is consumed (each is got
    once), so nothing else will read it. Elsewhere it stays (Ray and Dask free only what the freeing
    process owns, and Dask logs a failed stand-in task per free)."""
    import jpar
    from jpar import backends

    try:
        return jpar.get(ref)
    finally:
        b = backends.current()
        if b is not None and not b.closed and b.capabilities.free_any:
            try:
                jpar.free(ref)
            except Exception:   # the cluster went away meanwhile: its store went with it
                pass


def _timeout(block: bool, timeout):
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        return 0.0
    return timeout


class _RingHandle(Handle):
    """A Handle whose items may live in this host's shared memory: ``_ring()`` is the queue's ring
    mapped here (opened on first use in each process), or None: every operation is a server call."""

    _ring_pid = -1
    _ring_at: object = None

    def _ring(self):
        if self._ring_pid != os.getpid():
            self._ring_at, self._ring_pid = open_ring(self), os.getpid()
        return self._ring_at


class Queue(_RingHandle):
    """multiprocessing.Queue: FIFO, ``maxsize``, ``put/get(block, timeout)`` raising
    ``queue.Full`` / ``queue.Empty``; usable from any process of the cluster."""

    _joinable = False

    def __init__(self, maxsize: int = 0, *, ctx=None, _group=None):
        if maxsize is None or maxsize <= 0:
            maxsize = 0
        self._maxsize = maxsize
        self._closed = False
        self._create("queue", _group, maxsize=maxsize, joinable=self._joinable)

    def _extra(self) -> dict:
        return {"_maxsize": self._maxsize, "_closed": False}

    def _check_closed(self):
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        """Add ``obj``; on a full bounded queue wait up to ``timeout`` seconds, then ``queue.Full``."""
        self._check_closed()
        item = dumps_item(obj)
        ring = self._ring()
        if ring is not None:
            ring.put(item, block, timeout, self._joinable)
        elif self._maxsize == 0:
            self._client.call("put", self._oid, item, reply=False)
        else:
            self._call("put", item, True, _timeout(block, timeout))

    def get(self, block: bool = True, timeout: float | None = None):
        """The oldest item; waits up to ``timeout`` seconds (None: for ever), then ``queue.Empty``."""
        self._check_closed()
        ring = self._ring()
        if ring is not None:
            return loads_item(ring.get(block, timeout))
        return loads_item(self._call("get", True, _timeout(block, timeout)))

    def put_nowait(self, obj) -> None:
        self.put(obj, False)

    def get_nowait(self):
        return self.get(False)

    def qsize(self) -> int:
        ring = self._ring()
        return ring.qsize() if ring is not None else self._call("qsize")

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        ring = self._ring()
        return ring.full() if ring is not None else self._call("full")

    def close(self) -> None:
        """This handle stops putting and getting; the queue and its items stay for other handles."""
        self._closed = True

    def join_thread(self) -> None:
        """Nothing to join: items reach the queue as they are put (no feeder thread)."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: there is no feeder thread (accepted for the stdlib's API)."""

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing.{type(self).__name__} {self._oid}>"


class JoinableQueue(Queue):
    """A Queue whose ``join()`` waits until every item put was marked ``task_done()``."""

    _joinable = True

    def task_done(self) -> None:
        """One item is processed; ValueError when called more times than items were put."""
        ring = self._ring()
        if ring is not None:
            ring.task_done()
        else:
            self._call("task_done")

    def join(self) -> None:
        """Wait until every item put so far has been marked done."""
        ring = self._ring()
        if ring is not None:
            ring.join()
        else:
            self._call("join", None)


class SimpleQueue(_RingHandle):
    """multiprocessing.SimpleQueue: unbounded, ``put``, ``get``, ``empty``, ``close``."""

    def __init__(self, *, ctx=None):
        self._closed = False
        self._create("queue")

    def _extra(self) -> dict:
        return {"_closed": False}

    def put(self, obj) -> None:
        if self._closed:
            raise OSError("handle is closed")
        item = dumps_item(obj, "SimpleQueue.put")
        ring = self._ring()
        if ring is not None:
            ring.put(item)
        else:
            self._client.call("put", self._oid, item, reply=False)

    def get(self):
        if self._closed:
            raise OSError("handle is closed")
        ring = self._ring()
        if ring is not None:
            return loads_item(ring.get())
        return loads_item(self._call("get", True, None))

    def empty(self) -> bool:
        ring = self._ring()
        return (ring.qsize() if ring is not None else self._call("qsize")) == 0

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing.SimpleQueue {self._oid}>"
