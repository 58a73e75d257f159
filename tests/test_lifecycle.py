"""Cluster life cycle: processes come and go cleanly, bad input never breaks the cluster."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import jpar
import jpar.backends.native
from jpar.runtime.wire import protocol as P
from jpar.runtime.wire import transport

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(90)
PY = sys.executable


@jpar.remote
def echo(x):
    return x


def run_py(code: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_shutdown_leaves_no_process(monkeypatch):
    jpar.init(num_engines=2)
    procs = jpar_children()
    assert len(procs) == 3  # head + 2 engines
    jpar.shutdown()
    assert wait_gone(procs, 10) == []
    assert not jpar.is_initialized()
    monkeypatch.setenv("JPAR_AUTO_INIT", "0")   # else get() would start a new cluster, as Ray's does
    with pytest.raises(jpar.NotInitializedError, match="jpar.init"):
        jpar.get(jpar.ObjectRef(1, 1))


def test_crashed_driver_leaves_no_process():
    out = run_py("""
        import os, jpar
        jpar.init(num_engines=2)
        st = jpar.hooks.status()
        print(st["pid"], *[e["pid"] for e in st["engines"]], flush=True)
        os._exit(1)  # no shutdown, no atexit: as if the kernel was killed
    """)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 3, out.stderr
    procs = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    assert wait_gone(procs, 20) == []


def test_interpreter_exit_stops_the_cluster():
    out = run_py("""
        import jpar
        jpar.init(num_engines=1)
        st = jpar.hooks.status()
        print(st["pid"], *[e["pid"] for e in st["engines"]], flush=True)
    """)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    assert wait_gone([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 10) == []


def test_engines_exit_when_the_head_is_killed_and_get_does_not_hang():
    jpar.init(num_engines=2)
    try:
        st = jpar.hooks.status()
        engines = [psutil.Process(e["pid"]) for e in st["engines"]]
        ref = jpar.remote(time.sleep).remote(30)
        os.kill(st["pid"], signal.SIGKILL)
        assert wait_gone(engines, 15) == []
        with pytest.raises(jpar.HeadDiedError, match="stopped answering"):
            jpar.get(ref, timeout=20)
    finally:
        jpar.shutdown()


def test_second_driver_connects_by_address_and_leaves_cluster_running():
    ctx = jpar.init(num_engines=2)
    try:
        out = run_py(f"""
            import jpar
            jpar.init(address={ctx.address!r})
            f = jpar.remote(lambda x: x * 3)
            print(jpar.get(f.remote(14)))
            jpar.shutdown()
        """)
        assert out.stdout.strip() == "42", out.stderr
        assert jpar.get(echo.remote("still here"), timeout=10) == "still here"
        assert len(jpar.hooks.engines()) == 2
    finally:
        jpar.shutdown()


def test_garbage_and_unsigned_messages_are_dropped():
    ctx = jpar.init(num_engines=2)
    try:
        conn = jpar.backends.native.current_driver().conn
        driver = jpar.backends.native.current_driver()
        wrong = P.Signer(b"not the cluster key")
        targets = [("dealer", conn["head"]), ("dealer", conn["head_ipc"]), ("push", driver.endpoint)]
        socks = [transport.raw_socket(kind, ep) for kind, ep in targets]
        for s in socks:
            s.send(b"garbage")
            s.send_multipart([b"\x00" * 32, b"\x80\x05junk"])
            s.send_multipart(P.encode(P.Submit([P.TaskSpec(1, 1, "x", b"", (), 1, (), 0, False, 0, 0, -1)]), wrong))
            s.send_multipart(P.encode(P.Goodbye(True), wrong))   # would stop the cluster if accepted
            s.send_multipart([os.urandom(32), os.urandom(5000), os.urandom(10)])
        assert jpar.get([echo.remote(i) for i in range(20)], timeout=20) == list(range(20))
        assert len(jpar.hooks.engines()) == 2
        for s in socks:
            s.close(linger=0)
        deadline = time.monotonic() + 10
        while driver.pull.dropped < 5 and time.monotonic() < deadline:
            time.sleep(0.05)   # the receiver thread drops them as it reads them
        assert driver.pull.dropped >= 5
    finally:
        jpar.shutdown()


def test_gpu_tasks_see_only_their_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    jpar.init(num_engines=2)
    try:
        assert jpar.cluster_resources() == {"CPU": 2.0, "GPU": 2.0}

        @jpar.remote(num_gpus=1)
        def devices(hold):
            time.sleep(hold)
            return os.environ.get("CUDA_VISIBLE_DEVICES")

        got = jpar.get([devices.remote(0.5), devices.remote(0.5)], timeout=20)
        assert sorted(got) == ["3", "5"]
        assert jpar.get(jpar.remote(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).remote()) == "3,5"
    finally:
        jpar.shutdown()


def _cli_head(cli: list, env: dict) -> tuple[int, str]:
    """`jpar start --head -n 1`: the head's pid and address, as the command prints them."""
    out = subprocess.run(cli + ["start", "--head", "-n", "1"], capture_output=True, text=True, env=env, timeout=30)
    assert "jpar head started" in out.stdout, out.stderr
    return int(out.stdout.split("(pid ")[1].split(")")[0]), out.stdout.split(" at ")[1].split()[0]


def test_cli_start_status_join_stop(tmp_path):
    env = dict(os.environ, JPAR_RUNTIME_DIR=str(tmp_path))
    cli = [PY, "-m", "jpar.cli"]
    head_pid, address = _cli_head(cli, env)
    try:
        out = subprocess.run(cli + ["start", "--address", address, "-n", "1", "--node", "second-host"],
                             capture_output=True, text=True, env=env, timeout=30)
        engine_pid = int(out.stdout.split("(pids ")[1].split(")")[0])
        code = f"""
            import jpar, os
            jpar.init(address="auto")
            import time
            nodes, deadline = set(), time.monotonic() + 20
            while len(nodes) < 2 and time.monotonic() < deadline:   # each call is a round trip to the head
                nodes = {{e["node"] for e in jpar.hooks.engines()}}
            f = jpar.remote(lambda: os.getpid())
            print(sorted(nodes), len(set(jpar.get([f.options(placement=e["id"]).remote()
                                                   for e in jpar.hooks.engines()]))))
            jpar.shutdown()
        """
        out = run_py(code, env=env)
        assert "'second-host'" in out.stdout and out.stdout.strip().endswith("2"), out.stderr
        status = subprocess.run(cli + ["status"], capture_output=True, text=True, env=env, timeout=30)
        assert "second-host" in status.stdout and "resources:" in status.stdout
        stop = subprocess.run(cli + ["stop"], capture_output=True, text=True, env=env, timeout=30)
        assert "stopped cluster" in stop.stdout
        procs = [psutil.Process(p) for p in (head_pid, engine_pid) if psutil.pid_exists(p)]
        assert wait_gone(procs, 20) == []   # the joined engine leaves when its head is gone
        assert not list(tmp_path.glob("cluster-*.json"))
    finally:
        for p in (head_pid,):
            if psutil.pid_exists(p):
                os.kill(p, signal.SIGKILL)


@jpar.remote
def square_after(x, seconds):
    time.sleep(seconds)
    return x * x


@jpar.remote
def block_after(seconds, size):
    time.sleep(seconds)
    return b"x" * size


def test_remove_engines_while_tasks_run():
    jpar.init(num_engines=3)
    try:
        st = jpar.hooks.status()
        head = psutil.Process(st["pid"])
        procs = {e["id"]: psutil.Process(e["pid"]) for e in st["engines"]}
        leaving = max(procs)
        kept = jpar.put(b"k" * (4 << 20))                                  # in the node's shared memory
        running = block_after.options(placement=leaving).remote(0.5, 4 << 20)   # starts there at once
        refs = [square_after.remote(i, 0.002) for i in range(300)]
        assert jpar.hooks.remove_engines(engine_ids=[leaving]).engine_ids == (leaving,)   # returns once it is gone
        assert sorted(e["id"] for e in jpar.hooks.engines()) == sorted(set(procs) - {leaving})
        assert jpar.get(running, timeout=10) == b"x" * (4 << 20)   # its running task finished; the result outlives it
        assert jpar.get(refs, timeout=60) == [i * i for i in range(300)]
        assert jpar.get(echo.remote(kept), timeout=10) == jpar.get(kept)   # the node's store was left alone
        assert wait_gone([procs[leaving]], 15) == []
        # reaped, not replaced: the head's children are exactly the engines it still has
        assert sorted(p.pid for p in head.children()) == sorted(p.pid for i, p in procs.items() if i != leaving)
        with pytest.raises(jpar.ResourceError, match=f"engine {leaving}, which was removed on request"):
            jpar.get(square_after.options(placement=leaving).remote(2, 0), timeout=10)

        jpar.get([echo.remote(i) for i in range(200)], timeout=30)   # short tasks: engines prefetch deep queues
        refs = [echo.remote(i) for i in range(3000)]
        (second,) = jpar.hooks.remove_engines(1, timeout=60).engine_ids   # its prefetched tasks run elsewhere
        assert jpar.get(refs, timeout=60) == list(range(3000))
        assert [e["id"] for e in jpar.hooks.engines()] == sorted(set(procs) - {leaving, second})
        with pytest.raises(ValueError, match="keeps at least one engine"):
            jpar.hooks.remove_engines(1)
        with pytest.raises(LookupError, match="No engine with id 99"):
            jpar.hooks.remove_engines(engine_ids=[99])
        assert len(jpar.hooks.engines()) == 1 and jpar.get(echo.remote("last"), timeout=10) == "last"
        assert wait_gone([procs[second]], 15) == []
    finally:
        jpar.shutdown()


def test_cli_remove_engines_stops_an_engine_that_joined_by_address(tmp_path):
    from jpar.backends.native import resolve_address as _resolve_address
    from jpar.config import Config
    from jpar.runtime.driver.driver import Driver

    env = dict(os.environ, JPAR_RUNTIME_DIR=str(tmp_path))
    cli = [PY, "-m", "jpar.cli"]
    head_pid, address = _cli_head(cli, env)
    d = None
    try:
        out = subprocess.run(cli + ["start", "--address", address, "-n", "1", "--node", "second-host"],
                             capture_output=True, text=True, env=env, timeout=30)
        joined = psutil.Process(int(out.stdout.split("(pids ")[1].split(")")[0]))
        (conn_file,) = tmp_path.glob("cluster-*.json")
        config = Config.from_env()
        d = Driver(_resolve_address(str(conn_file), config), config, kind="cli")
        d.query("wait_engines", 2, timeout=30)
        joined_id = next(e["id"] for e in d.query("status", timeout=10)["engines"] if e["node"] == "second-host")
        out = subprocess.run(cli + ["remove-engines", "--address", address, "--engine", str(joined_id)],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and f"removed engine {joined_id}" in out.stdout, out.stderr
        assert wait_gone([joined], 15) == []          # not a child of the head: it left on its own
        assert [e["node"] for e in d.query("status", timeout=10)["engines"]] != ["second-host"]
        assert len(d.query("status", timeout=10)["engines"]) == 1
        out = subprocess.run(cli + ["remove-engines", "--address", address], capture_output=True, text=True,
                             env=env, timeout=60)
        assert out.returncode == 1 and "keeps at least one engine" in out.stderr
        out = subprocess.run(cli + ["remove-engines", "--address", address, "--engine", "99"], capture_output=True,
                             text=True, env=env, timeout=60)
        assert out.returncode == 1 and "No engine with id 99" in out.stderr
    finally:
        if d is not None:
            d.close()
        subprocess.run(cli + ["stop", "--address", address], capture_output=True, text=True, env=env, timeout=30)
        assert wait_gone([psutil.Process(head_pid)] if psutil.pid_exists(head_pid) else [], 20) == []


def test_connection_file_is_private():
    jpar.init(num_engines=1)
    try:
        files = [c for c in jpar.runtime.driver.launcher.find_clusters(jpar.config.Config.from_env())
                 if c["cluster_id"] == jpar.backends.native.current_driver().cluster_id]
        assert len(files) == 1
        assert os.stat(files[0]["file"]).st_mode & 0o077 == 0
        with open(files[0]["file"]) as f:
            assert len(json.load(f)["key"]) == 64
    finally:
        jpar.shutdown()


def test_a_value_gone_with_a_killed_head_raises_head_died_error(tmp_path):
    """A put's segment swept away because its cluster died was reported as ObjectLostError ("keep the
    ObjectRef"), which sends the user the wrong way: the cluster is gone, and the error must say so,
    even before the driver's own liveness check has noticed the death."""
    import numpy as np

    from jpar.runtime.store.segments import decode_location

    env = dict(os.environ, JPAR_RUNTIME_DIR=str(tmp_path))
    head_pid, _ = _cli_head([sys.executable, "-m", "jpar.cli"], env)
    try:
        (conn_file,) = tmp_path.glob("cluster-*.json")
        jpar.init(address=str(conn_file))
        d = jpar.backends.native.current_driver()
        ref = jpar.put(np.arange(2_000_000))
        loc = decode_location(d.results[ref.id][1])
        os.kill(head_pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(head_pid)], timeout=10)
        os.unlink(os.path.join(d.store.dir, loc.name))       # what a sweep of the dead cluster does
        assert not d.closed                                   # the driver has not noticed yet
        with pytest.raises(jpar.HeadDiedError, match="went with it") as info:
            jpar.get(ref, timeout=20)
        assert isinstance(info.value.__cause__, jpar.ObjectLostError)
    finally:
        jpar.shutdown()
        if psutil.pid_exists(head_pid):
            os.kill(head_pid, signal.SIGKILL)


def test_a_killed_local_head_leaves_no_segment_once_its_driver_closes(tmp_path):
    """Nobody swept the puts of a driver whose detached head was SIGKILLed: they stayed in /dev/shm."""
    import numpy as np

    from jpar.runtime.store.segments import decode_location

    env = dict(os.environ, JPAR_RUNTIME_DIR=str(tmp_path))
    head_pid, _ = _cli_head([sys.executable, "-m", "jpar.cli"], env)
    try:
        (conn_file,) = tmp_path.glob("cluster-*.json")
        jpar.init(address=str(conn_file))
        d = jpar.backends.native.current_driver()
        ref = jpar.put(np.arange(2_000_000))
        path = os.path.join(d.store.dir, decode_location(d.results[ref.id][1]).name)
        assert os.path.exists(path)
        os.kill(head_pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(head_pid)], timeout=10)
    finally:
        jpar.shutdown()
        if psutil.pid_exists(head_pid):
            os.kill(head_pid, signal.SIGKILL)
    assert not os.path.exists(path)
