"""The dashboard widget's model, asserted from Python: nodes, states, grouping, throttling, life cycle;
the DAG layout; progress reporting for long get/wait."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import psutil

import pytest

import jpar
from jpar import hooks
from jpar.notebook import dag_layout, progress
from jpar.notebook.dashboard import Dashboard, DashboardModel, normalize_store
from jpar.runtime.wire.protocol import Event

pytestmark = pytest.mark.timeout(90)


def ev(kind, key, state, info=None, t=None):
    return Event(time.time() if t is None else t, kind, key, state, info)


def submitted(tid, name="f", deps=(), parent=0, actor=0, state="queued"):
    info = {"name": name, "deps": deps, "parent": parent, "owner": 1}
    if actor:
        info["actor"] = actor
    return ev("task", tid, state, info)


def test_dashboard_needs_a_cluster():
    code = ("import jpar\ntry:\n    jpar.dashboard()\nexcept jpar.NotInitializedError:\n    print('refused')\n"
            "else:\n    print('made a dashboard')\n")    # a fresh interpreter: surely no cluster
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "refused", out.stdout + out.stderr


# ---------------------------------------------------------------- layout (pure)
def test_layout_puts_every_edge_left_to_right():
    nodes = list(range(8))
    edges = [(0, 2), (1, 2), (2, 3), (3, 4), (0, 5), (5, 4), (6, 7)]
    pos = dag_layout.layered_layout(nodes, edges)
    assert set(pos) == set(nodes)
    for a, b in edges:
        assert pos[a][0] < pos[b][0]
    assert len(set(pos.values())) == len(nodes)        # no two nodes on one spot


def test_layout_survives_cycles_and_wraps_tall_layers():
    pos = dag_layout.layered_layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
    assert len(pos) == 3
    wide = dag_layout.layered_layout(list(range(100)), [], max_rows=10)
    assert max(y for _, y in wide.values()) < 10
    assert len({x for x, _ in wide.values()}) == 10
    assert len(set(wide.values())) == 100


def test_layout_of_200_nodes():
    """The size benchmarks/dashboard_cost.py times (--model): every node placed once, edges left to right."""
    nodes = list(range(200))
    edges = [(i, i + 1) for i in range(0, 199, 2)] + [(i, i + 3) for i in range(0, 190, 5)]
    pos = dag_layout.layered_layout(nodes, edges)
    assert set(pos) == set(nodes) and len(set(pos.values())) == 200
    for a, b in edges:
        assert pos[a][0] < pos[b][0], (a, b, pos[a], pos[b])


# ---------------------------------------------------------------- model (pure)
def test_model_tracks_nodes_edges_and_states():
    m = DashboardModel(group_above=10)
    m.apply([submitted(1), submitted(2, deps=(1,), state="waiting"), ev("task", 1, "running", {"engine": 0}, t=10.0),
             ev("task", 1, "done", None, t=10.5), submitted(3, name="g", parent=2)])
    g = m.snapshot_graph()
    assert g["mode"] == "tasks"
    assert [n[1] for n in g["nodes"]] == ["f", "f", "g"]
    assert sorted(map(tuple, g["edges"])) == [(0, 1), (1, 2)]       # ref dependency, parent -> child
    assert all(g["nodes"][a][2] < g["nodes"][b][2] for a, b in g["edges"])
    st = m.snapshot_states(time.time())
    assert st["1"] == ["done", 0, 0.5, None]
    assert st["2"][0] == "waiting" and st["3"][0] == "queued"
    assert m.counts["done"] == 1 and m.counts["waiting"] == 1 and m.counts["queued"] == 1
    m.apply([ev("task", 2, "queued"), ev("task", 2, "running", {"engine": 1}), ev("task", 2, "failed")])
    assert m.snapshot_states(time.time())["2"][:2] == ["failed", 1]
    totals = m.snapshot_totals(time.monotonic())
    assert totals["states"] == {"done": 1, "failed": 1, "queued": 1} and totals["tasks"] == 3


def test_model_groups_past_the_threshold_with_counts_per_state():
    m = DashboardModel(group_above=50)
    m.apply([submitted(i, name="f") for i in range(1, 41)])
    assert m.snapshot_graph()["mode"] == "tasks"
    m.apply([submitted(100 + i, name="g", deps=(i,)) for i in range(1, 21)])     # 60 tasks > 50
    m.apply([ev("task", 100 + i, "done") for i in range(1, 6)])
    g = m.snapshot_graph()
    assert g["mode"] == "groups"
    assert [n[0] for n in g["nodes"]] == ["fn:f", "fn:g"]
    assert g["edges"] == [[0, 1]]
    st = m.snapshot_states(time.time())
    assert st["fn:f"][0] == {"queued": 40}
    assert st["fn:g"][0] == {"queued": 15, "done": 5}


def test_model_handles_100000_tasks():
    """100,000 tasks of 7 functions (benchmarks/dashboard_cost.py --model times this): one group
    per function, each with exactly its tasks, all done; the totals count every task once."""
    m = DashboardModel()
    n = 100_000
    batch = [submitted(i, name=f"f{i % 7}", deps=(i - 1,) if i % 3 else ()) for i in range(1, n + 1)]
    batch += [ev("task", i, s, {"engine": i % 2} if s == "running" else None)
              for i in range(1, n + 1) for s in ("running", "done")]
    m.apply(batch)
    g = m.snapshot_graph()
    st = m.snapshot_states(time.time())
    totals = m.snapshot_totals(time.monotonic())
    assert g["mode"] == "groups" and sorted(n[0] for n in g["nodes"]) == [f"fn:f{k}" for k in range(7)]
    # 100,000 = 7 * 14,285 + 5: the residues 1..5 have one task more than 0 and 6
    assert {k: c[0] for k, c in st.items()} == {f"fn:f{k}": {"done": 14_286 if 1 <= k <= 5 else 14_285}
                                               for k in range(7)}
    # task i depends on i - 1 unless 3 divides i: f(k-1) -> f(k) for every k, nothing else
    assert sorted((g["nodes"][a][0], g["nodes"][b][0]) for a, b in g["edges"]) == \
        sorted((f"fn:f{(k - 1) % 7}", f"fn:f{k}") for k in range(7))
    assert totals["states"] == {"done": n} and totals["tasks"] == n and totals["finished"] == n
    assert totals["events"] == 3 * n


def test_engine_figures_are_unknown_until_its_first_sample():
    """An engine that joined but has not been sampled shows no figures (the browser shows "-"),
    not 0 % CPU and 0 MiB; the head's status reports rss 0 for such an engine."""
    m = DashboardModel()
    m.apply([ev("engine", 3, "alive", {"pid": 13, "node": "n"})])
    m.apply_status({"engines": [{"id": 3, "pid": 13, "node": "n", "cpu": 0.0, "rss": 0, "shared": 0, "task": 0}]})
    e = m.snapshot_engines()[0]
    assert (e["cpu"], e["rss"], e["heap"], e["shared"]) == (None, None, None, None), e
    assert e["hist_cpu"] == []
    m.apply([ev("metrics", 3, "sample", {"cpu": 12.0, "rss": 300, "shared": 100, "task": 0, "node": "n", "pid": 13})])
    e = m.snapshot_engines()[0]
    assert (e["cpu"], e["rss"], e["heap"], e["shared"]) == (12.0, 300, 200, 100), e
    m2 = DashboardModel()    # a status row with a sample (rss > 0) counts as the first sample
    m2.apply_status({"engines": [{"id": 1, "pid": 9, "node": "n", "cpu": 5.0, "rss": 500, "shared": 0, "task": 0}]})
    assert m2.snapshot_engines()[0]["cpu"] == 5.0


def test_model_reads_metrics_engines_actors_and_store():
    m = DashboardModel()
    m.apply([ev("engine", 0, "alive", {"pid": 11, "node": "n"}),
             ev("metrics", 0, "sample", {"cpu": 50.0, "rss": 300, "shared": 100, "task": 0, "node": "n", "pid": 11}),
             ev("metrics", 0, "sample", {"cpu": 90.0, "rss": 400, "shared": 100, "task": 0, "node": "n", "pid": 11}),
             ev("actor", 7, "pending", {"class": "Counter", "name": "c", "stimulus": "x"}),
             ev("actor", 7, "alive", {"incarnation": 0}), ev("actor", 7, "process", {"pid": 99}),
             submitted(20, name="Counter.incr", actor=7)])
    e = m.snapshot_engines()[0]
    assert e["cpu"] == 90.0 and e["heap"] == 300 and e["hist_cpu"] == [50.0, 90.0]
    actors = m.snapshot_totals(time.monotonic())["actors"]
    assert actors == [{"id": "7", "class": "Counter", "name": "c", "state": "alive", "calls": {"queued": 1}}]
    m.apply([ev("engine", 0, "dead", {"why": "test"})])
    assert m.snapshot_engines() == []
    assert normalize_store(None) is None
    store = normalize_store({"hosts": {"h1": {"used_bytes": 10, "capacity": 100, "spilled": 0}},
                             "largest": [(255, 64, "driver 1")]})
    assert store == {"hosts": [{"host": "h1", "used": 10, "capacity": 100, "spilled": 0, "objects": None}],
                     "largest": [{"id": "ff", "size": 64, "owner": "driver 1"}]}
    # the object store's own shape: {node: StoreStatistics(..., objects=(ObjectInfo, ...))}
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Info:
        object_id: int
        size: int
        owner: int

    @dataclasses.dataclass(frozen=True)
    class Stats:
        node: str
        bytes_used: int
        capacity: int
        spilled_bytes: int
        object_count: int
        objects: tuple

    store = normalize_store({"n0": Stats("n0", 300, 1000, 5, 2, (Info(16, 100, 1), Info(17, 200, 2)))})
    assert store["hosts"] == [{"host": "n0", "used": 300, "capacity": 1000, "spilled": 5, "objects": 2}]
    assert [o["id"] for o in store["largest"]] == ["11", "10"] and store["largest"][0]["owner"] == "client 2"


# ---------------------------------------------------------------- live widget
@jpar.remote
def nap(seconds, *deps):
    time.sleep(seconds)
    return seconds


@jpar.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self, k=1):
        self.n += k
        return self.n


def wait_for(boards, pred, timeout=30.0) -> bool:
    """Wait until ``pred()`` holds, re-checking it whenever a trait of the dashboard(s) ``boards``
    changes (their updater threads set the traits); False after ``timeout`` seconds."""
    boards = boards if isinstance(boards, (list, tuple)) else [boards]
    changed = threading.Condition()

    def notify(_change):
        with changed:
            changed.notify_all()

    for b in boards:
        b.observe(notify)
    try:
        deadline = time.monotonic() + timeout
        with changed:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                changed.wait(left)
        return True
    finally:
        for b in boards:
            b.unobserve(notify)


def engine_pids() -> set:
    """The pids of this cluster's engine processes (and actor processes: the same program), as the
    operating system lists them."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if any("jpar.runtime.engine.engine" in part for part in p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


class SentUpdates:
    """Counts the state updates a widget's comm really sends (not what the dashboard says it did)."""

    def __init__(self, widget):
        self.times: list = []
        self.keys: list = []
        send = widget.comm.send

        def counting_send(data=None, metadata=None, buffers=None):
            if isinstance(data, dict) and data.get("method") == "update":
                self.times.append(time.monotonic())
                self.keys.append(sorted(data.get("state", {})))
            return send(data=data, metadata=metadata, buffers=buffers)

        widget.comm.send = counting_send


@pytest.fixture()
def board(cluster):
    boards = []

    def make(**kw):
        b = jpar.dashboard(**kw)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.close()


def test_dashboard_shows_tasks_actor_calls_and_engines(board):
    d = board()
    assert repr(d) == "jpar.Dashboard()"
    engines = engine_pids()               # before the actor's process starts
    assert len(engines) == 2, engines
    a = nap.remote(1.5)
    b = nap.remote(0.05, a)
    c = Counter.remote()
    call = c.incr.remote()
    ids = {f"{r.id:x}" for r in (a, b, call)}
    assert wait_for(d, lambda: ids <= set(d.states) and d.states[f"{a.id:x}"][0] == "running"), d.states
    assert d.states[f"{b.id:x}"][0] == "waiting"
    jpar.get([b, call])
    assert wait_for(d, lambda: all(d.states.get(i, [""])[0] == "done" for i in ids)), d.states
    nodes = {n[0]: n for n in d.graph["nodes"]}
    index = {n[0]: j for j, n in enumerate(d.graph["nodes"])}
    assert nodes[f"{a.id:x}"][1] == "nap" and nodes[f"{call.id:x}"][1] == "Counter.incr"
    assert [index[f"{a.id:x}"], index[f"{b.id:x}"]] in d.graph["edges"]
    assert d.states[f"{a.id:x}"][1] in (0, 1) and d.states[f"{a.id:x}"][2] >= 1.4
    assert wait_for(d, lambda: len(d.engines) == 2 and all(e["hist_cpu"] for e in d.engines)), d.engines
    assert {e["pid"] for e in d.engines} == engines, (d.engines, engines)   # the real processes
    assert all(e["rss"] > 0 and e["heap"] == e["rss"] - e["shared"] for e in d.engines), d.engines
    assert wait_for(d, lambda: any(x["class"] == "Counter" for x in d.totals.get("actors", []))), d.totals
    assert d.totals["store"] is None or "hosts" in d.totals["store"]
    jpar.kill(c)


def test_updates_are_throttled_and_batched(board):
    d = board(max_hz=4)
    sent = SentUpdates(d)                            # counted where they leave: the widget's comm
    assert wait_for(d, lambda: d.status == "live"), d.status       # its first update went out
    n0, t0 = len(sent.times), time.monotonic()
    refs = [nap.remote(0.0) for _ in range(3000)]
    jpar.get(refs)
    assert wait_for(d, lambda: d.totals.get("finished", 0) == 3000), d.totals
    elapsed = time.monotonic() - t0
    updates = len(sent.times) - n0
    # 3000 tasks make >= 9000 events; they reach the browser in a few updates, <= 4 a second
    assert 1 <= updates <= 4 * elapsed + 2, (updates, elapsed)
    assert all(len(keys) >= 2 for keys in sent.keys), sent.keys    # each update carries several traits
    assert d.graph["mode"] == "groups" and [n[0] for n in d.graph["nodes"]] == ["fn:nap"], d.graph
    assert d.states["fn:nap"][0] == {"done": 3000}, d.states
    st = d.statistics()
    assert st.events >= 3 * 3000 and st.running      # queued, (assigned,) running, done per task


def test_closing_stops_the_thread_and_several_dashboards_work(board):
    d1, d2 = board(), board()
    ref = nap.remote(0.0)
    jpar.get(ref)
    key = f"{ref.id:x}"
    assert wait_for([d1, d2], lambda: key in d1.states and key in d2.states)
    d1.close()
    assert not d1.running and d1._sub.closed
    ref2 = nap.remote(0.0)
    jpar.get(ref2)
    assert wait_for(d2, lambda: f"{ref2.id:x}" in d2.states)
    assert f"{ref2.id:x}" not in d1.states and d2.running
    assert not [t for t in threading.enumerate() if t.name == "jpar-dashboard" and t is d1._thread]


def test_dashboard_magic(cluster):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "jpar")
        d = shell.run_line_magic("jpar", "dashboard")
        assert isinstance(d, Dashboard) and d.running
        d.close()
        assert not d.running
    finally:
        shell.run_line_magic("unload_ext", "jpar")
        InteractiveShell.clear_instance()
    assert hooks.progress_reporter() is None


# ---------------------------------------------------------------- progress
def test_text_progress_for_long_get_and_wait(cluster):
    out = io.StringIO()
    progress.enable("text", delay=0.2, stream=out)
    try:
        jpar.get([nap.remote(0.0) for _ in range(5)])            # short: nothing shown
        assert out.getvalue() == ""
        refs = [nap.remote(0.05) for _ in range(20)]
        assert jpar.get(refs) == [0.05] * 20
        text = out.getvalue()
        assert "jpar.get: 20/20" in text and text.endswith("done\n")
        ready, rest = jpar.wait([nap.remote(0.05) for _ in range(20)], num_returns=10)
        assert len(ready) == 10
        assert "jpar.wait: 10/10" in out.getvalue()
        jpar.get(rest)
        before = out.getvalue()
        jpar.wait([nap.remote(0.5), nap.remote(0.5)], num_returns=1)   # one ref to wait for: nothing shown
        assert out.getvalue() == before
    finally:
        progress.disable()
    assert hooks.progress_reporter() is None


# ---------------------------------------------------------------- optional dependencies
MISSING = [
    # (module made unimportable, code that needs it, pip command the error must name)
    ("anywidget", "import jpar; jpar.dashboard()", "pip install 'jpar[notebook]'"),
    ("traitlets", "import jpar; jpar.dashboard()", "pip install 'jpar[notebook]'"),
    ("ipywidgets", "from jpar.notebook import progress; progress.ProgressBar(2, 'x')", "pip install 'jpar[notebook]'"),
    ("IPython", "import jpar.notebook.magics", "pip install 'jpar[notebook]'"),
    ("IPython", "import jpar; jpar.load_ipython_extension(None)", "pip install 'jpar[notebook]'"),
    ("joblib", "import jpar.joblib", "pip install joblib"),
    ("jupyter_server", "import jpar.labserver", "pip install jupyterlab"),
]


@pytest.mark.parametrize("module,code,install", MISSING, ids=[f"{m}:{c.split(';')[-1].strip()}" for m, c, _ in MISSING])
def test_a_missing_optional_dependency_says_which_extra_to_install(module, code, install):
    """Without an optional dependency jpar raises MissingExtraError (a JparError and an ImportError)
    naming the pip command, not a bare ModuleNotFoundError. The module is made unimportable in a
    fresh interpreter (``sys.modules[name] = None``), so the real import statement fails."""
    import subprocess
    import sys

    script = (f"import sys\nsys.modules[{module!r}] = None\n"
              "import jpar\n"
              "try:\n"
              f"    exec({code!r})\n"
              "except jpar.JparError as exc:\n"
              "    assert isinstance(exc, ImportError), type(exc).__mro__\n"
              "    print(type(exc).__name__ + ': ' + str(exc))\n"
              "else:\n"
              "    print('no error')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MissingExtraError: "), out.stdout + out.stderr
    assert install in out.stdout and module in out.stdout, out.stdout


def test_sidebar_engine_figures_are_unknown_until_its_first_sample():
    """The sidebar's snapshot (jpar.labserver, the Jupyter server side) likewise: cpu and rss are None
    (the sidebar shows "-") until a metrics event or the head's copy of a sample (rss > 0) exists."""
    from jpar.labserver import status_snapshot

    st = {"engines": [{"id": 0, "pid": 10, "node": "n", "cpu": 0.0, "rss": 0, "task": 0, "queued": 0},
                      {"id": 1, "pid": 11, "node": "n", "cpu": 3.0, "rss": 900, "task": 0, "queued": 0},
                      {"id": 2, "pid": 12, "node": "n", "cpu": 0.0, "rss": 0, "task": 0, "queued": 0}]}
    rows = status_snapshot(st, {}, {2: {"cpu": 0.0, "rss": 700, "task": 0}})["engines"]
    assert [(r["cpu"], r["rss"]) for r in rows] == [(None, None), (3.0, 900), (0.0, 700)], rows
