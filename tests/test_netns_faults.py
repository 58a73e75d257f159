"""Engines on another "host", seen on the wire and across a cut link.

The other host is a network namespace joined to this one by a veth pair (tests/netns.py): the head
runs on this side, bound on this side's veth address; engines join it from the namespace with
``jpar start --address``; this process's driver connects by address and key, as from a third host.

- What crosses the link is read by a raw AF_PACKET socket bound to this side's veth (root; no
  tcpdump): a task argument holding a unique canary string appears in the captured TCP payload
  with ``--insecure`` and never with CurveZMQ (the default off loopback), while the capture
  provably holds the task's bytes (more TCP payload to and from the head's port than the argument).
- A cut link (netem dropping every packet both ways, the interfaces left up, as when a cable or
  switch fails): the head declares the engines behind it dead within 10 s, seen on its event
  stream; a running task with retries finishes on an engine on this side, one without gets a clear
  error from ``get`` at once; the same holds while short tasks stream through the engine at the
  moment of the cut. The detection times are measured and printed (run with ``-s`` to see them).

Every test makes its own namespace and veth pair and deletes them, stops every process it started
by pid, and checks that no shared-memory segment is left.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
import uuid

import psutil
import pytest

import jpar
from jpar import hooks
from jpar.config import Config
from jpar.runtime.store.object_store import sweep_cluster
from jpar.runtime.wire import transport

from . import netns
from .conftest import shm_segments

pytestmark = pytest.mark.timeout(240)

_SKIP = netns.netns_unavailable()
if _SKIP:
    pytest.skip(_SKIP, allow_module_level=True)

NEAR, FAR = netns.NEAR, netns.FAR   # node names: the head's host, the namespace
DETECT_S = 10.0               # DESIGN.md: a lost host is declared dead within 10 s
SETTLE_S = 2 * Config().heartbeat_s + 0.5   # a new engine's liveness TTL runs from its first ping


# ---------------------------------------------------------------- the tasks (shipped by value)
def _by_value():
    def where(payload, n):
        return payload[:n], os.readlink("/proc/self/ns/net"), jpar.get_runtime_context().get_node_id()

    def hold(marks, name, release, limit_s):
        """Note where it started (a line per attempt), then run until ``release`` exists."""
        import time

        node = jpar.get_runtime_context().get_node_id()
        with open(os.path.join(marks, name), "a") as f:
            f.write(f"{node} {os.getpid()}\n")
        end = time.monotonic() + limit_s
        while not os.path.exists(release) and time.monotonic() < end:
            time.sleep(0.05)
        return node

    def tick(i):
        import time

        time.sleep(0.004)
        return i, jpar.get_runtime_context().get_node_id()

    def hold_gil(seconds):
        import ctypes

        ctypes.PyDLL(None).sleep(seconds)   # PyDLL keeps the GIL through the call: no Python thread runs
        return os.getpid(), jpar.get_runtime_context().get_node_id()

    return where, hold, tick, hold_gil


where, hold, tick, hold_gil = _by_value()


@pytest.fixture
def no_shm_left():
    """Fails the test if it leaves a jpar shared-memory segment (set up first, so checked last)."""
    before = set(shm_segments())
    yield
    left = set(shm_segments()) - before
    assert not left, f"shared-memory segments left behind: {sorted(left)}"


@pytest.fixture
def site(no_shm_left, tmp_path):
    """A fresh namespace and veth pair, and a :class:`Site` on it (CURVE unless the test says)."""
    with netns.veth_pair("jpf", 253, unique=True) as pair:
        s = netns.Site(pair, tmp_path, secure=True)
        try:
            yield s
        finally:
            s.close()


# ---------------------------------------------------------------- reading the wire
class Capture:
    """Every frame crossing one interface, read in a thread by a raw AF_PACKET socket: each TCP
    flow's payload in arrival order (a veth neither drops nor reorders), and the raw frames."""

    def __init__(self, dev: str):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))   # ETH_P_ALL
        self.sock.bind((dev, 0))
        self.sock.settimeout(0.1)
        self.flows: dict[tuple, bytearray] = {}   # (src, sport, dst, dport) -> payload bytes
        self.raw = bytearray()
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(1 << 17)   # large enough for a GSO frame (up to 64 KiB)
            except socket.timeout:
                continue
            except OSError:
                return
            self.frames += 1
            if len(self.raw) < (64 << 20):
                self.raw += frame
            if len(frame) < 34 or frame[12:14] != b"\x08\x00":   # IPv4 over Ethernet only
                continue
            ip = frame[14:]
            if ip[9] != 6:                                        # TCP
                continue
            total = int.from_bytes(ip[2:4], "big") or len(ip)
            tcp = ip[(ip[0] & 0x0F) * 4:total]
            if len(tcp) < 20:
                continue
            payload = tcp[(tcp[12] >> 4) * 4:]
            if payload:
                key = (socket.inet_ntoa(ip[12:16]), int.from_bytes(tcp[0:2], "big"),
                       socket.inet_ntoa(ip[16:20]), int.from_bytes(tcp[2:4], "big"))
                self.flows.setdefault(key, bytearray()).extend(payload)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def port_bytes(self, port: int) -> int:
        """TCP payload bytes captured to or from ``port``."""
        return sum(len(b) for (_, sp, _, dp), b in self.flows.items() if port in (sp, dp))

    def holds(self, needle: bytes) -> bool:
        return needle in self.raw or any(needle in b for b in self.flows.values())


def _port(endpoint: str) -> int:
    return int(transport.plain_endpoint(endpoint).rsplit(":", 1)[1])


@pytest.mark.parametrize("secure", [False, True], ids=["insecure", "curve"])
def test_a_task_argument_crosses_the_link_in_plaintext_only_with_insecure(site, secure):
    if secure and not transport.curve_available():
        pytest.skip("libzmq was built without CURVE")
    site.secure = secure
    conn = site.start_head()
    site.join(1)
    site.connect(engines=2)
    (far,) = site.engine_ids(FAR)
    canary = f"CANARY-{uuid.uuid4().hex}"
    payload = canary + "|" + os.urandom(15_000).hex()   # 30 kB: inline in the task message (< 100 KiB)
    cap = Capture(site.pair["here_dev"])
    try:
        got = jpar.get(jpar.remote(where).options(placement=far).remote(payload, len(canary)), timeout=60)
        time.sleep(0.3)   # the last frames reach the capture thread
    finally:
        cap.close()
    assert got[0] == canary and got[2] == FAR and got[1] != os.readlink("/proc/self/ns/net"), got
    head_port = _port(conn["head"])
    seen = cap.port_bytes(head_port)
    print(f"\n[{'curve' if secure else 'insecure'}] captured {cap.frames} frames, {seen} TCP payload bytes to/from "
          f"the head's port {head_port} (argument: {len(payload)} bytes)")
    assert seen > len(payload), f"the capture missed the task: {seen} bytes on port {head_port}, {cap.flows.keys()}"
    if secure:
        assert not cap.holds(canary.encode()), "the canary crossed the link in plaintext under CURVE"
    else:
        assert cap.holds(canary.encode()), "no canary in a plaintext capture: the capture proves nothing"


# ---------------------------------------------------------------- a cut link
def _cut(pair: dict) -> str:
    """Drop every packet both ways between the two sides, leaving both interfaces up (as a failed
    cable or switch does); where netem is missing, take the namespace's end down instead."""
    if shutil.which("tc"):
        try:
            subprocess.run(["ip", "netns", "exec", pair["ns"], "tc", "qdisc", "add", "dev", pair["there_dev"],
                            "root", "netem", "loss", "100%"], check=True, capture_output=True, timeout=20)
            subprocess.run(["tc", "qdisc", "add", "dev", pair["here_dev"], "root", "netem", "loss", "100%"],
                           check=True, capture_output=True, timeout=20)
            return "netem loss 100% on both ends"
        except subprocess.CalledProcessError:
            pass
    netns.ip("link", "set", pair["there_dev"], "down", ns=pair["ns"])
    return "the namespace's end of the veth pair down"


def _heal(pair: dict, how: str) -> None:
    """Undo :func:`_cut`."""
    if how.startswith("netem"):
        subprocess.run(["ip", "netns", "exec", pair["ns"], "tc", "qdisc", "del", "dev", pair["there_dev"], "root"],
                       check=True, capture_output=True, timeout=20)
        subprocess.run(["tc", "qdisc", "del", "dev", pair["here_dev"], "root"], check=True, capture_output=True,
                       timeout=20)
    else:
        netns.ip("link", "set", pair["there_dev"], "up", ns=pair["ns"])


def _wait_dead(sub, ids: set, t_cut: float, limit_s: float = 30.0) -> dict:
    """{engine id: seconds from the cut to the head declaring it dead (the event's head time)}."""
    found: dict = {}
    deadline = time.monotonic() + limit_s
    while set(found) != ids and time.monotonic() < deadline:
        for e in sub.poll(0.2):
            if e.kind == "engine" and e.key in ids and e.state == "dead":
                found[e.key] = (e.time - t_cut, (e.info or {}).get("why", ""))
    return found


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def _starts(path: pathlib.Path) -> list[str]:
    """The nodes a ``hold`` task started on, in order."""
    try:
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def test_a_cut_link_is_found_within_10_s_and_its_tasks_rerun_or_fail_clearly(site, tmp_path):
    site.start_head()
    site.join(2)
    site.connect(engines=3, settle=True)
    (near,), far = site.engine_ids(NEAR), set(site.engine_ids(FAR))
    assert len(far) == 2
    marks, release = tmp_path / "marks", str(tmp_path / "release")
    marks.mkdir()
    sub = hooks.subscribe_events()
    try:
        h = jpar.remote(hold)
        # the engine here is busy (its node's one CPU held), so the next two run behind the link
        blocker = h.options(placement=near).remote(str(marks), "blocker", release, 120)
        _wait_for(lambda: _starts(marks / "blocker"), 30, "the blocker started")
        survivor = h.options(max_retries=2).remote(str(marks), "survivor", release, 120)
        doomed = h.options(max_retries=0).remote(str(marks), "doomed", release, 120)
        _wait_for(lambda: _starts(marks / "survivor") == [FAR] and _starts(marks / "doomed") == [FAR], 30,
                  "both tasks started on the other host")
        how = _cut(site.pair)
        t_cut = time.time()
        dead = _wait_dead(sub, far, t_cut)
        for eid, (dt, why) in sorted(dead.items()):
            print(f"\n[cut link: {how}] engine {eid} (node {FAR}, running a task) declared dead {dt:.2f} s "
                  f"after the cut: {why}")
        assert set(dead) == far, f"engines {far - set(dead)} behind the cut link not declared dead in 30 s"
        assert max(dt for dt, _ in dead.values()) <= DETECT_S, dead
        assert not far & {e["id"] for e in hooks.engines()}, hooks.engines()   # status agrees

        t0 = time.monotonic()
        with pytest.raises(jpar.EngineCrashedError) as err:
            jpar.get(doomed, timeout=20)
        assert time.monotonic() - t0 < 5, "get waited for a task already failed"
        text = str(err.value)
        assert "lost its connection" in text and repr(FAR) in text and "max_retries" in text, text

        pathlib.Path(release).touch()   # the engine here takes the survivor's retry once the blocker ends
        assert jpar.get(blocker, timeout=60) == NEAR
        assert jpar.get(survivor, timeout=60) == NEAR
        assert _starts(marks / "survivor") == [FAR, NEAR]
        assert _starts(marks / "doomed") == [FAR]
        # the engines behind the cut hear nothing from their head either: each starts over as a new
        # engine in its process and joins again once the link heals; what they ran does not run again
        _heal(site.pair, how)
        _wait_for(lambda: len(site.engine_ids(FAR)) == 2, 60, "the engines behind the healed link joined again")
        print(f"[cut link] the engines behind it joined again {time.time() - t_cut:.1f} s after the cut")
        again = [e for e in hooks.engines() if e["node"] == FAR]
        assert {e["pid"] for e in again} == {p.pid for p in site.far_procs}   # the same processes,
        assert not {e["id"] for e in again} & far                              # new engines
        got = jpar.get([jpar.remote(where).options(placement=e["id"]).remote("x", 1) for e in again], timeout=60)
        here = os.readlink("/proc/self/ns/net")
        assert [(g[0], g[1] != here, g[2]) for g in got] == [("x", True, FAR)] * 2   # they work there again
        assert _starts(marks / "survivor") == [FAR, NEAR] and _starts(marks / "doomed") == [FAR]
    finally:
        pathlib.Path(release).touch()
        sub.close()


def test_a_cut_link_is_found_within_10_s_while_short_tasks_stream_through_it(site):
    """Results flow from the engine behind the link up to the moment of the cut, so the TTL of the
    pings on its work and control connections is not running then (libzmq cancels it on any
    message): only its liveness connection, which carries pings alone, drops in time."""
    site.start_head()
    site.join(1)
    site.connect(engines=2, settle=True)
    (far,) = site.engine_ids(FAR)
    sub = hooks.subscribe_events()
    try:
        refs = [jpar.remote(tick).remote(i) for i in range(2500)]
        on_far, done_far = set(), 0
        deadline = time.monotonic() + 60
        while done_far < 50:   # cut while results stream from the engine behind the link
            assert time.monotonic() < deadline, "the engine behind the link ran no tasks"
            for e in sub.poll(0.05):
                if e.kind == "task" and e.state in ("running", "assigned"):
                    (on_far.add if (e.info or {}).get("engine") == far else on_far.discard)(e.key)
                elif e.kind == "task" and e.state == "done" and e.key in on_far:
                    done_far += 1
        how = _cut(site.pair)
        t_cut = time.time()
        dead = _wait_dead(sub, {far}, t_cut)
        for eid, (dt, why) in dead.items():
            print(f"\n[cut link: {how}] engine {eid} (node {FAR}, streaming short tasks) declared dead {dt:.2f} s "
                  f"after the cut: {why}")
        assert far in dead, "the engine behind the cut link was not declared dead in 30 s"
        assert dead[far][0] <= DETECT_S, dead
        got = jpar.get(refs, timeout=120)   # what it held reruns here (default max_retries)
        assert [g[0] for g in got] == list(range(2500))
        nodes = {g[1] for g in got}
        assert nodes == {NEAR, FAR}, nodes
    finally:
        sub.close()


def test_an_engine_behind_the_link_holding_the_gil_for_15_s_is_not_taken_for_lost(site):
    """Its Python threads send nothing for 15 s, but libzmq's I/O thread keeps pinging on its
    liveness connection: silence from a host whose link stands is not a lost host."""
    site.start_head()
    site.join(1)
    site.connect(engines=2, settle=True)
    (far,) = site.engine_ids(FAR)
    sub = hooks.subscribe_events()
    try:
        pid, node = jpar.get(jpar.remote(hold_gil).options(placement=far, max_retries=0).remote(15), timeout=90)
        assert node == FAR
        gone = [e for e in sub.poll(0.5) if e.kind == "engine" and e.key == far and e.state != "alive"]
        assert not gone, gone
        assert far in site.engine_ids(FAR)
        assert jpar.get(jpar.remote(hold_gil).options(placement=far).remote(0), timeout=30) == (pid, FAR)
    finally:
        sub.close()


def test_a_link_cut_in_an_engines_first_second_is_still_found(site):
    """Before the first ping on its liveness connection the head's TTL timer for it does not run
    (libzmq starts it with a ping): the engine's silence finds it instead, within dead_after_s."""
    site.start_head()
    site.join(1)
    site.connect(engines=2)               # no settling: cut at once
    (far,) = site.engine_ids(FAR)
    sub = hooks.subscribe_events()
    try:
        how = _cut(site.pair)
        t_cut = time.time()
        dead = _wait_dead(sub, {far}, t_cut)
        for eid, (dt, why) in dead.items():
            print(f"\n[cut link: {how}] engine {eid} (node {FAR}, just joined) declared dead {dt:.2f} s after the "
                  f"cut: {why}")
        assert far in dead, "an engine cut off right after joining was never declared dead"
        assert dead[far][0] <= Config().dead_after_s + 1.0, dead
    finally:
        sub.close()
