"""ZeroMQ sockets carrying signed protocol messages: the only module that imports zmq.

A :class:`Channel` wraps one socket and the cluster's :class:`~jpar.protocol.Signer`;
``send``/``recv`` move whole :mod:`~jpar.protocol` messages. ROUTER channels address
peers by identity. Messages that fail verification are logged and dropped here, so no
caller ever sees a forged or garbled message.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading

import zmq

from . import protocol
from .errors import ProtocolError

__all__ = ["Channel", "Publisher", "Poller", "Waker", "context", "bind_router", "bind_pull", "bind_pub", "connect_dealer",
           "connect_push", "connect_sub", "Again", "callback_host", "advertised_endpoint", "primary_host",
           "is_wildcard", "LOOPBACK"]

log = logging.getLogger("jpar.transport")
Again = zmq.Again

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

    __slots__ = ("sock", "signer", "dropped", "endpoint")

    def __init__(self, sock: zmq.Socket, signer: protocol.Signer, endpoint: str = ""):
        self.sock = sock
        self.signer = signer
        self.dropped = 0
        self.endpoint = endpoint

    def send(self, msg: protocol.Message, nowait: bool = False) -> bool:
        try:
            self.sock.send_multipart(protocol.encode(msg, self.signer), flags=zmq.DONTWAIT if nowait else 0)
            return True
        except zmq.Again:
            return False

    def send_to(self, identity: bytes, msg: protocol.Message) -> bool:
        """ROUTER only: send to the peer with this identity (dropped if it is gone)."""
        try:
            self.sock.send_multipart([identity, *protocol.encode(msg, self.signer)], flags=zmq.DONTWAIT)
            return True
        except (zmq.Again, zmq.ZMQError):
            return False

    def recv(self, timeout_ms: int | None = None) -> protocol.Message | None:
        """The next valid message, or None when none arrives in time (invalid ones are dropped)."""
        while True:
            if timeout_ms is not None and not self.sock.poll(timeout_ms):
                return None
            frames = self.sock.recv_multipart(copy=True)
            msg = self._decode(frames)
            if msg is not None:
                return msg
            timeout_ms = 0 if timeout_ms is not None else None

    def recv_nowait(self) -> protocol.Message | None:
        """The next valid message already queued, or None."""
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.DONTWAIT, copy=True)
            except zmq.Again:
                return None
            msg = self._decode(frames)
            if msg is not None:
                return msg

    def recv_from_nowait(self) -> tuple[bytes, protocol.Message] | None:
        """ROUTER only: (identity, message) already queued, or None."""
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.DONTWAIT, copy=True)
            except zmq.Again:
                return None
            if len(frames) < 3:
                self._drop(f"{len(frames)} frame(s) without an envelope")
                continue
            msg = self._decode(frames[1:])
            if msg is not None:
                return frames[0], msg

    def _decode(self, frames) -> protocol.Message | None:
        try:
            return protocol.decode(frames, self.signer)
        except ProtocolError as exc:
            self._drop(str(exc))
            return None

    def _drop(self, why: str) -> None:
        self.dropped += 1
        log.warning("dropped a message on %s: %s", self.endpoint or "socket", why)

    def close(self) -> None:
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


def _socket(kind: int) -> zmq.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    if endpoint.startswith("tcp://") and ":" in endpoint[6:].rpartition(":")[0]:
        host, port = _split(endpoint)   # IPv6 (``::`` takes IPv4 clients too): zmq wants it bracketed and enabled
        sock.setsockopt(zmq.IPV6, 1)
        endpoint = f"tcp://[{host}]:{port}"
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        port = sock.bind_to_random_port(endpoint[: endpoint.rindex(":")])
        return f"{endpoint[: endpoint.rindex(':')]}:{port}"
    sock.bind(endpoint)
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


LOOPBACK = "127.0.0.1"   # the default bind host (config.bind_host): this host only
_WILDCARDS = {"", "*", "0.0.0.0", "::", "::ffff:0.0.0.0"}   # "bind every interface", as hosts or zmq prints them
_PROBE = ("10.254.254.254", 9)   # a private address: "connecting" a UDP socket there picks the default route


def _split(endpoint: str) -> tuple[str, str]:
    """(host, port) of ``tcp://host:port``; an IPv6 host without its brackets."""
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    return host.strip("[]"), port


def is_wildcard(host: str) -> bool:
    """Whether binding on ``host`` means every interface (``0.0.0.0``, ``::``, ``*``)."""
    return host.strip("[]") in _WILDCARDS


def _route_source(peer: str) -> str | None:
    """The local IPv4 address the kernel routes to ``peer`` (``tcp://host:port``) from; None for a
    peer on loopback, not on tcp, or with no route. A UDP "connect" sends no packet."""
    if not peer.startswith("tcp://"):
        return None
    host, port = _split(peer)
    try:
        addr = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        ip = ipaddress.ip_address(addr)
        if ip.is_loopback or ip.is_unspecified:
            return None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((addr, int(port) if port.isdigit() else 9))
            return s.getsockname()[0]
    except (OSError, ValueError, IndexError):
        return None


def _is_local(addr: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def primary_host() -> str:
    """This host's main non-loopback IPv4 address: the source of its default route, else its host
    name's address (if it is one of this host's), else the first up interface's, else 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(_PROBE)
            return s.getsockname()[0]
    except OSError:
        pass   # no default route
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if not ipaddress.ip_address(addr).is_loopback and _is_local(addr):
            return addr
    except (OSError, ValueError):
        pass
    import psutil

    try:
        up = {name for name, st in psutil.net_if_stats().items() if st.isup}
        for name, addrs in sorted(psutil.net_if_addrs().items()):
            for a in addrs:
                if name in up and a.family == socket.AF_INET:
                    ip = ipaddress.ip_address(a.address)
                    if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                        return a.address
    except (OSError, ValueError):
        pass
    return LOOPBACK


def callback_host(peer: str, bind_host: str = LOOPBACK) -> str:
    """The interface to bind a socket on that ``peer`` (a ``tcp://host:port`` this process connects
    to) must connect back to: a driver's result socket, an object server, an actor's inbox.

    An explicitly set ``bind_host`` wins. With the default (loopback), a peer on this host gets
    loopback, and a peer on another host gets the local address the kernel routes to it from (a UDP
    "connect" sends no packet; it only picks the route), so ``jpar.init(address=...)`` works from
    another host with no extra setting. Falls back to ``bind_host`` when the peer has no route.
    """
    if bind_host != LOOPBACK:
        return bind_host
    return _route_source(peer) or bind_host


def advertised_endpoint(bound: str, peer: str = "") -> str:
    """The address other processes use to reach a socket bound at ``bound``.

    A tcp endpoint bound on a wildcard (``tcp://0.0.0.0:5555``, ``[::]``, ``*``) listens on every
    interface but cannot be connected to from another host, so it is advertised on a concrete
    address: the source of the route to ``peer`` (the process it is advertised to, or the head this
    process joined) when that is on another host, else :func:`primary_host`. Any other endpoint
    (a concrete host, ``ipc://``) is returned unchanged.
    """
    if not bound.startswith("tcp://"):
        return bound
    host, port = _split(bound)
    if not is_wildcard(host):
        return bound
    return f"tcp://{_route_source(peer) or primary_host()}:{port}"


def bind_router(endpoints: list[str], signer) -> tuple[Channel, list[str]]:
    sock = _socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    bound = [_bind(sock, e) for e in endpoints]
    return Channel(sock, signer, bound[0]), bound


def bind_pull(endpoints: list[str], signer) -> tuple[Channel, list[str]]:
    sock = _socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)
    bound = [_bind(sock, e) for e in endpoints]
    return Channel(sock, signer, bound[0]), bound


class Publisher(Channel):
    """The head's event stream: a PUB socket that also knows whether anyone subscribes (XPUB), so
    the head builds no per-task events while no dashboard or sidebar listens."""

    __slots__ = ("listened",)

    def __init__(self, sock: zmq.Socket, signer: protocol.Signer, endpoint: str = ""):
        super().__init__(sock, signer, endpoint)
        self.listened = False

    def update_listeners(self) -> bool:
        """Read pending (un)subscription notices; True while at least one subscriber is connected.

        Every subscriber takes the whole stream (topic ``b""``); XPUB reports the first subscription
        to a topic and the end of the last one, so one flag says it all."""
        while True:
            try:
                notice = self.sock.recv(zmq.DONTWAIT)
            except zmq.Again:
                return self.listened
            if notice[:1] == b"\x01":
                self.listened = True
            elif notice[:1] == b"\x00":
                self.listened = False


def bind_pub(endpoint: str, signer) -> tuple[Publisher, str]:
    sock = _socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 10000)
    bound = _bind(sock, endpoint)
    return Publisher(sock, signer, bound), bound


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)   # an IPv6 peer
    sock.connect(endpoint)


def connect_dealer(endpoint: str, signer, identity: bytes | None = None) -> Channel:
    sock = _socket(zmq.DEALER)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    _connect(sock, endpoint)
    return Channel(sock, signer, endpoint)


def connect_push(endpoint: str, signer) -> Channel:
    sock = _socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)
    _connect(sock, endpoint)
    return Channel(sock, signer, endpoint)


def connect_sub(endpoint: str, signer) -> Channel:
    sock = _socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    _connect(sock, endpoint)
    return Channel(sock, signer, endpoint)


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
    sock.connect(endpoint)
    return sock
