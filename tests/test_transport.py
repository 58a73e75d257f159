"""transport's address rules, with no processes and no socket bound on a wildcard: a wildcard bind is
advertised on a concrete address of this host; everything else is advertised as bound."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from jpar.runtime.wire import addresses, transport


def _is_local(host: str) -> bool:
    """Is this an address of one of this host's interfaces (psutil's view, independent of transport)."""
    import psutil

    return any(a.address.split("%")[0] == host for addrs in psutil.net_if_addrs().values() for a in addrs)


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
    monkeypatch.setattr(addresses, "_PROBE", ("255.255.255.255", 9))   # connect() fails: EACCES on broadcast
    host = transport.primary_host()
    assert not ipaddress.ip_address(host).is_unspecified and _is_local(host), host


@pytest.mark.parametrize("bound", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://[::]:5555",
                                   "tcp://[::ffff:0.0.0.0]:5555"])
def test_a_wildcard_is_advertised_on_a_concrete_address(bound):
    adv = transport.advertised_endpoint(bound)
    host = adv[len("tcp://"):].rsplit(":", 1)[0]
    assert _is_local(host) and not ipaddress.ip_address(host).is_unspecified, adv
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


# ---------------------------------------------------------------- sockets under hostile input (in-process)
import logging  # noqa: E402
import time  # noqa: E402

from jpar.runtime.wire import protocol as P  # noqa: E402

SIGNER = P.Signer(b"t" * 32)


def _ipc(tmp_path, name: str) -> str:
    return f"ipc://{tmp_path}/{name}"


def test_a_send_to_a_peer_that_is_not_connected_is_refused_not_lost(tmp_path):
    router, _ = transport.bind_router([_ipc(tmp_path, "r")], SIGNER)
    try:
        assert router.send_to(b"nobody/ctl", P.CancelTask(1, True)) is False   # the head keeps it and retries
        dealer = transport.connect_dealer(_ipc(tmp_path, "r"), SIGNER, identity=b"eng/ctl")
        dealer.send(P.Heartbeat())
        assert router.sock.poll(10000)
        identity, msg = router.recv_from_nowait()
        assert identity == b"eng/ctl" and isinstance(msg, P.Heartbeat)
        assert router.send_to(b"eng/ctl", P.CancelTask(1, True)) is True
        assert dealer.recv(timeout_ms=10000) == P.CancelTask(1, True)
        dealer.close()
    finally:
        router.close()


def test_one_receive_reads_a_bounded_number_of_junk_messages_and_logs_one_line(tmp_path, caplog):
    pull, _ = transport.bind_pull([_ipc(tmp_path, "p")], SIGNER)
    raw = transport.raw_socket("push", _ipc(tmp_path, "p"))
    good = transport.connect_push(_ipc(tmp_path, "p"), SIGNER)
    try:
        n = transport.RECV_BUDGET + 500   # fits the queues (send HWM + RCVHWM): the loop below never blocks
        with caplog.at_level(logging.WARNING, logger="jpar.transport"):
            for _ in range(n):
                raw.send_multipart([b"x" * 32, b"junk"])
            assert pull.sock.poll(10000)
            while pull.dropped < transport.RECV_BUDGET:   # the first junk may still be on its way
                assert pull.recv_nowait() is None          # a call returns, junk or not
            assert pull.dropped <= 2 * transport.RECV_BUDGET
            good.send(P.Heartbeat())
            got = pull.recv(timeout_ms=10000)              # the valid message still comes through
            deadline = time.monotonic() + 10
            while pull.dropped < n and time.monotonic() < deadline:   # fair queueing: the rest of the junk
                pull.sock.poll(100)
                assert pull.recv_nowait() is None
        assert isinstance(got, P.Heartbeat)
        assert pull.dropped == n
        lines = [r for r in caplog.records if r.name == "jpar.transport"]
        assert len(lines) == 1 and "further drops are summarized" in lines[0].getMessage()
        pull._since -= transport.DROP_LOG_INTERVAL_S
        with caplog.at_level(logging.WARNING, logger="jpar.transport"):
            pull.tick_drop_log()
        assert f"dropped {n - 1} invalid message(s)" in caplog.records[-1].getMessage()
    finally:
        for s in (raw, good, pull):
            s.close()


def test_a_replay_from_another_socket_is_dropped(tmp_path):
    pull, _ = transport.bind_pull([_ipc(tmp_path, "p")], SIGNER)
    good = transport.connect_push(_ipc(tmp_path, "p"), SIGNER)
    raw = transport.raw_socket("push", _ipc(tmp_path, "p"))
    try:
        frames = P.encode(P.Query(1, "status"), SIGNER, good.session)
        good.sock.send_multipart(frames)
        assert isinstance(pull.recv(timeout_ms=10000), P.Query)
        raw.send_multipart(frames)                       # recorded, then sent again from elsewhere
        good.send(P.Heartbeat())
        assert isinstance(pull.recv(timeout_ms=10000), P.Heartbeat)
        assert pull.guard.refused == 1 and pull.dropped == 1
    finally:
        for s in (raw, good, pull):
            s.close()


def test_the_event_stream_reaches_only_keyed_subscribers(tmp_path):
    pub, endpoint = transport.bind_pub("tcp://127.0.0.1:0", SIGNER)
    stranger = transport.raw_socket("sub", endpoint)     # subscribes to everything, without the key
    try:
        deadline = time.monotonic() + 10
        while pub.dropped == 0 and time.monotonic() < deadline:   # its subscription arrives, is refused
            pub.sock.poll(100)
            assert pub.update_listeners() is False      # and switches nothing on
        assert pub.dropped == 1
        sub = transport.connect_sub(endpoint, SIGNER)
        while not pub.update_listeners():
            assert time.monotonic() < deadline
            pub.sock.poll(100)
        pub.send(P.Events([P.Event(1.0, "task", 1, "running", None)]))
        got = sub.recv(timeout_ms=10000)
        assert isinstance(got, P.Events) and got.events[0].state == "running"
        assert not stranger.poll(200)                    # nothing reached the stranger
        sub.close()
        while pub.update_listeners():                    # the keyed subscriber left: nobody listens
            assert time.monotonic() < deadline
            pub.sock.poll(100)
    finally:
        stranger.close()
        pub.close()
