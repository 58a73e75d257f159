"""A head on another "host" (a network namespace joined to this one by a veth pair) used as a driver
and watched by the sidebar's server extension, with no JPAR_BIND_HOST on this side.

The namespace gets 10.251.X.2/30, this side 10.251.X.1/30. The head runs there with
``jpar start --head --bind 10.251.X.2 --node <other>`` and its own JPAR_RUNTIME_DIR, so this side
knows it only by address and key, like a head on another machine (both sides share one CurveZMQ key
directory, made by the first head: off loopback every socket speaks CURVE); the distinct node name makes
large objects cross through the object servers (not the shared /dev/shm). A second head in the same
namespace is bound on every interface (``--bind 0.0.0.0``): it must advertise the veth address, never
0.0.0.0, for itself, its event stream, its engines' object servers and its actors. The fixtures stop
each head and its engines by pid, sweeps the cluster's segments and deletes the namespace and the veth
pair, whatever the tests did.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pathlib
import subprocess
import sys
import time

import psutil
import pytest

import jpar
from jpar.config import Config
from jpar.runtime.driver.driver import Driver
from jpar.backends.native import current_driver
from jpar.errors import ClusterError
from jpar.labserver import FINISHED, Hub
from jpar.runtime.store.object_store import sweep_cluster

from . import netns

pytestmark = pytest.mark.timeout(180)

ROOT = pathlib.Path(jpar.__file__).parent.parent
PORT = 47311          # the namespace is private, so any port is free there
WILD_PORT = PORT + 1  # the second head's, bound on 0.0.0.0
NODE = "remote-ns"    # the engines' node name: another node than this process's


_SKIP = netns.netns_unavailable()
if _SKIP:
    pytest.skip(_SKIP, allow_module_level=True)

_env = netns.env      # this environment with no JPAR_* setting (nothing configured by hand), jpar importable


def _cluster_procs(head_pid: int) -> list[psutil.Process]:
    try:
        head = psutil.Process(head_pid)
        return [head, *head.children(recursive=True)]
    except psutil.Error:
        return []


KEY_DIR: dict = {}   # {"path": the module's CurveZMQ key directory}, set by the ``remote`` fixture


def _start_head(info: dict, bind: str, port: int, runtime: pathlib.Path) -> None:
    """``jpar start --head --bind <bind>`` in the namespace ``info["ns"]``, with its own runtime dir;
    fills info's "conn", "pid", "key", "address", "procs" and "out" (what the command printed)."""
    out = subprocess.run(
        ["ip", "netns", "exec", info["ns"], sys.executable, "-m", "jpar.cli", "start", "--head", "--bind", bind,
         "--port", str(port), "-n", "1", "--node", NODE],
        capture_output=True, text=True, timeout=90, env=_env(JPAR_RUNTIME_DIR=str(runtime), JPAR_KEY_DIR=KEY_DIR["path"]),
        cwd=ROOT)
    files = glob.glob(str(runtime / "cluster-*.json"))
    if files:
        with open(files[0]) as f:
            info["conn"] = conn = json.load(f)
        info["pid"], info["key"], info["address"] = conn["pid"], conn["key"], conn["head"]
    assert out.returncode == 0 and files, f"jpar start --head failed in {info['ns']}:\n{out.stdout}{out.stderr}"
    info["procs"] = _cluster_procs(info["pid"])
    info["out"] = out.stdout


def _stop_head(info: dict) -> None:
    """Stop a head started by :func:`_start_head` and its engines by pid, and sweep its segments."""
    netns.stop(_cluster_procs(info["pid"]) if info["pid"] else [])
    if info["key"]:
        sweep_cluster(bytes.fromhex(info["key"]))


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """The remote head: {"ns", "address", "key", "pid", "local_ip", "remote_ip", "procs", "conn"}."""
    runtime = tmp_path_factory.mktemp("remote-head")
    KEY_DIR["path"] = str(tmp_path_factory.mktemp("remote-keys") / "keys")   # made by the first head
    saved_key_dir = os.environ.get("JPAR_KEY_DIR")
    os.environ["JPAR_KEY_DIR"] = KEY_DIR["path"]     # this process's drivers and sidebar use the same keys
    try:
        with netns.veth_pair("jpt", 251) as pair:
            info: dict = {"ns": pair["ns"], "pid": 0, "key": "", "local_ip": pair["here"],
                          "remote_ip": pair["there"]}
            try:
                _start_head(info, pair["there"], PORT, runtime)
                yield info
            finally:
                _stop_head(info)
    finally:
        if saved_key_dir is None:
            os.environ.pop("JPAR_KEY_DIR", None)
        else:
            os.environ["JPAR_KEY_DIR"] = saved_key_dir


@pytest.fixture(scope="module")
def driver(remote):
    """This process's driver of the remote cluster (jpar.init by address and key)."""
    ctx = jpar.init(address=remote["address"], cluster_key=remote["key"])
    yield ctx
    jpar.shutdown()


def test_the_head_listens_on_the_veth_address(remote):
    conn = remote["conn"]
    assert conn["head"] == f"tcp://{remote['remote_ip']}:{PORT}"
    assert conn["events"].startswith(f"tcp://{remote['remote_ip']}:")    # the event stream is reachable too
    assert remote["procs"], "the head is not running"


def test_callback_address_routes_to_the_head(remote):
    from jpar.runtime.wire import transport

    assert transport.callback_host(remote["address"]) == remote["local_ip"]
    assert transport.callback_host(remote["address"], "192.0.2.7") == "192.0.2.7"      # an explicit setting wins
    assert transport.callback_host("tcp://127.0.0.1:5555") == "127.0.0.1"
    assert transport.callback_host("ipc:///tmp/x/head") == "127.0.0.1"


def _by_value():
    """The tasks, defined in a function so they ship by value: engines never import this module."""
    def square(x):
        return x * x

    def whereami():
        return os.getpid(), os.readlink("/proc/self/ns/net"), jpar.get_runtime_context().get_node_id()

    def total(a):
        return float(a.sum()), a.shape

    def ones(n):
        import numpy as np

        return np.ones(n) * 3

    return square, whereami, total, ones


square, whereami, total, ones = _by_value()


def test_tasks_run_on_the_remote_engine(remote, driver):
    d = current_driver()
    assert d.endpoint.startswith(f"tcp://{remote['local_ip']}:"), d.endpoint   # chosen with no JPAR_BIND_HOST
    sq = jpar.remote(square)
    assert jpar.get([sq.remote(i) for i in range(50)], timeout=60) == [i * i for i in range(50)]
    pid, netns, node = jpar.get(jpar.remote(whereami).remote(), timeout=30)
    assert netns != os.readlink("/proc/self/ns/net")
    assert node == NODE
    engines = driver.status()["engines"]
    assert [(e["pid"], e["node"]) for e in engines] == [(pid, NODE)]


def test_large_arrays_cross_hosts_both_ways(remote, driver):
    import numpy as np
    a = np.arange(3_000_000, dtype=np.float64)        # 24 MB: far above the inline threshold
    ref = jpar.put(a)
    endpoint = current_driver().store.server_endpoint()
    assert endpoint.startswith(f"tcp://{remote['local_ip']}:"), endpoint
    assert jpar.get(jpar.remote(total).remote(ref), timeout=60) == (float(a.sum()), a.shape)   # engine pulls
    big = jpar.remote(ones).remote(2_000_000)
    got = jpar.get(big, timeout=60)                      # this side pulls from the engine's object server
    assert got.shape == (2_000_000,) and float(got.sum()) == 6_000_000.0
    assert jpar.get(jpar.remote(total).remote(big), timeout=60) == (6_000_000.0, (2_000_000,))   # stays there


def test_actor_on_the_remote_head(driver):
    @jpar.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self, k):
            self.n += k
            return self.n

    c = Counter.remote()
    assert jpar.get([c.incr.remote(1) for _ in range(5)], timeout=60) == [1, 2, 3, 4, 5]
    jpar.kill(c)


def test_wrong_key_is_a_clear_error(remote):
    conn = {"head": remote["address"], "key": "ab" * 32, "local": False, "cluster_id": "?"}
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="key"):
        Driver(conn, Config.from_env(start_timeout_s=2.0))
    assert time.monotonic() - t0 < 10


async def _next(q: asyncio.Queue, pred, timeout: float):
    """The first (kind, data) from the hub's queue that satisfies ``pred``."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no matching event in {timeout} s; saw {seen[-5:]}")
        try:
            kind, data = await asyncio.wait_for(q.get(), left)
        except asyncio.TimeoutError:
            continue
        seen.append((kind, data))
        if pred(kind, data):
            return data


def _watch(hub: Hub, body) -> None:
    """Listen to ``hub`` while ``body(queue)`` runs; then let its threads (and their clients) end."""
    async def main():
        q = hub.listen()
        try:
            await body(q)
        finally:
            hub.unlisten(q)
            watchers = list(hub.watchers.values())
            scan = hub._thread
            await asyncio.to_thread(lambda: scan is None or scan.join(10))
            for w in watchers:
                await asyncio.to_thread(w.thread.join, 10)
                assert not w.thread.is_alive(), "a sidebar watcher did not stop"

    asyncio.run(main())


def _done(snap: dict) -> int:
    return sum(snap.get("tasks", {}).get(k, 0) for k in FINISHED)


def test_sidebar_watches_the_remote_head_live(remote, driver, tmp_path):
    hub = Hub(Config.from_env(runtime_dir=str(tmp_path / "lab")))
    hub.add_remote(remote["address"], remote["key"])
    address = remote["address"]

    def ours(kind, data):
        return kind == "cluster" and data.get("address") == address

    async def body(q):
        clusters = await _next(q, lambda k, d: k == "clusters" and d["clusters"], 20)
        assert [c["address"] for c in clusters["clusters"]] == [address]
        assert clusters["clusters"][0]["remote"] is True
        first = await _next(q, ours, 30)
        assert "error" not in first, first
        assert [(e["node"]) for e in first["engines"]] == [NODE]
        before = _done(first)
        sq = jpar.remote(square)
        await asyncio.to_thread(lambda: jpar.get([sq.remote(i) for i in range(20)], timeout=60))
        later = await _next(q, lambda k, d: ours(k, d) and _done(d) >= before + 20, 30)
        assert "error" not in later and later["engines"][0]["node"] == NODE

    _watch(hub, body)


def test_sidebar_wrong_key_gives_an_error_snapshot(remote, tmp_path):
    hub = Hub(Config.from_env(runtime_dir=str(tmp_path / "lab")))
    hub.add_remote(remote["address"], "cd" * 32)
    address = remote["address"]

    async def body(q):
        t0 = time.monotonic()
        snap = await _next(q, lambda k, d: k == "cluster" and d.get("address") == address, 30)
        assert "key" in snap.get("error", ""), snap
        assert time.monotonic() - t0 < 20
    _watch(hub, body)


def test_stop_the_remote_head_by_address(remote, tmp_path):
    jpar.shutdown()   # this module's driver first (a later test would start a new one)
    procs = _cluster_procs(remote["pid"])
    assert len(procs) >= 2, "the head and its engine should still run"
    env = _env(JPAR_CLUSTER_KEY=remote["key"], JPAR_RUNTIME_DIR=str(tmp_path),    # by address and key only
               JPAR_KEY_DIR=KEY_DIR["path"])
    out = subprocess.run([sys.executable, "-m", "jpar.cli", "stop", "--address", remote["address"]],
                         capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    _, alive = psutil.wait_procs(procs, timeout=20)
    assert alive == [], f"processes of the remote cluster survived `jpar stop`: {[p.pid for p in alive]}"


# ---------------------------------------------------------------- a head bound on every interface
@pytest.fixture(scope="module")
def wild(remote, tmp_path_factory):
    """A second head in the namespace, started with ``--bind 0.0.0.0``: like ``remote``'s record."""
    info: dict = {"ns": remote["ns"], "pid": 0, "key": ""}
    try:
        _start_head(info, "0.0.0.0", WILD_PORT, tmp_path_factory.mktemp("wild-head"))
        yield info
    finally:
        _stop_head(info)


@pytest.fixture(scope="module")
def wild_driver(wild):
    """This process's driver of the wildcard head, by the address it printed and its key."""
    jpar.shutdown()   # the first head's driver, if a test left one
    ctx = jpar.init(address=wild["address"], cluster_key=wild["key"])
    yield ctx
    jpar.shutdown()


def _wild_by_value():
    def served_at():
        """Where the object servers of this process (an engine or an actor) are advertised."""
        from jpar.runtime.store import object_store

        return [s.server_endpoint() for s in object_store._registry.values()]

    class Holder:
        def __init__(self):
            self.n = 0

        def incr(self, k):
            self.n += k
            return self.n

        def total(self, a):
            return float(a.sum()), a.shape

        def ones(self, n):
            import numpy as np

            return np.ones(n) * 3

        def served_at(self):
            return served_at()

    return served_at, Holder


served_at, Holder = _wild_by_value()


def test_a_head_bound_on_every_interface_advertises_the_veth_address(remote, wild):
    there, conn = remote["remote_ip"], wild["conn"]
    assert conn["head"] == f"tcp://{there}:{WILD_PORT}", conn           # not tcp://0.0.0.0:...
    assert conn["bound"] == f"tcp://0.0.0.0:{WILD_PORT}", conn
    assert conn["events"].startswith(f"tcp://{there}:"), conn
    assert f"at tcp://{there}:{WILD_PORT} (listening on tcp://0.0.0.0:{WILD_PORT})" in wild["out"], wild["out"]
    assert f"jpar.init(address='tcp://{there}:{WILD_PORT}')" in wild["out"], wild["out"]


def test_another_host_runs_tasks_and_moves_arrays_through_the_wildcard_head(remote, wild_driver):
    import numpy as np
    there, here = remote["remote_ip"], remote["local_ip"]
    d = current_driver()
    assert d.info["events"].startswith(f"tcp://{there}:"), d.info     # the Welcome names a reachable stream
    assert d.endpoint.startswith(f"tcp://{here}:"), d.endpoint
    sq = jpar.remote(square)
    assert jpar.get([sq.remote(i) for i in range(50)], timeout=60) == [i * i for i in range(50)]
    _, netns, node = jpar.get(jpar.remote(whereami).remote(), timeout=30)
    assert netns != os.readlink("/proc/self/ns/net") and node == NODE
    a = np.arange(3_000_000, dtype=np.float64)
    assert jpar.get(jpar.remote(total).remote(jpar.put(a)), timeout=60) == (float(a.sum()), a.shape)  # engine pulls
    servers = jpar.get(jpar.remote(served_at).remote(), timeout=30)
    assert servers and all(e.startswith(f"tcp://{there}:") for e in servers), servers    # bound on 0.0.0.0
    got = jpar.get(jpar.remote(ones).remote(2_000_000), timeout=60)   # this side pulls from the engine's server
    assert got.shape == (2_000_000,) and float(got.sum()) == 6_000_000.0


def test_an_actor_of_the_wildcard_head(remote, wild_driver):
    import numpy as np
    there = remote["remote_ip"]
    h = jpar.remote(Holder).remote()
    assert jpar.get([h.incr.remote(1) for _ in range(5)], timeout=60) == [1, 2, 3, 4, 5]
    inboxes = [c.chan.endpoint for c in current_driver()._actor_client.conns.values() if c.chan is not None]
    assert inboxes and all(e.startswith(f"tcp://{there}:") for e in inboxes), inboxes
    a = np.arange(2_000_000, dtype=np.float64)
    assert jpar.get(h.total.remote(jpar.put(a)), timeout=60) == (float(a.sum()), a.shape)   # the actor pulls
    got = jpar.get(h.ones.remote(1_500_000), timeout=60)                  # this side pulls from the actor's server
    assert got.shape == (1_500_000,) and float(got.sum()) == 4_500_000.0
    servers = jpar.get(h.served_at.remote(), timeout=30)
    assert servers and all(e.startswith(f"tcp://{there}:") for e in servers), servers
    jpar.kill(h)


def test_an_ipv6_wildcard_takes_ipv4_clients_on_the_advertised_address(remote):
    """``--bind ::`` binds dual-stack and is advertised on the veth's IPv4 address."""
    from jpar.runtime.wire import protocol as P
    from jpar.runtime.wire import transport

    from jpar.runtime.wire import keys

    key = "ef" * 32
    keys.secure_process(KEY_DIR["path"])   # off loopback: CURVE, with the module's keys on both sides
    script = ("import os, sys\nfrom jpar.runtime.wire import keys, protocol as P, transport\n"
              "keys.secure_process(os.environ['JPAR_KEY_DIR'])\n"
              "ch, bound = transport.bind_pull(['tcp://:::0'], P.Signer(bytes.fromhex(sys.argv[1])))\n"
              "print(bound[0], transport.advertised_endpoint(bound[0]), flush=True)\n"
              "print(type(ch.recv(timeout_ms=30000)).__name__, flush=True)\n")
    proc = subprocess.Popen(["ip", "netns", "exec", remote["ns"], sys.executable, "-c", script, key],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(JPAR_KEY_DIR=KEY_DIR["path"]), cwd=ROOT)
    ch = None
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 2, proc.stderr.read() if proc.poll() is not None else line
        bound, advertised = line
        assert transport.endpoint_key(bound) and transport.endpoint_key(advertised) == transport.endpoint_key(bound)
        bound, plain = transport.plain_endpoint(bound), transport.plain_endpoint(advertised)
        port = bound.rpartition(":")[2]
        assert bound == f"tcp://[::]:{port}" and plain == f"tcp://{remote['remote_ip']}:{port}", line
        ch = transport.connect_push(advertised, P.Signer(bytes.fromhex(key)))
        ch.send(P.Heartbeat())
        assert proc.stdout.readline().strip() == "Heartbeat"     # "NoneType" if it never arrived
    finally:
        if ch is not None:
            ch.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
