"""The Ray backend beyond the conformance kit: connecting to a running Ray, choosing it by
JPAR_BACKEND, the missing-package error, actor restarts, cancelling a running task, live output,
the dashboard's events and store figures, and %%remote's engines keeping their namespaces.

One Ray cluster for the module: ``ray start --head --block`` bound to 127.0.0.1, stopped by its
PID (it stops the processes it started), so nothing else running Ray on this machine is touched.
"""

from __future__ import annotations

import gc
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest

ray = pytest.importorskip("ray")

import jpar  # noqa: E402
from jpar import backends, hooks  # noqa: E402

pytestmark = pytest.mark.timeout(180)

REPO = pathlib.Path(__file__).resolve().parents[1]
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


CLIENT_PORTS: dict = {}   # head address -> the port of its Ray Client server (ray://)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_head(tmp: pathlib.Path):
    """``ray start --head --block`` on a free port; (process, reader thread, address) once it is up,
    or None (and the process gone) if Ray timed out starting (it allows its raylet 30 s)."""
    port, client_port = _free_port(), _free_port()
    env = dict(os.environ, **RAY_ENV, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    ray_cli = pathlib.Path(sys.executable).with_name("ray")
    proc = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={tmp}",
         f"--ray-client-server-port={client_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 150
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            _stop_head(proc, reader)
            print("".join(seen[-20:]), file=sys.stderr)
            return None
        seen.append(line)
        if "Ray runtime started" in line:
            CLIENT_PORTS[f"127.0.0.1:{port}"] = client_port
            return proc, reader, f"127.0.0.1:{port}"


def _stop_head(proc, reader) -> list:
    """Stop `ray start --block` by its PID (it stops what it started); the processes that survived."""
    procs = []
    if proc.poll() is None:
        procs.append(psutil.Process(proc.pid))
        try:
            procs.extend(psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:
            pass
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=30)
    proc.stdout.close()
    _, alive = psutil.wait_procs(procs, timeout=30)
    for p in alive:
        p.kill()
    return alive


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A local Ray head (2 CPUs) on 127.0.0.1 for the module; yields its address."""
    started = None
    for attempt in range(2):        # a loaded machine can miss Ray's own startup deadline once
        started = _start_head(tmp_path_factory.mktemp(f"ray{attempt}"))
        if started is not None:
            break
    assert started is not None, "ray start --head did not come up twice"
    proc, reader, address = started
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        yield address
    finally:
        try:                # a test that broke this process's Ray connection must not keep the head alive
            if jpar.is_initialized():
                jpar.shutdown()
            if ray.is_initialized():
                ray.shutdown()
        finally:
            alive = _stop_head(proc, reader)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert not alive, f"Ray processes survived: {[p.pid for p in alive]}"


@pytest.fixture
def cluster(ray_head):
    """jpar connected to the module's Ray head (re-connected if a test disconnected it)."""
    b = backends.current()
    if b is None or b.closed:
        jpar.init(backend="ray", address=ray_head)
    yield backends.current()
    hooks.set_front_end(None, None)


# ---------------------------------------------------------------- what the tasks run
@jpar.remote
def add(a, b=0):
    return a + b


@jpar.remote
def wait_for_file(path, text=None):
    """Print ``text`` (if any), then run until ``path`` exists (so a test controls when it ends)."""
    if text:
        print(text, flush=True)
    while not os.path.exists(path):
        time.sleep(0.02)
    return "released"


@jpar.remote
def sleeper(seconds):
    time.sleep(seconds)
    return "slept"


@jpar.remote
class Pid:
    def pid(self):
        return os.getpid()


def _events_until(sub, done, timeout=60.0) -> list:
    """Events from ``sub`` until ``done(events)`` is true (or the timeout passes)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(got):
        got.extend(sub.poll(0.5))
    return got


def _task_states(events, key) -> list:
    return [e.state for e in events if e.kind == "task" and e.key == key]


# ---------------------------------------------------------------- connecting
def test_connects_to_a_running_ray_and_leaves_it_running(cluster, ray_head):
    assert cluster.name == "ray" and not cluster.owns
    assert jpar.get(add.remote(2, 3), timeout=120) == 5
    assert jpar.cluster_resources()["CPU"] == 2
    assert "backend='ray'" in repr(jpar.init())
    jpar.shutdown()
    assert not ray.is_initialized()
    ray.init(address=ray_head, log_to_driver=False)   # the cluster is still there: reconnect by hand
    try:
        ctx = jpar.init(backend="ray")                 # a Ray initialized in the process is used as it is
        b = backends.current()
        assert not b.owns and not b.connected and ctx.backend == "ray"
        assert jpar.get(add.remote(1, 1), timeout=60) == 2
        jpar.shutdown()
        assert ray.is_initialized()                     # jpar did not start it, so it leaves it
    finally:
        ray.shutdown()


RAY_CLIENT_SCRIPT = """
import sys
import numpy as np
import jpar
from jpar import backends

@jpar.remote
def add(a, b=0):
    return a + b

@jpar.remote
class Tally:
    def __init__(self):
        self.seen = []

    def add(self, x):
        self.seen.append(x)
        return list(self.seen)

@jpar.remote
def fails():
    raise KeyError("missing")

ctx = jpar.init(backend="ray", address=sys.argv[1])
assert ctx.backend == "ray" and backends.current().table.client_mode
assert jpar.get([add.remote(i, 1) for i in range(5)], timeout=120) == [1, 2, 3, 4, 5]
arr = jpar.put(np.arange(10.0))
assert jpar.get(add.remote(arr, 1), timeout=60).tolist() == list(np.arange(10.0) + 1)
inner = add.remote(2, 2)
assert jpar.get(jpar.remote(lambda xs: jpar.get(xs[0])).remote([inner]), timeout=60) == 4
t = Tally.remote()
assert jpar.get([t.add.remote(i) for i in range(4)], timeout=60)[-1] == [0, 1, 2, 3]
try:
    jpar.get(fails.remote(), timeout=60)
    raise AssertionError("no error")
except KeyError:
    pass
ready, pending = jpar.wait([add.remote(1), add.remote(2)], num_returns=2, timeout=60)
assert len(ready) == 2 and not pending
from jpar.multiprocessing import Pool
with Pool(2) as pool:
    assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]
jpar.shutdown()
print("RAY CLIENT OK")
"""


def test_a_ray_client_address_runs_the_api(ray_head):
    """jpar.init(backend="ray", address="ray://host:port") through Ray Client, in a process of its own
    (a Ray Client connection changes process-wide Ray state): tasks, a put value and a ref nested in a
    list as arguments (Ray Client's cluster side unpickles that ref without jpar's hook: see
    backends/ray/escaped.py), an actor's calls in order, the original exception type, wait, the Pool
    drop-in; the cluster keeps running after."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **RAY_ENV)
    address = f"ray://127.0.0.1:{CLIENT_PORTS[ray_head]}"
    for attempt in range(2):    # Ray Client's proxy can fail to start its per-client server under load, once
        out = subprocess.run([sys.executable, "-c", RAY_CLIENT_SCRIPT, address], capture_output=True, text=True,
                             timeout=170, env=env)
        if "Initialization failure from server" not in out.stderr:
            break
    assert out.returncode == 0 and "RAY CLIENT OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
    b = backends.current()
    if b is None or b.closed:
        jpar.init(backend="ray", address=ray_head)
    assert jpar.get(add.remote(1, 1), timeout=60) == 2


def test_jpar_backend_variable_picks_ray(ray_head):
    code = ("import jpar\nfrom jpar import backends\nctx = jpar.init()\n"
            "f = jpar.remote(lambda x: x * 2)\n"
            "print(backends.current().name, jpar.get(f.remote(21), timeout=120))\njpar.shutdown()\n")
    env = dict(os.environ, JPAR_BACKEND="ray", RAY_ADDRESS=ray_head, PYTHONPATH=str(REPO), **RAY_ENV)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=170, env=env)
    assert out.stdout.split()[-2:] == ["ray", "42"], out.stderr[-3000:]


def test_missing_ray_names_the_extra():
    code = ("import sys\nsys.modules['ray'] = None\nimport jpar\n"
            "try:\n    jpar.init(backend='ray')\nexcept ImportError as e:\n    print('MISSING', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "MISSING" in out.stdout and "pip install 'jpar[ray]'" in out.stdout, out.stdout + out.stderr


# ---------------------------------------------------------------- actors, cancel
def test_actor_restarts_after_its_process_is_killed(cluster):
    a = Pid.options(max_restarts=1, max_task_retries=2).remote()
    first = jpar.get(a.pid.remote(), timeout=120)
    os.kill(first, signal.SIGKILL)
    second = jpar.get(a.pid.remote(), timeout=120)      # the call is retried on the restarted actor
    assert second != first and psutil.pid_exists(second)
    jpar.kill(a)
    # Ray's kill is asynchronous in its core worker; the driver that killed the actor fails later calls
    # itself (a call could reach the dying actor and return, 1 run in ~25 before)
    with pytest.raises(jpar.ActorDiedError, match=r"killed \(jpar.kill\)"):
        jpar.get(a.pid.remote(), timeout=60)


def test_cancel_interrupts_a_running_task_and_force_kills(cluster, tmp_path):
    sub = hooks.subscribe_events()
    try:
        r = sleeper.remote(120)
        _events_until(sub, lambda ev: "running" in _task_states(ev, r.id))
        t0 = time.monotonic()
        jpar.cancel(r)
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(r, timeout=60)
        assert time.monotonic() - t0 < 30                 # interrupted, not run to its end
        f = sleeper.remote(120)
        _events_until(sub, lambda ev: "running" in _task_states(ev, f.id))
        jpar.cancel(f, force=True)
        with pytest.raises(jpar.TaskCancelledError):
            jpar.get(f, timeout=60)
        assert jpar.get(add.remote(1, 2), timeout=120) == 3
    finally:
        sub.close()


# ---------------------------------------------------------------- what front ends see
def test_output_arrives_live_under_the_task_id(cluster, tmp_path):
    seen = threading.Event()
    got = []

    def handler(chunk, context):
        got.append((chunk, context))
        if "live line" in chunk.text:
            seen.set()

    hooks.set_front_end(lambda tid: ("cell", tid), handler)
    gate = tmp_path / "gate"
    r = wait_for_file.remote(str(gate), "live line")
    assert seen.wait(90), got
    ready, _ = jpar.wait([r], num_returns=1, timeout=0)
    assert ready == []                                   # the task is still running: the output is live
    chunk, context = next(g for g in got if "live line" in g[0].text)
    assert chunk.task_id == r.id and chunk.stream == "stdout" and context == ("cell", r.id)
    assert r.id in hooks.pending_tasks()
    gate.write_text("go")
    assert jpar.get(r, timeout=60) == "released"
    assert hooks.task_ids_done([r.id]) == [r.id]


def test_events_metrics_and_store_for_the_dashboard(cluster):
    sub = hooks.subscribe_events()
    try:
        a = add.remote(1, 2)
        b = add.remote(a, 10)
        assert jpar.get(b, timeout=120) == 13
        events = _events_until(sub, lambda ev: "done" in _task_states(ev, b.id) and
                               any(e.kind == "metrics" for e in ev))
        assert _task_states(events, a.id)[0] == "queued" and "done" in _task_states(events, a.id)
        waiting = next(e for e in events if e.kind == "task" and e.key == b.id and e.state == "waiting")
        assert waiting.info["deps"] == [a.id] and waiting.info["name"] == "add"
        assert "running" in _task_states(events, b.id)
        metrics = [e for e in events if e.kind == "metrics"]
        engine_ids = {e["id"] for e in hooks.engines()}
        assert metrics and {m.key for m in metrics} <= engine_ids and all(m.info["rss"] > 0 for m in metrics)
    finally:
        sub.close()
    big = jpar.put(b"x" * 4_000_000)
    stats = hooks.store_statistics()
    assert stats and all(row["capacity"] > 0 for row in stats.values())
    assert max(row["bytes_used"] for row in stats.values()) >= 4_000_000
    big_id = big.id
    assert big_id in cluster.table.refs
    del big
    gc.collect()
    hooks.release_now()
    assert big_id not in cluster.table.refs               # a collected ref drops its Ray ref


@jpar.remote
def burn_until(path):
    """Burn CPU until ``path`` exists (at least one round); return the rounds' count."""
    n = 0
    while True:
        for _ in range(10_000):
            n += 1
        if os.path.exists(path):
            return n


def test_engine_metrics_show_the_cpu_that_tasks_burn(cluster, tmp_path):
    """Tasks run in Ray's worker processes, not in the engine actors: an engine's figures carry its
    slot's share of the node's working workers, so two CPU-bound tasks show on the engines' CPU
    (before, the rows sampled only the idle engine actors and read ~0% while both CPUs burned)."""
    stop = tmp_path / "stop"
    sub = hooks.subscribe_events()
    try:
        refs = [burn_until.remote(str(stop)) for _ in range(2)]
        events = _events_until(sub, lambda ev: any(e.kind == "metrics" and e.info["cpu"] >= 50 for e in ev),
                               timeout=90)
        stop.touch()
        assert all(n > 0 for n in jpar.get(refs, timeout=60))
        busy = [e.info["cpu"] for e in events if e.kind == "metrics"]
        assert busy and max(busy) >= 50, busy
    finally:
        stop.touch()
        sub.close()


def test_remote_cells_keep_their_namespace_on_an_engine(cluster):
    from jpar.notebook import engine_ns

    runner = jpar.remote(engine_ns.run_cell)
    engines = [e["id"] for e in hooks.engines()]
    assert engines == list(range(2))                     # one engine per CPU
    key = f"test-{os.getpid()}"

    def cell(engine, source, n):
        ref = runner.options(placement=engine, name=f"remote-cell-{n}", max_retries=0).remote(
            key, source, f"<remote-cell-{n}>", None, ())
        return jpar.get(ref, timeout=120)

    first = cell(0, "import os\nx = 41", 1)
    second = cell(0, "x + 1", 2)
    assert engine_ns.unportable(second["value"]) == 42 and first["pid"] == second["pid"]
    with pytest.raises(NameError):                        # engine 1 has its own namespace
        cell(1, "x", 3)
    with pytest.raises(jpar.ResourceError):
        runner.options(placement=len(engines)).remote(key, "1", "<c>", None, ())


def test_store_figures_are_each_nodes_own_used_and_available(cluster):
    """With grpcio (the ``ray`` extra), each node's store figures are the raylet's own: an object no
    jpar ref holds (Ray's own put here) counts, and the dashboard shows used and capacity per node."""
    pytest.importorskip("grpc")
    from jpar.notebook.store_view import normalize_store

    def used() -> int:
        return sum(row["bytes_used"] for row in hooks.store_statistics().values())

    before = used()
    foreign = ray.put(b"y" * 6_000_000)      # not through jpar: the driver-only count would miss it
    stats = hooks.store_statistics()
    assert stats and all(row["scope"] == "node" for row in stats.values())
    assert sum(row["bytes_used"] for row in stats.values()) >= before + 6_000_000
    for row in stats.values():
        assert row["capacity"] > 0 and row["available"] == row["capacity"] - row["bytes_used"]
    shown = normalize_store(hooks.status()["object_store"])
    assert shown["hosts"] and all(h["used"] is not None and h["capacity"] > 0 for h in shown["hosts"])
    assert sum(h["used"] for h in shown["hosts"]) >= before + 6_000_000
    del foreign
