"""The dask backend beyond the conformance kit: connecting to a cluster someone else started,
JPAR_BACKEND, the missing-extra error, cancel of a running task, resources, live output, the
dashboard's events and %%remote's namespaces on workers. One LocalCluster for the module."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import pytest

import jpar
from jpar import backends, hooks

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parents[1]


@jpar.remote
def add(a, b=0):
    return a + b


@jpar.remote
def fail(message):
    raise KeyError(message)


@jpar.remote
def wait_for_file(path, text):
    """Print, then block until ``path`` exists (the test creates it), print again."""
    print(text, flush=True)
    print("to stderr", file=sys.stderr)
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    print("after", flush=True)
    return os.getpid()


@pytest.fixture(scope="module")
def dask_cluster():
    """A LocalCluster this module starts itself (so jpar connects to it, as to a user's cluster)."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0",
                                       host="127.0.0.1", resources={"CPU": 1, "widget": 1},
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    started = [p for p in psutil.Process().children(recursive=True)          # the workers (not multiprocessing's
               if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())]   # resource tracker)
    assert len(started) >= 2
    try:
        yield cluster, client
    finally:
        if jpar.is_initialized():
            jpar.shutdown()
        client.close()
        cluster.close()
        _, alive = psutil.wait_procs(started, timeout=15)
        alive = [p for p in alive if _running(p)]
        for p in alive:
            p.kill()
        assert alive == [], "LocalCluster processes survived close()"


@pytest.fixture
def on_client(dask_cluster):
    """jpar on the module's cluster through its Client object."""
    cluster, client = dask_cluster
    if jpar.is_initialized():
        jpar.shutdown()
    ctx = jpar.init(backend="dask", address=client)
    yield ctx
    jpar.shutdown()


# ---------------------------------------------------------------- connecting
def test_connect_by_address_and_by_client(dask_cluster):
    cluster, client = dask_cluster
    if jpar.is_initialized():
        jpar.shutdown()
    ctx = jpar.init(backend="dask", address=cluster.scheduler_address)
    try:
        assert "backend='dask'" in repr(ctx) and ctx.address == cluster.scheduler_address
        assert jpar.get(add.remote(1, 2), timeout=60) == 3
        assert sorted(e["id"] for e in hooks.engines()) == [0, 1]
    finally:
        jpar.shutdown()
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2      # the cluster was not ours to stop

    ctx = jpar.init(backend="dask", address=client)
    b = backends.current()
    assert b.client is client
    assert jpar.get(add.remote(2, 2), timeout=60) == 4
    jpar.shutdown()
    assert b.closed and client.status == "running"                      # a Client we were given stays open
    assert client.submit(sum, [1, 2]).result(timeout=30) == 3


def test_jpar_backend_variable_picks_dask_and_its_cluster_stops():
    code = (
        "import jpar, json\n"
        "from jpar import hooks\n"
        "f = jpar.remote(lambda x: x * 2)\n"
        "ctx = jpar.init(num_engines=1)\n"
        "out = {'repr': repr(ctx), 'value': jpar.get(f.remote(21), timeout=60),\n"
        "       'pids': [e['pid'] for e in hooks.engines()]}\n"
        "jpar.shutdown()\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "JPAR_BACKEND": "dask", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "backend='dask'" in out["repr"] and out["value"] == 42
    assert len(out["pids"]) == 1 and out["pids"][0] > 0
    gone = [pid for pid in out["pids"] if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert gone == [], "the LocalCluster's worker outlived its driver"


def test_missing_distributed_names_the_extra():
    code = ("import sys\nsys.modules['distributed'] = None\nimport jpar\nfrom jpar.errors import MissingExtraError\n"
            "try:\n    jpar.init(backend='dask')\nexcept MissingExtraError as e:\n    print('ERR', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "ERR" in proc.stdout, proc.stderr[-3000:]
    assert "pip install 'jpar[dask]'" in proc.stdout and "distributed" in proc.stdout


# ---------------------------------------------------------------- cancel, resources, output, events
def test_cancel_of_a_running_task_discards_its_result(on_client):
    started = threading.Event()
    hooks.set_front_end(lambda tid: tid, lambda chunk, ctx: "running now" in chunk.text and started.set())
    sub = hooks.subscribe_events()
    try:
        with tempfile.TemporaryDirectory() as d:
            marker = os.path.join(d, "go")
            ref = wait_for_file.remote(marker, "running now")
            assert started.wait(60), "the task never started"
            jpar.cancel(ref)                                     # never raises; cannot interrupt on Dask
            jpar.cancel(ref, force=False)                        # twice is harmless
            pathlib.Path(marker).touch()                         # let it run to its end
            states = _states_of(sub, ref.id, until="done")
            assert "done" in states and "cancelled" in states, states    # it did finish on the worker...
            with pytest.raises(jpar.TaskCancelledError):
                jpar.get(ref, timeout=30)                        # ...and its result was discarded
        assert jpar.get(add.remote(1, 1), timeout=60) == 2
    finally:
        sub.close()
        hooks.set_front_end(None, None)


def test_force_cancel_restarts_the_worker_running_the_task(on_client):
    assert backends.current().capabilities.force_cancel
    started = threading.Event()
    hooks.set_front_end(lambda tid: tid, lambda chunk, ctx: "forced" in chunk.text and started.set())
    sub = hooks.subscribe_events()
    try:
        with tempfile.TemporaryDirectory() as d:
            ref = wait_for_file.remote(os.path.join(d, "never"), "forced")
            assert started.wait(60)
            engine = next(e.info["engine"] for e in _events(sub, ref.id, "running"))
            old_pid = next(e["pid"] for e in hooks.engines() if e["id"] == engine)
            jpar.cancel(ref, force=True)
            with pytest.raises(jpar.TaskCancelledError):
                jpar.get(ref, timeout=30)
            deadline = time.monotonic() + 60
            new_pid = old_pid
            while new_pid == old_pid and time.monotonic() < deadline:     # metrics events name each worker's pid
                new_pid = next((e.info["pid"] for e in sub.poll(0.5) if e.kind == "metrics" and e.key == engine
                                and e.info["pid"] not in (old_pid, 0)), old_pid)
            assert new_pid != old_pid, "the worker running the task was not restarted"
        assert jpar.get([add.remote(i) for i in range(4)], timeout=60) == [0, 1, 2, 3]
    finally:
        sub.close()
        hooks.set_front_end(None, None)


@jpar.remote
def die_first(path, deaths):
    """Count this run in ``path``; kill this worker's process for the first ``deaths`` runs."""
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        runs = len(f.readlines())
    if runs <= deaths:
        os._exit(1)
    return runs


def _runs(path) -> int:
    with open(path) as f:
        return len(f.readlines())


def test_max_retries_bounds_reruns_after_worker_deaths(on_client, dask_cluster, tmp_path):
    """Regression: Dask reran a task whose worker died allowed-failures (3) times whatever
    max_retries said; now max_retries=N means at most N reruns, fewer or more than Dask's 3."""
    _, client = dask_cluster
    once = tmp_path / "once"
    with pytest.raises(jpar.EngineCrashedError, match="max_retries"):
        jpar.get(die_first.options(max_retries=1).remote(str(once), 100), timeout=90)
    assert _runs(once) == 2                       # the first run and one rerun
    never = tmp_path / "never"
    with pytest.raises(jpar.EngineCrashedError):
        jpar.get(die_first.options(max_retries=0).remote(str(never), 100), timeout=90)
    assert _runs(never) == 1
    many = tmp_path / "many"                      # 4 deaths: more than Dask's own 3 allowed failures
    assert jpar.get(die_first.options(max_retries=4).remote(str(many), 4), timeout=90) == 5
    assert jpar.get([add.remote(i) for i in range(4)], timeout=60) == [0, 1, 2, 3]
    client.wait_for_workers(2, timeout=60)        # the nannies have restarted every worker for the next tests


@jpar.remote
def double_in_place(a):
    a *= 2
    return float(a.sum())


def test_arrays_travel_as_dask_data_not_inside_jpar_pickle(on_client):
    """Regression (3.6-4.8x slower than Dask for 10-100 MB): a top-level numpy argument was
    pickled into jpar's payload, then copied by Dask; now Dask ships it out of band itself."""
    np = pytest.importorskip("numpy")
    arr = np.ones(1_000_000)
    payload, deps, _ = backends.current()._pack("f", (arr, 3), {"k": arr})
    assert len(payload) < 1_000 and sum(d is arr for d in deps) == 2
    assert jpar.get(double_in_place.remote(arr), timeout=60) == 2_000_000.0    # writable where it runs
    assert arr[0] == 1.0                                                          # the caller's copy is not


@jpar.remote
class Tally:
    def __init__(self):
        self.n = 0

    def add(self, k=1):
        self.n += k
        return self.n


def test_actor_calls_go_straight_to_the_actor(on_client, dask_cluster):
    """Regression (8x a Dask actor call): each call was a Dask task through the scheduler. Now a
    call to a placed actor is a Dask actor call; its ref becomes a Dask task (key) only when another
    task takes it, and the actor forgets the call's result once the ref is collected."""
    _, client = dask_cluster
    b = backends.current()
    t = Tally.remote()
    assert jpar.get(t.add.remote(0), timeout=60) == 0            # placed now

    def known(dask_scheduler, key):
        return key in dask_scheduler.tasks

    def outcomes(dask_worker, aid=t._actor_id):
        return sum(len(a._outcomes) for a in dask_worker.state.actors.values()
                   if getattr(a, "_actor_id", None) == aid)

    r = t.add.remote(5)
    assert jpar.get(r, timeout=60) == 5
    assert not client.run_on_scheduler(known, key=b.key(r.id))   # no Dask task for the call
    assert jpar.get(add.remote(r, 1), timeout=60) == 6           # as an argument it becomes one
    assert client.run_on_scheduler(known, key=b.key(r.id))
    refs = [t.add.remote() for _ in range(20)]
    assert jpar.get(refs, timeout=60) == list(range(6, 26))
    assert sum(client.run(outcomes).values()) >= 20
    del refs, r
    import gc

    gc.collect()
    b._drain()
    for sent in b._send_forget():
        sent.result(timeout=30)
    assert sum(client.run(outcomes).values()) == 0


def test_resources_refused_and_honoured(on_client, dask_cluster):
    _, client = dask_cluster
    with pytest.raises(jpar.ResourceError, match="CPU"):
        add.options(num_cpus=2).remote(1)                        # workers have 1 CPU each: never
    with pytest.raises(jpar.ResourceError, match="gizmo"):
        add.options(resources={"gizmo": 1}).remote(1)
    with pytest.raises(jpar.ResourceError):
        add.options(num_gpus=1).remote(1)
    ref = add.options(resources={"widget": 1}).remote(2, 3)
    assert jpar.get(ref, timeout=60) == 5
    b = backends.current()
    key = b.key(ref.id)

    def restrictions(dask_scheduler, key=key):
        ts = dask_scheduler.tasks.get(key)
        return dict(ts.resource_restrictions or {}) if ts is not None else None

    assert client.run_on_scheduler(restrictions) == {"CPU": 1.0, "widget": 1}
    assert jpar.cluster_resources() == {"CPU": 2.0, "widget": 2.0}


def test_output_is_live_under_the_task_id_with_the_submit_context(on_client):
    got: list = []
    first = threading.Event()
    last = threading.Event()

    def handler(chunk, ctx):
        got.append((chunk, ctx))
        if "hello live" in chunk.text:
            first.set()
        if "after" in chunk.text:
            last.set()

    hooks.set_front_end(lambda tid: f"cell-{tid}", handler)
    try:
        with tempfile.TemporaryDirectory() as d:
            marker = os.path.join(d, "go")
            ref = wait_for_file.remote(marker, "hello live")
            assert first.wait(60), got
            assert hooks.task_ids_done([ref.id]) == []            # printed while the task still runs
            assert ref.id in hooks.pending_tasks()
            pathlib.Path(marker).touch()
            pid = jpar.get(ref, timeout=60)
            assert last.wait(30), got
        chunk, ctx = next((c, x) for c, x in got if "hello live" in c.text)
        assert chunk.task_id == ref.id and ctx == f"cell-{ref.id}" and chunk.stream == "stdout"
        assert chunk.pid == pid != os.getpid() and chunk.name.endswith("wait_for_file")
        assert chunk.engine_id in {e["id"] for e in hooks.engines()}
        assert any(c.stream == "stderr" and "to stderr" in c.text and c.task_id == ref.id for c, _ in got)
    finally:
        hooks.set_front_end(None, None)


def test_dashboard_events_tasks_and_metrics(on_client):
    sub = hooks.subscribe_events()
    try:
        a = add.remote(1, 1)
        b = add.remote(a, 1)
        bad = fail.remote("nope")
        assert jpar.get(b, timeout=60) == 3
        with pytest.raises(KeyError):
            jpar.get(bad, timeout=60)
        seen: dict = {}
        metrics: dict = {}
        engines = {e["id"] for e in hooks.engines()}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for e in sub.poll(0.5):
                if e.kind == "task":
                    seen.setdefault(e.key, []).append((e.state, e.info))
                elif e.kind == "metrics":
                    metrics[e.key] = e.info
            if ("done" in _st(seen, b.id) and "failed" in _st(seen, bad.id) and set(metrics) >= engines):
                break
        assert "done" in _st(seen, b.id) and "failed" in _st(seen, bad.id), seen
        waiting = next(info for s, info in seen[b.id] if s == "waiting")
        assert waiting["deps"] == [a.id] and waiting["name"].endswith("add")
        running = next(info for s, info in seen[b.id] if s == "running")
        assert running["engine"] in engines
        assert set(metrics) >= engines and all(m["rss"] > 0 for m in metrics.values()), metrics
        stats = hooks.store_statistics(timeout=30)
        assert stats and all({"used", "capacity", "spilled"} <= set(h) for h in stats.values())
        assert all(h["capacity"] > 0 for h in stats.values())
    finally:
        sub.close()


def test_remote_cells_keep_a_namespace_per_worker(on_client):
    from jpar.notebook import engine_ns

    runner = jpar.remote(engine_ns.run_cell)
    engines = hooks.engines()
    assert len(engines) == 2
    key = f"test-{os.getpid()}"
    for e in engines:
        first = runner.options(placement=e["id"], max_retries=0).remote(key, f"x = {e['id']} + 40", "<c1>")
        second = runner.options(placement=e["id"], max_retries=0).remote(key, "x + 1", "<c2>", None, ("x",))
        r1, r2 = jpar.get([first, second], timeout=60)
        assert r1["pid"] == r2["pid"] == e["pid"]
        assert engine_ns.unportable(r2["value"]) == e["id"] + 41
        assert engine_ns.unportable(r2["pulled"]["x"]) == e["id"] + 40
    with pytest.raises(jpar.ResourceError):
        runner.options(placement=99).remote(key, "1", "<c3>")


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _st(seen: dict, key: int) -> list:
    return [s for s, _ in seen.get(key, ())]


def _events(sub, task_id: int, state: str, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in sub.poll(0.5) if e.kind == "task" and e.key == task_id and e.state == state]
        if found:
            return found
    return []


def _states_of(sub, task_id: int, until: str, timeout: float = 60) -> list:
    states: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and until not in states:
        states += [e.state for e in sub.poll(0.5) if e.kind == "task" and e.key == task_id]
    return states


def test_a_local_cluster_starts_beside_another_dask_dashboard_on_loopback_only():
    """Port 8787 (Dask's default dashboard port) taken by another cluster: init(backend="dask") starts
    without a warning, and its scheduler listens on 127.0.0.1 only (a fresh interpreter, warnings
    as errors; the scheduler's HTTP server used to ask for 8787 and warn, and the test suite's own
    warnings-as-errors then failed the start)."""
    code = textwrap.dedent("""
        import socket, warnings
        warnings.simplefilter("error")
        taken = socket.socket()
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        except OSError:
            pass                      # in use already: the case under test
        import jpar
        if __name__ == "__main__":
            jpar.init(backend="dask", num_engines=1)
            b = jpar.backends.current()
            scheduler = b._cluster.scheduler
            hosts = {scheduler.address.split("://")[1].rsplit(":", 1)[0], scheduler.http_server.address}
            print(sorted(hosts), scheduler.http_server.port != 8787)
            jpar.shutdown()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "['127.0.0.1'] True", out.stdout + out.stderr[-1000:]
