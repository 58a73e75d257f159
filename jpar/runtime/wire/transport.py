"""ZeroMQ sockets carrying signed protocol messages: the only module that imports zmq.

A :class:`Channel` wraps one socket, the cluster's :class:`~jpar.runtime.wire.protocol.Signer`, the
:class:`~jpar.runtime.wire.protocol.Session` it signs with and the :class:`~jpar.runtime.wire.protocol.ReplayGuard`
of what it has received. ``send``/``recv`` move whole :mod:`~jpar.runtime.wire.protocol` messages.
ROUTER channels address peers by identity and refuse (``send_to`` returns False) a send
to a peer that is not connected, so no message is lost without its sender knowing.

What reaches a listening socket may come from anyone on the host, so every receive
does bounded work: one call reads at most :data:`RECV_BUDGET` messages, valid or not;
receive queues are bounded per peer (:data:`RCVHWM`, the sender is slowed, nothing is
lost); invalid messages are dropped after the cheapest check that fails them and logged
as one summary line per :data:`DROP_LOG_INTERVAL_S` per socket. Connections carry
ZMTP heartbeats, answered by libzmq's own I/O thread, so a peer whose Python thread is
busy (a task holding the GIL) stays connected, and a peer that is gone (host lost,
process stopped or killed) is disconnected, which a :class:`Monitor` reports.

Off loopback every socket speaks CurveZMQ (encrypted, and only peers whose public key the
process's ZAP authenticator knows get in), on top of the HMAC signatures; loopback and
IPC stay plaintext, so local round trips cost what they did. The process's keys come
from :mod:`~jpar.runtime.wire.keys` through :func:`configure_security` (loaded on first
use, so a process that never leaves loopback reads no key file). A listening socket off
loopback advertises its public key with its address (``tcp://host:port#curve=KEY``, see
:func:`advertised_endpoint`), so whoever connects to it knows which key to expect
without another field in any message; the head's own addresses stay plain and its key
travels beside them (the connection record's ``curve_serverkey``).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from typing import NamedTuple

import zmq

from . import protocol
from .addresses import (CURVE_MARK, LOOPBACK, advertised_endpoint, callback_host, endpoint_key,  # noqa: F401
                        host_port, is_loopback_endpoint, is_wildcard, plain_endpoint, primary_host)
from ...errors import ProtocolError, SecurityError

__all__ = ["Channel", "Publisher", "Poller", "Waker", "wait_input", "Monitor", "context", "bind_router", "bind_pull", "bind_pub",
           "connect_dealer", "connect_push", "connect_sub", "Again", "callback_host", "advertised_endpoint",
           "primary_host", "is_wildcard", "LOOPBACK", "CurveIdentity", "configure_security", "curve_available",
           "curve_keypair", "plain_endpoint", "endpoint_key", "is_loopback_endpoint", "needs_curve"]

log = logging.getLogger("jpar.transport")
Again = zmq.Again

RECV_BUDGET = 1000          # messages (valid or not) one receive call reads at most
RCVHWM = 1000               # messages queued per peer on a listening socket before that peer is slowed
DROP_LOG_INTERVAL_S = 10.0  # one summary line per socket per interval about dropped messages
HEARTBEAT = (1.0, 10.0)     # ZMTP heartbeat: (ping interval, seconds without an answer before disconnecting)
_MAX_PEERS_COUNTED = 10000

# Frames go through pyzmq's compiled send and recv: its Python wrappers (send_multipart, recv_multipart)
# check every frame and combine enum flags, ~4 us a message here against ~0.6 us; every task and
# actor call crosses several sockets, so that is paid several times per call.
_csend = zmq.backend.Socket.send
_crecv = zmq.backend.Socket.recv
_cget = zmq.backend.Socket.get
_MORE = int(zmq.SNDMORE)
_NOWAIT = int(zmq.DONTWAIT)
_RCVMORE = int(zmq.RCVMORE)


def _send_frames(sock, frames, flags: int) -> None:
    """One multipart message, as ``send_multipart``: atomic, since ZeroMQ takes or refuses a
    message at its first frame (Again then, with nothing queued)."""
    more = flags | _MORE
    last = len(frames) - 1
    for i, f in enumerate(frames):
        _csend(sock, f, more if i < last else flags)


def _recv_frames(sock, flags: int, copy: bool = True) -> list:
    """A multipart message (or what is left of one), as ``recv_multipart`` (Again when none is queued)."""
    parts = [_crecv(sock, flags, copy)]
    while _cget(sock, _RCVMORE):
        parts.append(_crecv(sock, flags, copy))
    return parts


_ctx_lock = threading.Lock()
_ctx: zmq.Context | None = None
_ctx_pid = 0


def context() -> zmq.Context:
    """This process's ZeroMQ context (a fresh one after a fork)."""
    global _ctx, _ctx_pid
    with _ctx_lock:
        if _ctx is None or _ctx_pid != os.getpid():
            _ctx = zmq.Context()
            _ctx_pid = os.getpid()
        return _ctx


class Channel:
    """One socket that sends and receives signed messages."""

    __slots__ = ("sock", "signer", "dropped", "endpoint", "session", "guard", "prefix", "zero_copy", "_drops",
                 "_peers", "_why", "_since", "_last_first")

    def __init__(self, sock: zmq.Socket, signer: protocol.Signer, endpoint: str = ""):
        self.sock = sock
        self.signer = signer
        self.dropped = 0                 # invalid messages dropped since the channel was made
        self.endpoint = endpoint
        self.session = protocol.Session()
        self.guard = protocol.ReplayGuard()
        self.prefix = 0                  # leading frames (a topic) stripped before decoding
        self.zero_copy = False           # receive frames without copying them (large attachments: a reader)
        self._drops = 0                  # dropped since the last summary line
        self._peers: set = set()
        self._why = ""
        self._since = time.monotonic()
        self._last_first = None          # first frame of the last routed message (its source fd)

    def send(self, msg: protocol.Message, nowait: bool = False) -> bool:
        try:
            _send_frames(self.sock, protocol.encode(msg, self.signer, self.session), _NOWAIT if nowait else 0)
            return True
        except zmq.Again:
            return False

    def send_to(self, identity: bytes, msg: protocol.Message) -> bool:
        """ROUTER only: send to the peer with this identity; False when it is not connected (nothing sent)."""
        try:
            _send_frames(self.sock, [identity, *protocol.encode(msg, self.signer, self.session)], _NOWAIT)
            return True
        except (zmq.Again, zmq.ZMQError):
            return False

    def recv(self, timeout_ms: int | None = None) -> protocol.Message | None:
        """The next valid message, or None when none arrives in time (invalid ones are dropped)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while True:
            if deadline is None:
                self.sock.poll()
            elif not self.sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                return None
            msg = self.recv_nowait()
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def recv_nowait(self) -> protocol.Message | None:
        """The next valid message already queued, or None (also after RECV_BUDGET invalid ones)."""
        sock = self.sock
        for _ in range(RECV_BUDGET):
            try:
                frames = _recv_frames(sock, _NOWAIT, not self.zero_copy)
            except zmq.Again:
                return None
            if self.prefix:
                frames = frames[self.prefix:]
            msg = self._decode(frames)
            if msg is not None:
                return msg
        return None

    def recv_from_nowait(self) -> tuple[bytes, protocol.Message] | None:
        """ROUTER only: (identity, message) already queued, or None (also after RECV_BUDGET invalid ones)."""
        out = []
        self.drain_from(lambda identity, msg: out.append((identity, msg)), RECV_BUDGET, 1)
        return out[0] if out else None

    def drain_from(self, handler, budget: int = RECV_BUDGET, most: int | None = None) -> tuple[int, int]:
        """ROUTER only: call ``handler(identity, message)`` for each valid message among at most ``budget``
        queued ones (valid or not; at most ``most`` handled); returns (handled, read). During the call,
        :meth:`last_fd` names the connection the message came on."""
        sock = self.sock
        handled = n = 0
        while n < budget:
            try:
                first = _crecv(sock, _NOWAIT, False)
            except zmq.Again:
                break
            n += 1
            rest = _recv_frames(sock, _NOWAIT) if first.more else []
            identity = first.bytes
            if len(rest) != 3:
                self._drop(f"{len(rest) + 1} frame(s), not [identity, signature, header, body]", identity)
                continue
            msg = self._decode(rest, identity)
            if msg is not None:
                self._last_first = first
                handler(identity, msg)
                handled += 1
                if most is not None and handled >= most:
                    break
        self._last_first = None
        return handled, n

    def last_fd(self) -> int:
        """The file descriptor of the connection the last routed message came from (-1 if unknown):
        what a :class:`Monitor` names when that connection drops."""
        f = self._last_first
        if f is None:
            return -1
        try:
            return int(f.get(zmq.SRCFD))
        except (zmq.ZMQError, AttributeError, ValueError):
            return -1

    def _decode(self, frames, peer=None) -> protocol.Message | None:
        try:
            return protocol.decode(frames, self.signer, self.guard)
        except ProtocolError as exc:
            self._drop(str(exc), peer)
            return None

    def _drop(self, why: str, peer=None) -> None:
        self.dropped += 1
        self._drops += 1
        self._why = why
        if peer is not None and len(self._peers) < _MAX_PEERS_COUNTED:
            self._peers.add(peer)
        if self._drops == self.dropped:   # the first ever: say so at once, then summarize
            log.warning("dropped an invalid message on %s%s: %s (further drops are summarized every %.0f s)",
                        self.endpoint or "a socket", _peer_name(peer), why, DROP_LOG_INTERVAL_S)
            self._drops = 0
            self._peers.clear()
            self._since = time.monotonic()
        elif time.monotonic() - self._since >= DROP_LOG_INTERVAL_S:
            self.report_drops()

    def tick_drop_log(self) -> None:
        """Log the summary of recent drops once its interval has passed (loops call this periodically)."""
        if self._drops and time.monotonic() - self._since >= DROP_LOG_INTERVAL_S:
            self.report_drops()

    def report_drops(self) -> None:
        """Log the summary of drops since the last one, if any (also called periodically by loops)."""
        now = time.monotonic()
        if self._drops:
            peers = f"from {len(self._peers)} peer(s) " if self._peers else ""
            log.warning("dropped %d invalid message(s) %son %s in the last %.0f s; last: %s",
                        self._drops, peers, self.endpoint or "a socket", now - self._since, self._why)
            self._drops = 0
            self._peers.clear()
        self._since = now

    def close(self) -> None:
        self.sock.close(linger=0)


def _peer_name(peer) -> str:
    return f" from peer {peer.hex()}" if isinstance(peer, bytes) else ""


class Monitor:
    """Connections of one socket that dropped (peer closed, died, or stopped answering heartbeats),
    as the file descriptors :meth:`Channel.last_fd` reported for them."""

    _EVENT = struct.Struct("=HI")

    def __init__(self, ch: Channel):
        addr = f"inproc://jpar-monitor-{id(ch):x}-{os.getpid()}"
        ch.sock.monitor(addr, zmq.EVENT_DISCONNECTED)
        self.sock = context().socket(zmq.PAIR)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)   # never drop an event (the loop drains it every turn)
        self.sock.connect(addr)
        self._ch = ch

    def disconnected(self) -> list[int]:
        out = []
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.DONTWAIT)
            except zmq.Again:
                return out
            event, value = self._EVENT.unpack_from(frames[0])
            if event == zmq.EVENT_DISCONNECTED:
                out.append(value)

    def close(self) -> None:
        try:
            self._ch.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.sock.close(linger=0)


class Poller:
    """Wait on several channels at once."""

    def __init__(self, *channels: Channel):
        self._poller = zmq.Poller()
        self._by_sock = {}
        for ch in channels:
            self.add(ch)

    def add(self, ch) -> None:
        """Watch a Channel (or a Waker) for input."""
        self._poller.register(ch.sock, zmq.POLLIN)
        self._by_sock[ch.sock] = ch

    def remove(self, ch: Channel) -> None:
        self._poller.unregister(ch.sock)
        self._by_sock.pop(ch.sock, None)

    def poll(self, timeout_ms: int) -> list[Channel]:
        return [self._by_sock[s] for s, _ in self._poller.poll(timeout_ms)]


def wait_input(ch: Channel, fd: int, timeout_ms: int) -> None:
    """Wait until ``ch`` or the file descriptor ``fd`` (a pipe) has input, or ``timeout_ms`` passed."""
    poller = zmq.Poller()
    poller.register(ch.sock, zmq.POLLIN)
    poller.register(fd, zmq.POLLIN)
    poller.poll(timeout_ms)


def _socket(kind: int) -> zmq.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _heartbeat(sock: zmq.Socket, heartbeat: tuple[float, float] | None) -> None:
    """ZMTP heartbeats: libzmq's I/O thread pings every ``interval`` s and drops a connection that
    stays silent ``timeout`` s; each ping asks the peer to drop it after ``timeout`` s without one
    (TTL). Both ends' I/O threads do this without the GIL. Only connecting sockets set this:
    the RCVHWM of the (listening) receiver must never stop their input (see bind_router)."""
    if not heartbeat:
        return
    interval, timeout = heartbeat
    sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(interval * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(timeout * 1000)))
    sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, int(timeout * 1000)))


def liveness_heartbeat(heartbeat_s: float, dead_after_s: float) -> tuple[float, float]:
    """(interval, timeout) so that a lost peer is disconnected within ``dead_after_s``."""
    return heartbeat_s, max(heartbeat_s, dead_after_s - heartbeat_s)


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind one endpoint; the address it got, with this process's public key when it speaks CURVE.

    libzmq copies a socket's options into each listener when it binds, so one socket can listen
    plaintext on IPC (local engines, at full speed) and with CURVE on a TCP address off loopback."""
    key = _server_curve(sock, endpoint)
    if endpoint.startswith("tcp://") and ":" in endpoint[6:].rpartition(":")[0]:
        host, port = host_port(endpoint)   # IPv6 (``::`` takes IPv4 clients too): zmq wants it bracketed and enabled
        sock.setsockopt(zmq.IPV6, 1)
        endpoint = f"tcp://[{host}]:{port}"
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        port = sock.bind_to_random_port(endpoint[: endpoint.rindex(":")])
        bound = f"{endpoint[: endpoint.rindex(':')]}:{port}"
    else:
        sock.bind(endpoint)
        bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    return bound + CURVE_MARK + key if key else bound


def _bind_all(sock: zmq.Socket, endpoints: list[str]) -> list[str]:
    """Bind every endpoint, or close the socket and raise (a refused key must not leak a socket)."""
    try:
        return [_bind(sock, e) for e in endpoints]
    except BaseException:
        sock.close(linger=0)
        raise


def bind_router(endpoints: list[str], signer) -> tuple[Channel, list[str]]:
    """A listening ROUTER: bounded receive queue per peer, and sends to an absent peer refused.

    It sends no heartbeats of its own: its connecting peers ping it (:func:`connect_dealer`) with a
    TTL, and libzmq drops a connection whose pings stop for that long, but only if no data came after
    the last ping (any message cancels the TTL timer; the next ping restarts it): a connection that
    must be dropped when its peer goes silent carries pings only (an engine's liveness connection,
    see jpar.runtime.head.controller_liveness). (A listening socket that pings while a peer's bounded
    queue is full trips a libzmq assertion when that peer disconnects: libzmq 4.3.5,
    stream_engine_base.cpp, out_event after an I/O error.)"""
    sock = _socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)   # send_to an unknown/gone peer fails instead of vanishing
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    bound = _bind_all(sock, endpoints)
    return Channel(sock, signer, bound[0]), bound


def bind_pull(endpoints: list[str], signer) -> tuple[Channel, list[str]]:
    sock = _socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    bound = _bind_all(sock, endpoints)
    return Channel(sock, signer, bound[0]), bound


class Publisher(Channel):
    """The head's event stream: an XPUB socket that publishes under topics derived from the key and
    admits only subscriptions to those (manual mode), so a peer without the key gets nothing, and
    knows who listens, so the head builds no per-task events while no dashboard or sidebar does.

    Two topics: the full stream (every task's every transition) and the summary stream (counts per
    call site and a sample of tasks, see :mod:`jpar.runtime.head.task_summary`), which dashboards
    read; the other events (engines, metrics, actors) go to both."""

    __slots__ = ("listened", "full", "summary", "topic", "summary_topic", "subscribers", "summary_subscribers")

    def __init__(self, sock: zmq.Socket, signer: protocol.Signer, endpoint: str = ""):
        super().__init__(sock, signer, endpoint)
        self.listened = False          # anyone subscribed
        self.full = False              # someone reads the full stream
        self.summary = False           # someone reads the summary stream
        self.topic = signer.derive(b"events")
        self.summary_topic = signer.derive(b"summary")
        self.subscribers = 0
        self.summary_subscribers = 0

    def send(self, msg: protocol.Message, nowait: bool = False, summary: bool = False) -> bool:
        topic = self.summary_topic if summary else self.topic
        try:
            _send_frames(self.sock, [topic, *protocol.encode(msg, self.signer, self.session)], _NOWAIT)
            return True
        except zmq.Again:
            return False

    def update_listeners(self, budget: int = RECV_BUDGET) -> bool:
        """Read pending (un)subscription notices (at most ``budget``); True while a keyed subscriber is connected.

        A subscription to any other topic (a peer without the key) is not admitted and not counted."""
        changed = False
        sock = self.sock
        for _ in range(budget):
            try:
                notice = sock.recv(zmq.DONTWAIT)
            except zmq.Again:
                break
            topic = notice[1:]
            if topic != self.topic and topic != self.summary_topic:
                if notice[:1] == b"\x01":
                    self._drop("a subscription without the cluster key")
                continue
            step = 1 if notice[:1] == b"\x01" else -1 if notice[:1] == b"\x00" else 0
            if step == 1:
                sock.setsockopt(zmq.SUBSCRIBE, topic)   # manual mode: admits the peer that just asked
            if step and topic == self.topic:
                self.subscribers = max(0, self.subscribers + step)
                changed = True
            elif step:
                self.summary_subscribers = max(0, self.summary_subscribers + step)
                changed = True
        if changed:
            self.full = self.subscribers > 0
            self.summary = self.summary_subscribers > 0
            self.listened = self.full or self.summary
        return self.listened


def bind_pub(endpoint: str, signer) -> tuple[Publisher, str]:
    sock = _socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 10000)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    bound = _bind_all(sock, [endpoint])[0]
    return Publisher(sock, signer, bound), bound


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    try:
        _client_curve(sock, endpoint)
    except BaseException:
        sock.close(linger=0)   # a missing or refused key must not leak a socket
        raise
    endpoint = plain_endpoint(endpoint)
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)   # an IPv6 peer
    sock.connect(endpoint)


def connect_dealer(endpoint: str, signer, identity: bytes | None = None,
                   heartbeat: tuple[float, float] | None = HEARTBEAT, immediate: bool = False) -> Channel:
    """``immediate``: a send while no connection is up fails (``send(nowait=True)`` is False) instead
    of waiting in a queue for one."""
    sock = _socket(zmq.DEALER)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    _heartbeat(sock, heartbeat)
    _connect(sock, endpoint)
    return Channel(sock, signer, endpoint)


def connect_push(endpoint: str, signer) -> Channel:
    sock = _socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)
    _connect(sock, endpoint)
    return Channel(sock, signer, endpoint)


def connect_sub(endpoint: str, signer, summary: bool = False) -> Channel:
    """A subscriber of the head's event stream (the full one, or with ``summary`` the dashboards'):
    subscribes to the keyed topic and strips it."""
    sock = _socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, signer.derive(b"summary" if summary else b"events"))
    _connect(sock, endpoint)
    ch = Channel(sock, signer, endpoint)
    ch.prefix = 1
    return ch


class Waker:
    """Wakes a thread blocked in :meth:`Poller.poll` from any other thread (inproc pair)."""

    def __init__(self):
        name = f"inproc://jpar-wake-{id(self):x}"
        self._recv = _socket(zmq.PAIR)
        self._recv.bind(name)
        self._send = _socket(zmq.PAIR)
        self._send.connect(name)
        self.sock = self._recv

    def wake(self) -> None:
        """Call with the owner's lock held (one sender at a time)."""
        try:
            self._send.send(b"", zmq.DONTWAIT)
        except zmq.Again:
            pass  # already many wake-ups pending: one is enough

    def drain(self) -> None:
        try:
            while True:
                self._recv.recv(zmq.DONTWAIT)
        except zmq.Again:
            pass

    def close(self) -> None:
        self._send.close(linger=0)
        self._recv.close(linger=0)


def raw_socket(kind: str, endpoint: str):
    """An unsigned socket of ``kind`` ("dealer", "push") connected to ``endpoint``: for tests
    that send garbage to a cluster, and nothing else."""
    sock = _socket({"dealer": zmq.DEALER, "push": zmq.PUSH, "sub": zmq.SUB}[kind])
    if kind == "sub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(plain_endpoint(endpoint))
    return sock


# ---------------------------------------------------------------- CURVE off loopback


class CurveIdentity(NamedTuple):
    """This process's CURVE keys, as Z85 text: its own keypair (it listens and connects with it),
    the head's public key (for a head address, which carries none) and the directory whose
    ``*.key`` public keys its listening sockets admit (nobody else gets past the handshake)."""

    public: str
    secret: str
    server_public: str
    allowed_dir: str


class _Security:
    """The process's CURVE state: one per process, like the context its authenticator serves."""

    lock = threading.Lock()
    loader = None                       # () -> CurveIdentity (keys.secure_process), called on first need
    identity: CurveIdentity | None = None
    insecure = False                    # plaintext off loopback: the user asked for it (and was warned)
    auth = None                         # the ZAP authenticator thread of ``auth_ctx``
    auth_ctx = None
    auth_dir = ""


def configure_security(loader, *, insecure: bool = False) -> None:
    """How this process's sockets off loopback are secured from now on: with the
    :class:`CurveIdentity` that ``loader()`` returns (called when the first such socket is made,
    so a process that stays on loopback reads no key), or, with ``insecure``, in plaintext."""
    with _Security.lock:
        _Security.loader, _Security.identity, _Security.insecure = loader, None, bool(insecure)


def curve_available() -> bool:
    """Whether the libzmq under pyzmq was built with CURVE (libsodium or tweetnacl)."""
    return bool(zmq.has("curve"))


def _require_curve() -> None:
    if not curve_available():
        raise SecurityError(
            f"The libzmq {zmq.zmq_version()} under pyzmq {zmq.__version__} was built without CURVE, which jpar "
            "needs to encrypt and authenticate connections off loopback. Install a pyzmq wheel (they bundle a "
            "libzmq with CURVE), or bind on 127.0.0.1, or pass --insecure (JPAR_INSECURE=1) on a trusted network.")


def curve_keypair() -> tuple[str, str]:
    """A new (public, secret) CURVE keypair, as Z85 text."""
    _require_curve()
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def needs_curve(endpoint: str) -> bool:
    """Whether a socket bound or connected at ``endpoint`` speaks CURVE: it carries a key, or it is
    TCP off loopback (a wildcard included) in a process not told to be insecure."""
    if CURVE_MARK in endpoint:
        return True
    if is_loopback_endpoint(endpoint):
        return False
    with _Security.lock:
        return not _Security.insecure


def _identity() -> CurveIdentity:
    with _Security.lock:
        if _Security.identity is None:
            if _Security.loader is None:
                raise SecurityError(
                    "This process has no CURVE keys configured, so it cannot open a socket off loopback. Start "
                    "it through jpar (jpar start, jpar.init) or call jpar.runtime.wire.keys.secure_process first.")
            _require_curve()
            _Security.identity = _Security.loader()
        return _Security.identity


def _authenticate(ident: CurveIdentity) -> None:
    """Run this context's ZAP authenticator, admitting the public keys in ``ident.allowed_dir``.
    It must run before a CURVE socket listens: with no ZAP handler, libzmq admits any client key."""
    from zmq.auth.thread import ThreadAuthenticator

    with _Security.lock:
        ctx = context()
        if _Security.auth is None or _Security.auth_ctx is not ctx:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("jpar.zap"))
            auth.start()
            _Security.auth, _Security.auth_ctx, _Security.auth_dir = auth, ctx, ""
        if _Security.auth_dir != ident.allowed_dir:
            _Security.auth.configure_curve(domain="*", location=ident.allowed_dir)
            if not _Security.auth.certs.get("*"):
                raise SecurityError(f"No public key to admit in {ident.allowed_dir}: nothing could connect. "
                                    "Run `jpar keys` to create the cluster's keys there.")
            _Security.auth_dir = ident.allowed_dir


def _server_curve(sock: zmq.Socket, endpoint: str) -> str:
    """Make the next bind of ``sock`` CURVE (returns this process's public key) or plaintext ("")."""
    if not needs_curve(endpoint):
        if sock.getsockopt(zmq.MECHANISM) != zmq.NULL:
            sock.setsockopt(zmq.CURVE_SERVER, 0)   # back to NULL for this listener (e.g. IPC after TCP)
        return ""
    ident = _identity()
    _authenticate(ident)
    sock.setsockopt(zmq.CURVE_SECRETKEY, ident.secret.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, ident.public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    return ident.public


def _client_curve(sock: zmq.Socket, endpoint: str) -> None:
    """Make ``sock`` a CURVE client of ``endpoint`` when it needs one: the server's key is the one
    the endpoint carries, else the head's (an address given by the user names no key)."""
    if not needs_curve(endpoint):
        return
    ident = _identity()
    server = endpoint_key(endpoint) or ident.server_public
    if not server:
        raise SecurityError(
            f"{plain_endpoint(endpoint)} is off loopback, so the connection needs the head's public key, and this "
            f"process has none: copy server.key from the head's key directory into {ident.allowed_dir}, or pass "
            "the head's connection file (it carries the key) as the address.")
    sock.setsockopt(zmq.CURVE_SERVERKEY, server.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, ident.public.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, ident.secret.encode("ascii"))
