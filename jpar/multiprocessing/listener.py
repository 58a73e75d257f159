"""``multiprocessing.connection.Listener`` and ``Client`` between processes of the cluster.

The stdlib's pair meets over a socket at an address (a host and port, a path). Here every process,
on any host, already reaches the cluster's state server, so an address is a name the server keeps:
``Listener(address)`` claims it (one listener per address in the cluster, as a bound port), and
``Client(address)`` makes a duplex Pipe, puts one end on that listener's accept queue and returns the
other; ``accept()`` takes the next end. Any picklable address works: ``('localhost', 6000)`` as in
code written for the stdlib, a string, or none at all (a fresh name, read from ``listener.address``).
No port is opened. ``authkey`` is checked by the server against a digest the listener registered:
a Client with another key (or with one where the listener has none, and the reverse) raises
AuthenticationError before anything is sent, where the stdlib fails its challenge after connecting.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from multiprocessing import AuthenticationError

from . import server
from .connection import Connection, Pipe
from .queues import dumps_item, loads_item

__all__ = ["Listener", "Client", "AuthenticationError", "families"]

FAMILIES = (None, "AF_INET", "AF_INET6", "AF_UNIX", "AF_PIPE")
families = ["AF_INET", "AF_UNIX"]      # what the stdlib lists on Linux: each is accepted, none opens a socket


def _digest(authkey: bytes | None) -> bytes | None:
    if authkey is None:
        return None
    if not isinstance(authkey, bytes):
        raise TypeError(f"authkey should be a byte string, not {type(authkey).__name__}")
    return hashlib.sha256(b"jpar-listener\0" + authkey).digest()


def _check_family(family) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unrecognized family {family!r}")


class Listener:
    """Accepts Connections from ``Client(address)`` calls in any process of the cluster."""

    def __init__(self, address=None, family=None, backlog: int = 1, authkey: bytes | None = None):
        _check_family(family)
        self._address = address if address is not None else f"jpar-listener-{secrets.token_hex(8)}"
        self._client = server.client()
        self._queue = self._client.call("listen", 0, self._address, _digest(authkey))
        self._last_accepted = None
        self._closed = False

    @property
    def address(self):
        """What a Client connects to (the one given, or the name made for it)."""
        return self._address

    @property
    def last_accepted(self):
        """Who connected last (``"host:pid"`` of the Client's process), or None before the first."""
        return self._last_accepted

    def accept(self) -> Connection:
        """The next Client's end of its Pipe; waits for one. OSError once the listener is closed."""
        if self._closed:
            raise OSError("listener is closed")
        try:
            raw = self._client.call("get", self._queue, True, None)
        except ValueError:              # its queue went with close() before this call reached the server
            raw = None
        if raw is None:
            raise OSError("listener is closed")
        who, conn = loads_item(raw)
        self._last_accepted = who
        return conn

    def close(self) -> None:
        """Let the address go; an accept() waiting in another thread raises OSError."""
        if not self._closed:
            self._closed = True
            self._client.call("unlisten", 0, self._address)

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            try:
                self._client.call("unlisten", 0, self._address, reply=False)
            except Exception:   # the cluster is gone, or the interpreter is shutting down
                pass

    def __repr__(self) -> str:
        return f"<jpar.multiprocessing.connection.Listener {self._address!r}{' closed' if self._closed else ''}>"


def Client(address, family=None, authkey: bytes | None = None) -> Connection:
    """A Connection to the Listener at ``address`` in this cluster; ConnectionRefusedError if none
    listens there, AuthenticationError if the keys differ."""
    _check_family(family)
    c = server.client()
    found = c.call("listener", 0, address)
    if found is None:
        raise ConnectionRefusedError(f"No jpar Listener at {address!r} in this cluster: start "
                                     "jpar.multiprocessing.connection.Listener(address) in some process first.")
    queue_id, digest = found
    mine = _digest(authkey)
    if (digest is None) != (mine is None) or (digest is not None and not hmac.compare_digest(digest, mine)):
        raise AuthenticationError("digest received was wrong: the Listener was made with another authkey")
    ours, theirs = Pipe(duplex=True)
    c.call("put", queue_id, dumps_item((server.owner_id(), theirs)))
    theirs.close()                 # its copy now travels in the queue (pickling counted it)
    return ours
