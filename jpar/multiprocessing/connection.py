"""Pipe() and its two Connection ends, carried by the state server so the ends can be in any
processes of the cluster.

A Pipe is two server-side queues, one per direction. ``send`` pickles (cloudpickle; large
buffers through the object store, as for Queue) and ``send_bytes`` sends the bytes as they are;
``recv`` on a direction whose writer called ``close()`` raises EOFError once it is drained.
Unlike an OS pipe, the other end does not see EOF when the *process* holding an end dies without
closing it: bound such waits with ``poll(timeout)``.
"""

from __future__ import annotations

import pickle
import time
from multiprocessing import BufferTooShort

from .queues import dumps_item, loads_item
from . import server
from .server import Handle, owner_id

__all__ = ["Pipe", "Connection", "wait", "BufferTooShort", "Listener", "Client", "AuthenticationError",
           "families"]


class _Channel(Handle):
    """One direction of a pipe (a server-side queue that counts the processes able to write it)."""

    def __init__(self):
        self._create("queue", writer=owner_id())


class Connection:
    """One end of a Pipe: ``send/recv/poll``, ``send_bytes/recv_bytes/recv_bytes_into``, ``close``.

    As with an OS pipe, the reader sees EOF once *every* copy of the writing end is closed: each
    process that received this end (pickled to it) holds a copy, closed by ``close()``, by garbage
    collection or by the process's death. A copy pickled and never unpickled keeps the pipe open.
    """

    def __init__(self, incoming: _Channel | None, outgoing: _Channel | None):
        self._in, self._out = incoming, outgoing
        self._closed = False

    def __reduce__(self):
        if self._closed:
            raise OSError("handle is closed")
        if self._out is not None and not server.IN_SERVER:
            self._out._call("writer", "send")
        return (_arrive, (self._in, self._out))

    def __del__(self):
        if not self._closed and self._out is not None and not server.IN_SERVER:
            try:
                self._out._client.call("writer", self._out._oid, "close", reply=False)
            except Exception:   # the cluster is gone, or the interpreter is shutting down
                pass

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readable(self) -> bool:
        return self._in is not None

    @property
    def writable(self) -> bool:
        return self._out is not None

    def _check(self, need_in: bool):
        if self._closed:
            raise OSError("handle is closed")
        if need_in and self._in is None:
            raise OSError("connection is write-only")
        if not need_in and self._out is None:
            raise OSError("connection is read-only")

    def _put(self, item) -> None:
        self._out._client.call("put", self._out._oid, item, reply=False)

    def _get(self, timeout=None):
        return self._in._call("get", True, timeout, True)

    def send(self, obj) -> None:
        """Send a picklable object to the other end."""
        self._check(False)
        self._put(dumps_item(obj, "Connection.send"))

    def recv(self):
        """The next object sent by the other end; EOFError when it closed and nothing is left."""
        self._check(True)
        return loads_item(self._get())

    def send_bytes(self, buf, offset: int = 0, size: int | None = None) -> None:
        """Send ``buf[offset:offset+size]`` (a bytes-like object) as one message."""
        self._check(False)
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._put(("bytes", bytes(m[offset:offset + size])))

    def _recv_raw(self) -> bytes:
        item = self._get()
        if type(item) is tuple and item[0] == "bytes":
            return item[1]
        if type(item) is tuple:   # an object sent through the store: its pickle
            return pickle.dumps(loads_item(item))
        return item

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """The next message as bytes; OSError if longer than ``maxlength`` (the message is dropped)."""
        self._check(True)
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._recv_raw()
        if maxlength is not None and len(data) > maxlength:
            self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf, offset: int = 0) -> int:
        """Write the next message into ``buf`` at ``offset``; BufferTooShort (holding the message)
        if it does not fit."""
        self._check(True)
        data = self._recv_raw()
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        if offset < 0 or offset > m.nbytes:
            raise ValueError("offset out of bounds")
        if len(data) > m.nbytes - offset:
            raise BufferTooShort(data)
        m[offset:offset + len(data)] = data
        return len(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether there is something to read (or EOF), waiting up to ``timeout`` seconds."""
        self._check(True)
        return self._in._call("poll", timeout)

    def close(self) -> None:
        """Close this end: the other end's ``recv`` raises EOFError once it read what was sent."""
        if not self._closed:
            self._closed = True
            if self._out is not None:
                self._out._call("writer", "close")

    def fileno(self) -> int:
        raise OSError("a jpar Connection lives in the cluster's state server and has no file descriptor; "
                      "use poll(timeout) or jpar.multiprocessing.connection.wait()")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("duplex" if self.readable and self.writable else
                                               "read-only" if self.readable else "write-only")
        return f"<jpar.multiprocessing.connection.Connection {state}>"


def _arrive(incoming, outgoing) -> Connection:
    """A Connection unpickled in another process: one more copy of its writing end is open."""
    if outgoing is not None and not server.IN_SERVER:
        outgoing._call("writer", "arrive")
    return Connection(incoming, outgoing)


def Pipe(duplex: bool = True, *, ctx=None) -> tuple[Connection, Connection]:
    """Two connected ends ``(a, b)``: duplex, or ``a`` read-only and ``b`` write-only."""
    a_to_b = _Channel()
    if not duplex:
        return Connection(a_to_b, None), Connection(None, a_to_b)
    b_to_a = _Channel()
    return Connection(b_to_a, a_to_b), Connection(a_to_b, b_to_a)


def wait(object_list, timeout: float | None = None) -> list:
    """The connections of ``object_list`` that are ready to read (a message or EOF), waiting up to
    ``timeout`` seconds (None: for ever) for one to become so. One server call that wakes as soon
    as any of them is written to or closed: the server waits on all of them at once, nothing polls.
    Other objects (sockets, sentinels, the stdlib's connections) are not supported here."""
    conns = list(object_list)
    for c in conns:
        if not isinstance(c, Connection):
            raise TypeError(f"jpar.multiprocessing.connection.wait() takes jpar Connections, got "
                            f"{type(c).__name__}")
        c._check(True)
    if not conns:
        if timeout is None:
            raise ValueError("wait() on no connections and no timeout would never return")
        time.sleep(max(0.0, timeout))   # as the stdlib's wait([]) does: it sleeps the timeout
        return []
    first = conns[0]._in
    if any(c._in._client.locator() != first._client.locator() for c in conns):
        raise ValueError("wait() takes connections of one cluster (one state server)")
    ready = first._client.call("wait_readable", 0, [c._in._oid for c in conns],
                               None if timeout is None else max(0.0, timeout))
    return [conns[i] for i in ready]


from .listener import AuthenticationError, Client, Listener, families  # noqa: E402  (listener.py builds on Pipe)
