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

__all__ = ["Channel", "Poller", "Waker", "context", "bind_router", "bind_pull", "bind_pub", "connect_dealer",
           "connect_push", "connect_sub", "Again", "callback_host", "LOOPBACK"]

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
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        port = sock.bind_to_random_port(endpoint[: endpoint.rindex(":")])
        return f"{endpoint[: endpoint.rindex(':')]}:{port}"
    sock.bind(endpoint)
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


LOOPBACK = "127.0.0.1"   # the default bind host (config.bind_host): this host only


def callback_host(peer: str, bind_host: str = LOOPBACK) -> str:
    """The interface to bind a socket on that ``peer`` (a ``tcp://host:port`` this process connects
    to) must connect back to: a driver's result socket, an object server, an actor's inbox.

    An explicitly set ``bind_host`` wins. With the default (loopback), a peer on this host gets
    loopback, and a peer on another host gets the local address the kernel routes to it from (a UDP
    "connect" sends no packet; it only picks the route), so ``jpar.init(address=...)`` works from
    another host with no extra setting. Falls back to ``bind_host`` when the peer has no route.
    """
    if bind_host != LOOPBACK or not peer.startswith("tcp://"):
        return bind_host
    host, _, port = peer[len("tcp://"):].rpartition(":")
    try:
        addr = socket.getaddrinfo(host.strip("[]"), None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        ip = ipaddress.ip_address(addr)
        if ip.is_loopback or ip.is_unspecified:
            return bind_host
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((addr, int(port) if port.isdigit() else 9))
            return s.getsockname()[0]
    except (OSError, ValueError, IndexError):
        return bind_host


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


def bind_pub(endpoint: str, signer) -> tuple[Channel, str]:
    sock = _socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 10000)
    bound = _bind(sock, endpoint)
    return Channel(sock, signer, bound), bound


def connect_dealer(endpoint: str, signer, identity: bytes | None = None) -> Channel:
    sock = _socket(zmq.DEALER)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    return Channel(sock, signer, endpoint)


def connect_push(endpoint: str, signer) -> Channel:
    sock = _socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(endpoint)
    return Channel(sock, signer, endpoint)


def connect_sub(endpoint: str, signer) -> Channel:
    sock = _socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
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
