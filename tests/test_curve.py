"""Off loopback, a cluster is CurveZMQ-encrypted and admits only the client keys it knows; HMAC
signing stays on top. Loopback and IPC stay plaintext.

The "other host" is a network namespace joined to this one by a veth pair made here (10.252.X.1 on
this side, 10.252.X.2 in the namespace; RECIPES.md). The head runs on this side, bound on the veth
address (``jpar start --head --bind 10.252.X.1``) with a key directory of its own; an engine joins
it from the namespace with a second key directory holding only the three files the head tells a
joining host to copy. This process's driver connects by address, as from another machine. Every
head and engine is stopped by pid, and the namespace and veth pair are deleted, whatever happened.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import shutil
import stat
import time

import psutil
import pytest
import zmq

import jpar
from jpar.config import Config
from jpar.errors import ClusterError, SecurityError
from jpar.runtime.driver.driver import Driver
from jpar.runtime.store.object_store import sweep_cluster
from jpar.runtime.wire import keys, transport

from . import netns
from .netns import env as _env, jpar_cli as _jpar, start_head as _start_head, tree as _tree

pytestmark = pytest.mark.timeout(180)

PORT = 47411          # on this side's veth address, which only this test holds
NODE = "curve-ns"


def _skip_reason() -> str | None:
    if not transport.curve_available():
        return "libzmq was built without CURVE"
    return netns.netns_unavailable()


def _stop(procs: list[psutil.Process]) -> None:
    netns.stop(procs)


@pytest.fixture(scope="module")
def net():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    with netns.veth_pair("jpc", 252) as pair:
        yield pair


def test_jpar_keys_writes_private_files_in_a_private_directory(tmp_path):
    d = tmp_path / "keys"
    out = _jpar("keys", "--dir", str(d), env=_env())
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    names = sorted(os.listdir(d))
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"], names
    for n in names:
        assert stat.S_IMODE(os.stat(d / n).st_mode) == 0o600, n
    assert "client.key_secret" in out.stdout and "server.key_secret" not in out.stdout.split("never")[1].split("\n")[1]
    before = (d / "server.key_secret").read_text()
    again = _jpar("keys", "--dir", str(d), env=_env())          # a second run keeps the keys
    assert again.returncode == 0 and "already there" in again.stdout
    assert (d / "server.key_secret").read_text() == before
    import zmq.auth                                               # pyzmq reads them as certificates
    pub, sec = zmq.auth.load_certificate(str(d / "server.key_secret"))
    assert len(pub) == 40 and len(sec) == 40 and zmq.auth.load_certificate(str(d / "server.key"))[1] is None


def test_key_files_readable_by_others_are_refused(tmp_path):
    d = tmp_path / "keys"
    keys.create_keys(str(d))
    secret = d / "client.key_secret"
    os.chmod(secret, 0o644)
    with pytest.raises(SecurityError, match=re.escape(f"Run: chmod 600 {secret}")) as err:
        keys.load_identity(str(d))
    assert "0644" in str(err.value) and str(secret) in str(err.value)
    # an address of no interface here: the keys are checked before anything binds, so it is never tried
    out = _jpar("start", "--head", "--bind", "10.9.8.7", "-n", "1", env=_env(JPAR_KEY_DIR=str(d),
                                                                             JPAR_RUNTIME_DIR=str(tmp_path / "rt")))
    assert out.returncode == 1 and f"chmod 600 {secret}" in out.stderr, out.stdout + out.stderr
    assert not glob.glob(str(tmp_path / "rt" / "cluster-*.json")), "a head started with an exposed key"
    os.chmod(secret, 0o600)
    os.chmod(d / "server.key", 0o644)                 # a public key too: the directory is one private unit
    with pytest.raises(SecurityError, match=re.escape(f"chmod 600 {d / 'server.key'}")):
        keys.load_identity(str(d))
    os.chmod(d / "server.key", 0o600)
    os.chmod(d, 0o755)
    with pytest.raises(SecurityError, match=re.escape(f"chmod 700 {d}")):
        keys.load_identity(str(d))
    os.chmod(d, 0o700)
    assert keys.load_identity(str(d)).public == keys.read_certificate(str(d / "client.key"))[0]


def test_a_libzmq_without_curve_fails_clearly_when_curve_is_needed(monkeypatch, tmp_path):
    monkeypatch.setattr(transport, "curve_available", lambda: False)
    config = Config.from_env(bind_host="10.9.8.7", key_dir=str(tmp_path / "keys"))
    with pytest.raises(SecurityError, match="without CURVE.*--insecure"):
        keys.prepare_head(config)
    assert not (tmp_path / "keys").exists()
    assert keys.prepare_head(config.replace(bind_host="127.0.0.1")).curve is False   # loopback needs none


# ---------------------------------------------------------------- a secure head on the veth address
@pytest.fixture(scope="module")
def head(net, tmp_path_factory):
    """The head on this side's veth address, default-secure; keys made by the head itself."""
    base = tmp_path_factory.mktemp("curve-head")
    keydir = base / "keys"
    info = _start_head(base / "run", keydir, net["here"], PORT)
    info["keydir"] = keydir
    try:
        assert info["rc"] == 0 and info["conn"], f"jpar start --head failed:\n{info['out']}{info['err']}"
        yield info
    finally:
        _stop(info["procs"])
        if info["conn"]:
            sweep_cluster(bytes.fromhex(info["conn"]["key"]))


@pytest.fixture(scope="module")
def joined(net, head, tmp_path_factory):
    """An engine in the namespace that joined the head with only the 3 files a joining host gets."""
    theirs = tmp_path_factory.mktemp("other-host") / "keys"
    os.makedirs(theirs, mode=0o700)
    for name in ("server.key", "client.key", "client.key_secret"):
        shutil.copy2(head["keydir"] / name, theirs / name)
    conn = head["conn"]
    out = _jpar("start", "--address", conn["head"], "-n", "1", "--node", NODE, ns=net["ns"],
                env=_env(JPAR_KEY_DIR=str(theirs), JPAR_CLUSTER_KEY=conn["key"]))
    pids = [int(p) for p in re.findall(r"\d+", out.stdout.partition("pids ")[2].partition(")")[0])]
    procs = [p for pid in pids for p in _tree(pid)]
    try:
        assert out.returncode == 0 and pids, out.stdout + out.stderr
        yield procs
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def driver(net, head, joined):
    """This process's driver, connected by address and key like one on another host."""
    conn = head["conn"]
    saved = os.environ.get("JPAR_KEY_DIR")
    os.environ["JPAR_KEY_DIR"] = str(head["keydir"])
    jpar.shutdown()
    jpar.init(address=conn["head"], cluster_key=conn["key"])   # its server key from the key directory
    from jpar.backends.native import current_driver

    d = current_driver()
    deadline = time.monotonic() + 60
    while len(d.query("status", timeout=30)["engines"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield d
    finally:
        jpar.shutdown()
        if saved is None:
            os.environ.pop("JPAR_KEY_DIR", None)
        else:
            os.environ["JPAR_KEY_DIR"] = saved


def test_a_head_off_loopback_makes_keys_and_says_how_to_join(head, net):
    conn, keydir = head["conn"], head["keydir"]
    assert stat.S_IMODE(os.stat(keydir).st_mode) == 0o700
    assert sorted(os.listdir(keydir)) == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    out = head["out"]
    for name in ("server.key", "client.key", "client.key_secret"):
        assert str(keydir / name) in out, out
    assert "never the server.key_secret" in out and f"jpar start --address {conn['head']}" in out, out
    # the connection record carries the server's PUBLIC key, and no secret of any key file
    public, secret = keys.read_certificate(str(keydir / "server.key_secret"))
    assert conn["curve_serverkey"] == public
    text = pathlib.Path(head["file"]).read_text()
    for name in ("server", "client"):
        assert keys.read_certificate(str(keydir / f"{name}.key_secret"))[1] not in text
    assert conn["head"] == f"tcp://{net['here']}:{PORT}"   # addresses stay plain: users type them


_DECIDED = {zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}


def _handshake(endpoint: str, kind: int, curve: tuple[bytes, bytes, bytes] | None, wait_s: float = 3.0) -> set:
    """Events a fresh socket of ``kind`` sees connecting to ``endpoint`` (NULL, or CURVE with
    (server public, own public, own secret)) within ``wait_s``."""
    from zmq.utils.monitor import recv_monitor_message

    ctx = zmq.Context.instance()
    sock = ctx.socket(kind)
    sock.linger = 0
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                  | zmq.EVENT_DISCONNECTED)
    seen = set()
    try:
        sock.connect(transport.plain_endpoint(endpoint))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if mon.poll(100):
                ev = recv_monitor_message(mon)["event"]
                seen.add(ev)
                if ev in _DECIDED:
                    break
    finally:
        sock.disable_monitor()
        mon.close(0)
        sock.close(0)
    return seen


def _listening_sockets(d, head) -> dict:
    """Every socket of the cluster that listens off loopback: name -> (advertised endpoint, zmq type to dial it)."""
    import numpy as np

    def served_at():
        from jpar.runtime.store import object_store as store

        return [s.server_endpoint() for s in store._registry.values()]

    @jpar.remote
    class Inbox:
        def ping(self):
            return "pong"

    a = Inbox.remote()
    assert jpar.get(a.ping.remote(), timeout=60) == "pong"
    actor_eps = [c.chan.endpoint for c in d._actor_client.conns.values() if c.chan is not None]
    jpar.get(jpar.put(np.zeros(1_000_000)), timeout=30)
    ids = [e["id"] for e in d.query("status", timeout=30)["engines"]]
    engine_servers = jpar.get([jpar.remote(served_at).options(placement=i).remote() for i in ids], timeout=60)
    return {"head": (head["conn"]["head"], zmq.DEALER), "events": (head["conn"]["events"], zmq.SUB),
            "driver results": (d.endpoint, zmq.PUSH), "driver objects": (d.store.server_endpoint(), zmq.DEALER),
            **{f"actor inbox {i}": (e, zmq.PUSH) for i, e in enumerate(actor_eps)},
            **{f"engine objects {i}": (e[0], zmq.DEALER) for i, e in enumerate(engine_servers) if e}}, a


def test_a_plain_null_peer_completes_no_handshake_with_any_socket_off_loopback(driver, head):
    eps, actor = _listening_sockets(driver, head)
    try:
        assert len(eps) >= 6, eps
        for name, (ep, _) in eps.items():
            assert not transport.is_loopback_endpoint(ep), (name, ep)
            assert transport.needs_curve(ep), (name, ep)
        client_pub, client_sec = keys.read_certificate(str(head["keydir"] / "client.key_secret"))
        for name, (ep, kind) in eps.items():
            seen = _handshake(ep, kind, None)
            assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen, f"a NULL peer got into the {name} socket at {ep}"
            assert seen & _DECIDED, (name, ep, seen)              # it reached the socket and was turned away
            # the same dial with the cluster's client key gets in: the monitor does see handshakes
            server = transport.endpoint_key(ep) or head["conn"]["curve_serverkey"]
            ok = _handshake(ep, kind, (server.encode(), client_pub.encode(), client_sec.encode()))
            assert zmq.EVENT_HANDSHAKE_SUCCEEDED in ok, (name, ep, ok)
    finally:
        jpar.kill(actor)


def test_an_unknown_curve_key_is_refused_even_with_the_server_key(driver, head):
    pub, sec = zmq.curve_keypair()                  # knows the server's public key, not a known client key
    server = head["conn"]["curve_serverkey"].encode()
    for ep, kind in [(head["conn"]["head"], zmq.DEALER), (head["conn"]["events"], zmq.SUB),
                     (driver.endpoint, zmq.PUSH)]:
        seen = _handshake(ep, kind, (transport.endpoint_key(ep).encode() or server, pub, sec))
        assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen and zmq.EVENT_HANDSHAKE_SUCCEEDED not in seen, (ep, seen)


def test_the_right_curve_key_with_the_wrong_hmac_key_is_refused(driver, head):
    before = driver.query("status", timeout=30)["wire"]
    conn = {"head": head["conn"]["head"], "key": "ab" * 32, "local": False, "cluster_id": "?",
            "curve_serverkey": head["conn"]["curve_serverkey"]}
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="key"):
        Driver(conn, Config.from_env(start_timeout_s=2.0))
    assert time.monotonic() - t0 < 10
    deadline = time.monotonic() + 10                # the head read it (CURVE let it in) and dropped it (HMAC)
    while time.monotonic() < deadline:
        after = driver.query("status", timeout=30)["wire"]
        if after != before:
            break
        time.sleep(0.1)
    assert after != before, (before, after)


def test_an_engine_with_the_wrong_cluster_key_says_it_did_not_join_and_why(net, head, driver, tmp_path):
    """An engine on the other host with the right CURVE keys but another cluster (HMAC) key: its hello
    gets in (CURVE) and is dropped unread (HMAC). `jpar start --address` waits for its engines, so it
    fails naming the key to check instead of printing "started" for an engine that never joined, the
    head counts the dropped message, and the cluster's engines are the same as before."""
    theirs = tmp_path / "keys"
    os.makedirs(theirs, mode=0o700)
    for name in ("server.key", "client.key", "client.key_secret"):
        shutil.copy2(head["keydir"] / name, theirs / name)
    before = driver.query("status", timeout=30)
    out = _jpar("start", "--address", head["conn"]["head"], "-n", "1", "--node", "wrong-key", ns=net["ns"],
                env=_env(JPAR_KEY_DIR=str(theirs), JPAR_CLUSTER_KEY="ab" * 32, JPAR_START_TIMEOUT_S="4"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "did not join the head" in out.stderr and "no welcome from the head" in out.stderr, out.stderr
    assert "JPAR_CLUSTER_KEY" in out.stderr and "started" not in out.stdout, out.stdout + out.stderr
    after = driver.query("status", timeout=30)
    assert after["wire"]["dropped"] > before["wire"]["dropped"], (before["wire"], after["wire"])
    assert {e["id"] for e in after["engines"]} == {e["id"] for e in before["engines"]}
    assert "wrong-key" not in {e["node"] for e in after["engines"]}


def _by_value():
    def whereami(x):
        return x * x, os.readlink("/proc/self/ns/net"), jpar.get_runtime_context().get_node_id()

    def total(a):
        return float(a.sum())

    return whereami, total


whereami, total = _by_value()


def test_tasks_round_trip_over_curve_with_an_engine_on_the_other_host(driver, head, net):
    import numpy as np

    assert driver.endpoint.startswith(f"tcp://{net['here']}:") and transport.endpoint_key(driver.endpoint)
    f = jpar.remote(whereami)
    got = jpar.get([f.remote(i) for i in range(40)], timeout=60)
    assert [g[0] for g in got] == [i * i for i in range(40)]
    assert NODE in {g[2] for g in got}, got                       # the engine in the namespace ran some
    here_ns = os.readlink("/proc/self/ns/net")
    remote = next(e["id"] for e in driver.query("status", timeout=30)["engines"] if e["node"] == NODE)
    a = np.arange(2_000_000, dtype=np.float64)                    # above the inline threshold: object servers
    assert jpar.get(jpar.remote(total).options(placement=remote).remote(jpar.put(a)), timeout=60) == float(a.sum())
    assert jpar.get(f.options(placement=remote).remote(3), timeout=60)[1] != here_ns


def test_insecure_logs_a_warning_and_listens_in_plaintext(net, tmp_path):
    info = _start_head(tmp_path / "run", tmp_path / "keys", net["here"], PORT + 1, "--insecure")
    try:
        assert info["rc"] == 0, info["out"] + info["err"]
        assert "WARNING" in info["err"] and "PLAINTEXT" in info["err"], info["err"]
        assert "curve_serverkey" not in info["conn"]
        assert not (tmp_path / "keys").exists()                  # no keys made for a plaintext head
        head_log = pathlib.Path(info["conn"]["rundir"]) / "head.log"
        assert "PLAINTEXT" in head_log.read_text()
        seen = _handshake(info["conn"]["head"], zmq.DEALER, None)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in seen             # what --insecure means
    finally:
        _stop(info["procs"])
        if info["conn"]:
            sweep_cluster(bytes.fromhex(info["conn"]["key"]))


def test_loopback_stays_plaintext(tmp_path):
    """On 127.0.0.1 and IPC no key is needed or read: local speed is unchanged."""
    from jpar.runtime.wire import protocol as P

    signer = P.Signer(b"k" * 32)
    router, bound = transport.bind_router([f"ipc://{tmp_path}/r", "tcp://127.0.0.1:0"], signer)
    try:
        assert not any(transport.endpoint_key(b) for b in bound)
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED in _handshake(bound[1], zmq.DEALER, None)
    finally:
        router.close()
