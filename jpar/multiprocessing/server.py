"""The state server: where every Queue, Pipe, lock, event, barrier, shared value and managed object lives.

One server per cluster, started by the first object made (from the driver, a task, an actor or a
Process) as a named jpar actor, so its state outlives any engine or Process and it runs on every
backend. Data flow::

    Queue.put(x) in a Process on host A          Queue.get() in a task on host B
      |  x pickled here (large buffers:             |  no local socket on B: an actor call
      |  jpar.put, only the ref travels)            |  over the cluster's own transport
      v                                             v
    AF_UNIX socket (same host: authkey,      _StateServerActor.call(who, op, oid, args)
      one request/reply per operation,              |
      one connection per client thread)             |
      '---------------------> StateServer.dispatch <'
                                |  one mutex; a Condition per object on it; blocking
                                |  operations wait here, never by client polling
                                v
                          the objects (jpar.multiprocessing.objects): queue, lock, semaphore,
                          condition, event, barrier, ctypes value, managed object

The server never unpickles queued items (they stay bytes), so it needs none of the user's
modules; managed containers (dict, list, Namespace) hold real objects, as the stdlib's manager does.

Owners. Every request says who made it: ``(owner, thread)``, the owner being ``"host:pid"``
(:func:`owner_id`). When a same-host client's connection closes and its pid is gone, or when
:func:`release_owner` names it (what a Process calls when it ends), every lock and semaphore it
held is released, and the next acquirer gets it with a :class:`OwnerDiedWarning`.
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import secrets
import socket
import sys
import threading
from multiprocessing.connection import Client as _SocketClient
from multiprocessing.connection import Listener
from typing import Any

from jpar import backends
from jpar.errors import ClusterError

from . import fastqueue, fastsync
from .objects import _KINDS, _CallerGone, _Condition, _State, wait_readable

__all__ = ["SERVER_NAME", "OwnerDiedWarning", "owner_id", "StateServer", "Client", "Handle", "client",
           "release_owner"]

SERVER_NAME = "jpar.multiprocessing.state"   # the named actor every process of a cluster finds
_HOST = socket.gethostname()


class OwnerDiedWarning(RuntimeWarning):
    """The lock (or semaphore unit) just acquired was held by a process that died; it was released
    for you, so whatever it guarded may be half-updated: check it before relying on it."""


def owner_id(pid: int | None = None) -> str:
    """``"host:pid"``: how the server names the process that holds a lock."""
    return f"{_HOST}:{os.getpid() if pid is None else pid}"


# ------------------------------------------------------------------ the server
class StateServer:
    """The objects and the local socket that serves them; also called directly by the actor."""

    def __init__(self):
        self.mutex = threading.Lock()
        self.objects: dict[int, _State] = {}
        self.groups: dict[str, set] = collections.defaultdict(set)    # a Manager's id -> its objects
        self._ids = itertools.count(1)
        self.authkey = secrets.token_bytes(32)
        self.address = None
        self._listener = None
        self.peer_pids: dict[str, int] = {}   # owner -> its pid as this host sees it (socket peers)
        self.listeners: dict = {}   # connection.Listener: address -> (its accept queue's id, authkey digest)
        self._fast: fastsync.FastArenas | None = None

    def fast_arenas(self) -> fastsync.FastArenas:
        """The shared-memory slots of fast-path locks and semaphores (made on first use)."""
        if self._fast is None:
            self._fast = fastsync.FastArenas()
        return self._fast

    def _make(self, kind: str, params: dict) -> _State:
        if kind == "condition":
            return _Condition(self, self._get(params.pop("lock")))
        if kind in ("lock", "semaphore") and params.pop("fast", True) and fastsync.available():
            return fastsync.FastLockState(self, kind, **params)
        if kind == "event" and params.pop("fast", True) and fastsync.events_available():
            return fastsync.FastEventState(self)
        if kind == "queue" and params.pop("fast", True) and "writer" not in params and fastqueue.available():
            return fastqueue.FastQueueState(self, **params)   # a Queue's items in shared memory (not a Pipe's)
        return _KINDS[kind](self, **params)

    # -------------------------------------------------- requests
    def dispatch(self, who: tuple, op: str, oid: int, args: tuple, gone=None):
        with self.mutex:
            if op == "new":
                kind, params, group = args
                return self.add(self._make(kind, dict(params)), group)
            if op == "release_owner":
                self._release_owner(args[0])
                return None
            if op == "free_group":
                for i in self.groups.pop(args[0], ()):
                    state = self.objects.pop(i, None)
                    if state is not None:
                        state.free()
                return None
            if op == "group_size":
                return len(self.groups.get(args[0], ()))
            if op in ("listen", "listener", "unlisten"):   # connection.Listener / Client (listener.py)
                return self._listeners(op, *args)
            if op == "wait_readable":   # connection.wait: (queue ids, timeout)
                return wait_readable(self, [self._get(i) for i in args[0]], args[1], gone)
            state = self._get(oid)
            method = getattr(state, "op_" + op, None)
            if method is None:
                raise AttributeError(f"no operation {op!r} on {type(state).__name__}")
            if op not in state.unlocked_ops:
                return method(who, gone, *args)
        return method(who, gone, *args)   # it waits on a semaphore, not on the mutex

    def _listeners(self, op: str, address, digest: bytes | None = None):
        """The cluster's Listener addresses: ``listen`` claims one (with a new accept queue; an address
        in use raises as bind() does), ``listener`` looks one up for a Client, ``unlisten`` lets it go."""
        if op == "listen":
            if address in self.listeners:
                raise OSError(98, f"Address already in use: a jpar Listener listens at {address!r}")
            oid = self.add(self._make("queue", {"fast": False}), None)
            self.listeners[address] = (oid, digest)
            return oid
        if op == "listener":
            return self.listeners.get(address)
        entry = self.listeners.pop(address, None)
        state = self.objects.pop(entry[0], None) if entry is not None else None
        if state is not None:
            state.items.append(None)        # an accept() waiting on it wakes and says it was closed
            state._became_readable()
        return None

    def add(self, state: _State, group: str | None) -> int:
        oid = next(self._ids)
        self.objects[oid] = state
        state.group = group
        if group:
            self.groups[group].add(oid)
        return oid

    def _get(self, oid: int) -> _State:
        try:
            return self.objects[oid]
        except KeyError:
            raise ValueError(f"object {oid} does not exist on the state server (its Manager was shut "
                             "down, or it belongs to another cluster); create it again") from None

    def _release_owner(self, owner: str) -> None:
        for state in list(self.objects.values()):
            state.drop_owner(owner)

    # -------------------------------------------------- the local socket
    def listen(self) -> None:
        """Serve same-host clients on an AF_UNIX socket guarded by the authkey. Linux: an
        abstract-namespace address, which vanishes with this process (the cluster SIGKILLs actors,
        so a socket file would be left behind); elsewhere a path in a private 0700 directory."""
        if sys.platform.startswith("linux"):
            address = "\0jpar-mp-" + secrets.token_hex(8)
        else:
            import tempfile
            address = os.path.join(tempfile.mkdtemp(prefix="jpar-mp-"), "s")
        self._listener = Listener(address, family="AF_UNIX", authkey=self.authkey, backlog=64)
        self.address = address
        threading.Thread(target=self._accept_loop, name="jpar-mp-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                continue   # a client that failed the authkey challenge, or went away mid-handshake
            threading.Thread(target=self._serve, args=(conn,), name="jpar-mp-conn", daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            owner, pid, tid = pickle.loads(conn.recv_bytes())
        except Exception:
            conn.close()
            return
        who = (owner, tid)
        pid = _peer_pid(conn) or pid   # as this host's pid namespace sees it
        with self.mutex:
            self.peer_pids[owner] = pid

        def gone() -> bool:
            """Whether the client hung up while the server waits for it: readable and nothing to
            read is EOF (a one-way message sent meanwhile, e.g. by a finalizer, is not)."""
            try:
                if not conn.poll(0):
                    return False
                peek = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    return peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                finally:
                    peek.close()
            except BlockingIOError:
                return False
            except OSError:
                return True

        try:
            while True:
                try:
                    op, oid, args, reply = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    break
                try:
                    if op == "arena_fd":   # the memfd itself, passed over this socket, then the reply
                        with self.mutex:
                            arena = self.fast_arenas().arenas[oid]
                        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                            socket.send_fds(sock, [b"F"], [arena.fd] if arena.fd >= 0 else [])
                        result = (0, arena.size)
                    else:
                        result = (0, self.dispatch(who, op, oid, args, gone))
                except _CallerGone:
                    break
                except Exception as exc:   # the caller's error (queue.Empty, ValueError, ...)
                    result = (1, exc)
                if not reply:
                    continue
                try:
                    conn.send_bytes(pickle.dumps(result, pickle.HIGHEST_PROTOCOL))
                except (OSError, ValueError):
                    if op == "get" and result[0] == 0:   # the item would be lost with its reader
                        with self.mutex:
                            self.objects[oid].undo_get(result[1])
                    break
        finally:
            conn.close()
            if not _pid_alive(pid):
                with self.mutex:
                    self._release_owner(owner)


def _peer_pid(conn) -> int | None:
    """The pid of the process at the other end of a same-host socket (Linux: SO_PEERCRED)."""
    import struct

    if not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


IN_SERVER = False   # True in the server's own process: handles unpickled there must not call it


class _StateServerActor:
    """The state server as a jpar actor: same-host clients use its socket, others call ``call``."""

    def __init__(self):
        global IN_SERVER
        IN_SERVER = True
        self.server = StateServer()
        self.server.listen()

    def locator(self) -> tuple:
        return (_HOST, self.server.address, self.server.authkey)

    def call(self, who: tuple, op: str, oid: int, args: tuple):
        try:
            return 0, self.server.dispatch(tuple(who), op, oid, args, None)
        except Exception as exc:
            return 1, exc


# ------------------------------------------------------------------ the client side
class Client:
    """How this process reaches one state server: its socket when on the same host (a connection
    per thread, made on first use), else actor calls."""

    def __init__(self, cluster_id: str, host: str, address: Any, authkey: bytes):
        self.cluster_id, self.host, self.address, self.authkey = cluster_id, host, address, authkey
        self._local = threading.local()
        self._socket_ok = host == _HOST
        self._actor = None
        self._fast: dict[int, Any] = {}       # object id -> its fast-path slot here, or None
        self._arenas: dict[int, Any] = {}     # the server's memfds mapped here

    def fast_cache(self) -> dict:
        """This process's fast-path slots of the server's objects (see jpar.multiprocessing.fastsync)."""
        if getattr(self, "_fast_pid", None) != os.getpid():
            self._fast, self._arenas, self._fast_pid = {}, {}, os.getpid()
        return self._fast

    def local(self) -> bool:
        """Whether this process reaches the server by its same-host socket."""
        return self._conn() is not None

    def arena(self, arena_id: int, mapper):
        """The server's memfd ``arena_id`` mapped here (received over the socket once), or None."""
        got = self._arenas.get(arena_id)
        if got is not None:
            return got
        conn = self._conn()
        if conn is None:
            return None
        try:
            conn.send_bytes(pickle.dumps(("arena_fd", arena_id, (), True), pickle.HIGHEST_PROTOCOL))
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                _, fds, _, _ = socket.recv_fds(sock, 1, 1)
            status, value = pickle.loads(conn.recv_bytes())
        except BaseException:
            self._drop_conn()
            raise
        if status or not fds:
            for fd in fds:
                os.close(fd)
            return None
        try:
            got = self._arenas[arena_id] = mapper(fds[0], value)
        finally:
            os.close(fds[0])   # the mapping keeps the memory
        return got

    def locator(self) -> tuple:
        return (self.cluster_id, self.host, self.address, self.authkey)

    def _conn(self):
        mine = getattr(self._local, "conn", None)
        pid = os.getpid()
        if mine is not None and mine[0] == pid:
            return mine[1]
        if not self._socket_ok:
            return None
        try:
            conn = _SocketClient(self.address, family="AF_UNIX", authkey=self.authkey)
        except (OSError, ValueError):
            self._socket_ok = False   # same host name, other network namespace: use the actor
            return None
        conn.send_bytes(pickle.dumps((owner_id(pid), pid, threading.get_ident())))
        self._local.conn = (pid, conn)
        return conn

    def _drop_conn(self) -> None:
        mine = getattr(self._local, "conn", None)
        self._local.conn = None
        if mine is not None and mine[0] == os.getpid():
            mine[1].close()

    def call(self, op: str, oid: int, *args, reply: bool = True):
        """One operation; raises what the server raised. ``reply=False``: send and do not wait."""
        conn = self._conn()
        if conn is None:
            return self._call_actor(op, oid, args)
        try:
            conn.send_bytes(pickle.dumps((op, oid, args, reply), pickle.HIGHEST_PROTOCOL))
            if not reply:
                return None
            status, value = pickle.loads(conn.recv_bytes())
        except BaseException as exc:   # interrupted mid-call: the reply would desynchronize this connection
            self._drop_conn()
            if isinstance(exc, (EOFError, ConnectionError)):
                raise ClusterError("The jpar.multiprocessing state server went away (the cluster was shut "
                                   "down?). Create the object again on a running cluster.") from exc
            raise
        if status:
            raise value
        return value

    def _call_actor(self, op, oid, args):
        import jpar

        # Only through this object's own cluster: never start one (a call on no cluster starts one on
        # first use, e.g. when a Pipe end from a stopped cluster is garbage-collected between tests)
        # and never ask another cluster for "the" state server.
        b = backends.current()
        if b is None or b.closed or b.cluster_id != self.cluster_id:
            raise ClusterError("The jpar.multiprocessing state server went away (its cluster was shut "
                               "down). Create the object again on a running cluster.")
        if self._actor is None:
            self._actor = jpar.get_actor(SERVER_NAME)
        status, value = jpar.get(self._actor.call.remote((owner_id(), threading.get_ident()), op, oid, args))
        if status:
            raise value
        return value


_clients: dict[tuple, Client] = {}
_by_cluster: dict[str, Client] = {}
_clients_lock = threading.Lock()


def _client_for(locator: tuple) -> Client:
    c = _clients.get(locator)
    if c is None:
        with _clients_lock:
            c = _clients.setdefault(locator, Client(*locator))
    return c


def client() -> Client:
    """The state server of the current cluster, started on first use (a local cluster too, as
    ``Pool()`` does)."""
    import jpar

    b = backends.current()
    if b is None or b.closed:
        from jpar.submitter import ensure_cluster
        ensure_cluster()
        b = backends.current()
    c = _by_cluster.get(b.cluster_id)
    if c is not None:
        return c
    with _clients_lock:
        c = _by_cluster.get(b.cluster_id)
        if c is None:
            opts = dict(name=SERVER_NAME, get_if_exists=True, num_cpus=0)
            if b.capabilities.actor_concurrency:
                opts["max_concurrency"] = 1000
            handle = jpar.remote(**opts)(_StateServerActor).remote()
            host, address, authkey = jpar.get(handle.locator.remote(), timeout=120)
            locator = (b.cluster_id, host, address, authkey)
            c = _clients.setdefault(locator, Client(*locator))
            # The client keeps the handle for the cluster's life: Ray ends an actor whose last handle is
            # dropped, named or not, a moment later, so the server vanished under the objects made from
            # it now and then (a Process's Queue on Ray found no server).
            c._actor = handle
            _by_cluster[b.cluster_id] = c
    return c


def release_owner(owner: str) -> None:
    """Release every lock and semaphore that ``owner`` (``"host:pid"``, see :func:`owner_id`) holds:
    what a Process calls when it learns that one ended. A no-op if no server was started."""
    b = backends.current()
    if b is None or b.closed:
        return
    c = _by_cluster.get(b.cluster_id) or next(
        (c for loc, c in list(_clients.items()) if loc[0] == b.cluster_id), None)   # a handle's server
    if c is not None:
        c.call("release_owner", 0, owner)


class Handle:
    """Base of every client-side object: a client and an object id; pickles as its locator and id,
    and reconnects on first use wherever it is unpickled."""

    _kind = ""

    def _create(self, kind: str, group: str | None = None, **params) -> None:
        self._client = client()
        self._oid = self._client.call("new", 0, kind, params, group)

    def _call(self, op: str, *args):
        return self._client.call(op, self._oid, *args)

    def _extra(self) -> dict:
        """Client-side attributes that travel with the handle."""
        return {}

    def __reduce__(self):
        return (_rebuild, (type(self), self._client.locator(), self._oid, self._extra()))

    def __eq__(self, other):
        return type(other) is type(self) and other._oid == self._oid and \
            other._client.locator() == self._client.locator()

    def __hash__(self):
        return hash((type(self), self._oid))


def _rebuild(cls, locator, oid, extra):
    obj = cls.__new__(cls)
    obj._client = _client_for(locator)
    obj._oid = oid
    obj.__dict__.update(extra)
    return obj
