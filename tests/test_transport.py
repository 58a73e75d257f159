"""transport's address rules, with no processes and no socket bound on a wildcard: a wildcard bind is
advertised on a concrete address of this host; everything else is advertised as bound."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from jpar import transport


_is_local = transport._is_local   # is this an address of this host


def _source_to(ip: str) -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 9))
            return s.getsockname()[0]
    except OSError:
        return None


def test_primary_host_is_a_concrete_address_of_this_host():
    host = transport.primary_host()
    ip = ipaddress.ip_address(host)
    assert ip.version == 4 and not ip.is_unspecified
    assert _is_local(host), host
    if _source_to("10.254.254.254") is not None:     # a default route: its source address, not loopback
        assert host == _source_to("10.254.254.254") and not ip.is_loopback


def test_primary_host_without_a_default_route(monkeypatch):
    monkeypatch.setattr(transport, "_PROBE", ("255.255.255.255", 9))   # connect() fails: EACCES on broadcast
    host = transport.primary_host()
    assert not ipaddress.ip_address(host).is_unspecified and _is_local(host), host


@pytest.mark.parametrize("bound", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://[::]:5555",
                                   "tcp://[::ffff:0.0.0.0]:5555"])
def test_a_wildcard_is_advertised_on_a_concrete_address(bound):
    adv = transport.advertised_endpoint(bound)
    assert adv == f"tcp://{transport.primary_host()}:5555"
    assert transport.advertised_endpoint(bound, "ipc:///tmp/x/head") == adv      # no tcp peer: the main address
    assert transport.advertised_endpoint(bound, "tcp://127.0.0.1:6380") == adv   # a peer on this host: the same


def test_a_wildcard_is_advertised_on_the_route_to_a_known_peer():
    peer_ip = "192.0.2.77"   # TEST-NET-1: routed like any remote host; nothing is sent to it
    expected = _source_to(peer_ip) or transport.primary_host()
    assert transport.advertised_endpoint("tcp://0.0.0.0:7000", f"tcp://{peer_ip}:6380") == f"tcp://{expected}:7000"


@pytest.mark.parametrize("bound", ["tcp://10.1.2.3:5555", "tcp://127.0.0.1:5555", "tcp://[fd00::1]:5555",
                                   "ipc:///tmp/jpar-x/head", "inproc://jpar-wake-1"])
def test_other_endpoints_are_advertised_as_bound(bound):
    assert transport.advertised_endpoint(bound) == bound
    assert transport.advertised_endpoint(bound, "tcp://192.0.2.77:6380") == bound


def test_is_wildcard():
    assert all(map(transport.is_wildcard, ["0.0.0.0", "*", "::", "[::]", ""]))
    assert not any(map(transport.is_wildcard, ["127.0.0.1", "10.1.2.3", "::1", "[fd00::1]", "localhost"]))
