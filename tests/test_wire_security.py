"""What a local user without the key (or with a recording of signed traffic) can do to a cluster:
nothing. Replays are refused, the event stream says nothing to a stranger and switches nothing on,
and what a cluster leaves on disk is private and bounded."""

from __future__ import annotations

import os
import pickle
import signal
import stat
import time

import pytest

import jpar
from jpar.runtime.driver import launcher
from jpar.runtime.wire import serialization
from jpar.runtime.wire import transport
from jpar.runtime.wire import protocol as P
from jpar.config import Config
from jpar.backends.native import current_driver
from jpar.errors import ConfigError
from jpar.hooks import subscribe_events
from jpar.runtime.store.segments import private_dir

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(120)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def record_line(path):
    with open(path, "a") as f:
        f.write("ran\n")
    return "ok"


@pytest.fixture
def cluster1():
    jpar.init(num_engines=1)
    yield current_driver()
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []


def wire(driver) -> dict:
    return driver.query("status", timeout=30)["wire"]


def wait_until(pred, timeout: float = 20.0) -> bool:
    """Ask the head until ``pred`` holds (each try is a round trip, no sleeping)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
    return False


def test_replaying_a_clients_messages_from_a_new_socket_runs_nothing_again(cluster1, tmp_path):
    d = cluster1
    key = bytes.fromhex(d.conn["key"])
    signer = P.Signer(key)
    inbox, bound = transport.bind_pull([f"ipc://{tmp_path}/inbox"], signer)
    sender = transport.connect_dealer(d.conn["head_ipc"], signer, identity=b"recorder")
    recorded = []

    def send(msg):
        frames = P.encode(msg, signer, sender.session)
        recorded.append(frames)
        sender.sock.send_multipart(frames)

    try:
        send(P.Hello("driver", os.getpid(), "h", bound[0], False))
        welcome = inbox.recv(timeout_ms=30000)
        assert isinstance(welcome, P.Welcome)
        tid = (welcome.client_no << 40) | 1
        send(P.RegisterFunction(7, "record_line", serialization.dumps_function(record_line, "record_line")))
        path = str(tmp_path / "runs")
        send(P.Submit([P.TaskSpec(tid, 7, "record_line", pickle.dumps(((path,), {})), (), 1, (("CPU", 1.0),), 0,
                                  False, 0, 0, -1)]))
        while True:
            msg = inbox.recv(timeout_ms=30000)
            assert msg is not None, "the recorded task never finished"
            if isinstance(msg, P.Results):
                break
        assert read(path) == "ran\n"
        before = wire(d)["replays_refused"]

        replayer = transport.raw_socket("dealer", d.conn["head_ipc"])   # another socket, same frames
        for frames in recorded:
            replayer.send_multipart(frames)
        try:
            wait_until(lambda: wire(d)["replays_refused"] >= before + 3 or read(path) != "ran\n")
            assert wire(d)["replays_refused"] == before + 3
            assert jpar.get(jpar.remote(lambda: 1).remote(), timeout=30) == 1   # the cluster serves on
            assert read(path) == "ran\n"                                 # ran once, not twice
            assert len(d.query("status", timeout=30)["clients"]) == 2           # no client added by the replay
        finally:
            replayer.close()
        send(P.Goodbye(False))
    finally:
        sender.close()
        inbox.close()


def test_a_replayed_hello_of_the_owner_neither_joins_nor_stops_the_cluster(cluster1):
    d = cluster1
    signer = P.Signer(bytes.fromhex(d.conn["key"]))
    # the owner's first message (its Hello), as recorded: its session and sequence number 1
    body = pickle.dumps((P.PROTOCOL_VERSION, P.Hello.CODE, ["driver", os.getpid(), "h", d.endpoint, True]), protocol=5)
    header = P.HEADER.pack(d.dealer.session.id, 1, time.time())
    replayer = transport.raw_socket("dealer", d.conn["head_ipc"])
    replayer.send_multipart([signer.sign([header, body]), header, body])
    before_clients = 1
    wait_until(lambda: wire(d)["replays_refused"] >= 1 or len(d.query("status", timeout=30)["clients"]) > 1)
    assert wire(d)["replays_refused"] == 1
    assert len(d.query("status", timeout=30)["clients"]) == before_clients
    replayer.close()   # had the head taken it for an owner, its leaving would stop the cluster
    assert jpar.get(jpar.remote(lambda: 2).remote(), timeout=30) == 2
    assert not d.closed


def test_a_stranger_subscribing_to_the_event_stream_gets_nothing_and_switches_nothing_on(cluster1):
    d = cluster1
    stranger = transport.raw_socket("sub", d.conn["events"])
    try:
        assert wait_until(lambda: wire(d)["dropped"] >= 1)   # its subscription reached the head, refused
        status = d.query("status", timeout=30)
        assert status["events"]["listened"] is False
        published = status["events"]["published"]
        assert jpar.get([jpar.remote(lambda i: i).remote(i) for i in range(20)], timeout=30) == list(range(20))
        # no per-task events were built for it (the head's count says so), and none reached it
        assert d.query("status", timeout=30)["events"]["published"] - published < 20
        assert not stranger.poll(100)
        sub = subscribe_events()                             # with the key: events flow
        try:
            assert jpar.get(jpar.remote(lambda: 3).remote(), timeout=30) == 3
            assert d.query("status", timeout=30)["events"]["listened"] is True
        finally:
            sub.close()
        assert not stranger.poll(100)
    finally:
        stranger.close()


def test_a_clean_shutdown_removes_the_run_directory():
    jpar.init(num_engines=1)
    rundir = current_driver().conn["rundir"]
    assert os.path.isdir(rundir)
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []
    assert not os.path.exists(rundir)


def test_after_a_head_crash_the_next_look_cleans_its_file_and_socket_and_keeps_its_logs(tmp_path):
    jpar.init(num_engines=1, runtime_dir=str(tmp_path))
    d = current_driver()
    rundir, head_pid = d.conn["rundir"], d.conn["pid"]
    procs = jpar_children()
    os.kill(head_pid, signal.SIGKILL)
    try:
        with pytest.raises(jpar.JparError):
            jpar.get(jpar.remote(lambda: 1).remote(), timeout=60)
    finally:
        jpar.shutdown()
    assert wait_gone(procs) == []
    assert os.path.exists(os.path.join(rundir, "head"))                   # left by the crash
    assert launcher.find_clusters(Config(runtime_dir=str(tmp_path))) == []
    assert not any(n.startswith("cluster-") for n in os.listdir(tmp_path))
    assert not os.path.exists(os.path.join(rundir, "head"))               # socket gone
    assert os.path.exists(os.path.join(rundir, "head.log"))               # logs kept


def test_run_directories_of_dead_clusters_are_bounded(tmp_path):
    old = time.time() - 3600
    for i in range(launcher.RUN_DIRS_KEPT + 5):
        d = tmp_path / f"{i:010x}"
        d.mkdir()
        (d / "head.log").write_text("x")
        os.utime(d, (old + i, old + i))
    (tmp_path / "not-a-run-dir").mkdir()
    young = tmp_path / "ffffffffff"
    young.mkdir()                                         # a head may still be starting there
    launcher.prune_run_dirs(str(tmp_path))
    left = sorted(n for n in os.listdir(tmp_path))
    assert "not-a-run-dir" in left and "ffffffffff" in left
    kept = [n for n in left if n not in ("not-a-run-dir", "ffffffffff")]
    assert kept == [f"{i:010x}" for i in range(5, launcher.RUN_DIRS_KEPT + 5)]   # the newest ones


def test_the_spill_directory_is_private_or_refused(tmp_path):
    fresh = str(tmp_path / "fresh")
    private_dir(fresh)
    assert stat.S_IMODE(os.lstat(fresh).st_mode) == 0o700
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    os.chmod(readable, 0o755)
    private_dir(str(readable))
    assert stat.S_IMODE(os.lstat(readable).st_mode) == 0o700   # tightened: it is ours, no one could write
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ConfigError, match="writable by others"):
        private_dir(str(shared))
    link = tmp_path / "link"
    link.symlink_to(fresh)
    with pytest.raises(ConfigError, match="not a directory"):
        private_dir(str(link))
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(ConfigError, match="another user"):
            private_dir(str(theirs))
    from jpar.runtime.store.segments import default_spill_dir

    assert stat.S_IMODE(os.lstat(default_spill_dir()).st_mode) == 0o700


@jpar.remote
class _Holder:
    def __init__(self, value):
        self.value = value

    def size(self) -> int:
        return len(self.value)


def test_a_default_cluster_listens_on_loopback_only(cluster1):
    """Every listening TCP socket of a default cluster (head, engine, an actor's process, the store's
    transfer of a large object) is bound to 127.0.0.1: nothing is reachable from another host unless
    asked for (``jpar start --head --bind ADDR``)."""
    big = jpar.put(b"x" * (8 << 20))
    holder = _Holder.remote(big)
    assert jpar.get(holder.size.remote(), timeout=60) == 8 << 20
    procs = jpar_children()
    assert len(procs) >= 3, procs          # the head, the engine and the actor's process at least
    listening = [(p.pid, c.laddr) for p in procs for c in p.net_connections("inet")
                 if c.status == "LISTEN"]
    assert listening, "the cluster listens on nothing: nothing was checked"
    assert all(addr.ip in ("127.0.0.1", "::1") for _, addr in listening), listening
