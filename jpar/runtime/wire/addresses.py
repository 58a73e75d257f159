"""Endpoint addresses: which host a socket binds or advertises, whether an endpoint stays on this
host, and the public key an advertised endpoint carries. Plain text and the kernel's routing table,
no ZeroMQ: :mod:`~jpar.runtime.wire.transport` (which re-exports these) decides from them how a
socket is made and whether it speaks CURVE."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["LOOPBACK", "CURVE_MARK", "host_port", "is_wildcard", "primary_host", "callback_host", "advertised_endpoint",
           "plain_endpoint", "endpoint_key", "is_loopback_endpoint"]

CURVE_MARK = "#curve="   # tcp://host:port#curve=<Z85 public key>: a listening socket's address and key
LOOPBACK = "127.0.0.1"   # the default bind host (config.bind_host): this host only
_WILDCARDS = {"", "*", "0.0.0.0", "::", "::ffff:0.0.0.0"}   # "bind every interface", as hosts or zmq prints them
_PROBE = ("10.254.254.254", 9)   # a private address: "connecting" a UDP socket there picks the default route


def host_port(endpoint: str) -> tuple[str, str]:
    """(host, port) of ``tcp://host:port`` (a ``#curve=`` key ignored); an IPv6 host without its brackets."""
    host, _, port = plain_endpoint(endpoint)[len("tcp://"):].rpartition(":")
    return host.strip("[]"), port


def is_wildcard(host: str) -> bool:
    """Whether binding on ``host`` means every interface (``0.0.0.0``, ``::``, ``*``)."""
    return host.strip("[]") in _WILDCARDS


def _route_source(peer: str) -> str | None:
    """The local IPv4 address the kernel routes to ``peer`` (``tcp://host:port``) from; None for a
    peer on loopback, not on tcp, or with no route. A UDP "connect" sends no packet."""
    if not peer.startswith("tcp://"):
        return None
    host, port = host_port(peer)
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
    host, port = host_port(bound)
    if not is_wildcard(host):
        return bound
    key = endpoint_key(bound)
    return f"tcp://{_route_source(peer) or primary_host()}:{port}" + (CURVE_MARK + key if key else "")


def plain_endpoint(endpoint: str) -> str:
    """``endpoint`` without the public key it may carry (what libzmq binds or connects to)."""
    return endpoint.partition(CURVE_MARK)[0]


def endpoint_key(endpoint: str) -> str:
    """The public key an advertised endpoint carries, or ""."""
    return endpoint.partition(CURVE_MARK)[2]


def _loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        pass
    if is_wildcard(host):
        return False
    try:   # a host name: loopback only if every address it has is
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
        return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
    except (OSError, ValueError):
        return False   # an interface name or an unknown host: treated as off loopback (the safe side)


def is_loopback_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` stays on this host: ipc, inproc, or tcp on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    return _loopback_host(host_port(endpoint)[0])
