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
from jpar import call_sites, hooks
from jpar.notebook import dag_layout, progress
from jpar.notebook.dashboard import Dashboard, DashboardModel
from jpar.notebook.store_view import normalize_store
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
    assert st["1"] == ["done", 0, 0.5, None, 10.0, 10.5, None, None, None]   # no wait, fetch or args known
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


def test_model_groups_a_function_by_call_site():
    """One function submitted from two blocks of code is two groups, each labelled with its block once
    there are two (the lines of one block are one group); tasks of another process (no site known
    here) form the function's own group."""
    sites = {i: ("/home/u/prep.py", 17 + i % 3, "load") for i in range(1, 201)}     # three lines of load()
    sites.update({i: ("/home/u/prep.py", 30, "<module>") for i in range(201, 401)})
    m = DashboardModel(group_above=50, site_of=sites.get)
    m.apply([submitted(i, name="f") for i in range(1, 201)])
    g = m.snapshot_graph()
    assert [n[:2] for n in g["nodes"]] == [["fn:f@prep.py in load", "f"]]     # one block: the name alone
    m.apply([submitted(i, name="f", deps=(i - 200,)) for i in range(201, 401)])
    m.apply([submitted(1000, name="f")])
    g = m.snapshot_graph()
    assert [n[:2] for n in g["nodes"]] == [["fn:f@prep.py in load", "f @ prep.py in load"],
                                          ["fn:f@prep.py", "f @ prep.py"],
                                          ["fn:f", "f (other drivers)"]]
    assert g["edges"] == [[0, 1]]
    st = m.snapshot_states(time.time())
    assert [st[k][0] for k in ("fn:f@prep.py in load", "fn:f@prep.py", "fn:f")] == \
        [{"queued": 200}, {"queued": 200}, {"queued": 1}]


def test_a_task_seen_before_its_submission_noted_its_site_waits_for_it():
    """The head may publish a task's first events before the .remote() that made it returns and notes
    its site (seen in a loaded run: one task of a loop became a group of its own): while a submission
    of this process is in flight, such a task's events wait for the next apply(), in order; with no
    submission in flight (or after DEFER_S) it is another driver's task and groups by function alone."""
    sites: dict = {}
    submitting = {1}
    m = DashboardModel(group_above=0, site_of=sites.get, submitting=submitting)
    m.apply([submitted(7, name="f"), ev("task", 7, "running", {"engine": 0})])
    assert m.snapshot_graph()["nodes"] == [] and m.tasks == {}          # waiting for its site
    sites[7] = ("/home/u/prep.py", 3, "<module>")
    submitting.clear()
    m.apply([ev("task", 7, "done")])
    assert [n[:2] for n in m.snapshot_graph()["nodes"]] == [["fn:f@prep.py", "f"]]
    assert m.snapshot_states(time.time())["fn:f@prep.py"][0] == {"done": 1}    # every event, in order
    m.apply([submitted(8, name="f")])                                  # nothing in flight: not ours
    assert [n[0] for n in m.snapshot_graph()["nodes"]] == ["fn:f@prep.py", "fn:f"]
    submitting.add(1)
    m.apply([submitted(9, name="f")])
    m._deferred_keys[9] -= 10                                          # waited past DEFER_S
    m.apply([])
    assert m.snapshot_states(time.time())["fn:f"][0] == {"queued": 2}


def test_call_sites_never_name_an_id_they_did_not_note(monkeypatch):
    """Ray's task ids are random: a run must not span ids another process made (a nested task's event
    would read as this notebook's line), and an id dropped from the out-of-order table must read as
    unknown, not as the run around it."""
    import random

    from jpar import call_sites as cs

    for name, empty in (("_firsts", []), ("_runs", []), ("_odd", {})):
        monkeypatch.setattr(cs, name, empty)
    rng = random.Random(7)
    ids = [rng.getrandbits(46) << 16 for _ in range(30_000)]   # as jpar.backends.ray.worker.new_id makes them
    for i in ids:
        cs.note(i, 1)
    line = sys._getframe().f_lineno - 1
    assert all(cs.site_of(i) == (__file__, line, "test_call_sites_never_name_an_id_they_did_not_note")
               for i in ids[-2000:])
    assert not any(cs.site_of(rng.getrandbits(46) << 16) for _ in range(2000))      # never noted here
    assert sum(cs.site_of(i) is not None for i in ids) < len(ids)      # the oldest went, as unknown
    for i in range(1, 1001):                                          # counting ids (native, Dask): one run
        cs.note((1 << 63) + i, 1)
    assert cs._runs[-1][:2] == [(1 << 63) + 1, (1 << 63) + 1000]


def test_call_sites_name_the_users_line_even_through_jpars_own_code(cluster):
    """The site noted for a task is the user's line and function (a comprehension's enclosing one): a
    loop's tasks share one record (a run), a Pool's tasks are named by the line that called map
    (jpar's own frames are skipped)."""
    from jpar import call_sites

    me = test_call_sites_name_the_users_line_even_through_jpars_own_code.__name__
    refs = [length.remote(b"x") for _ in range(50)]; line = sys._getframe().f_lineno
    assert {call_sites.site_of(r.id) for r in refs} == {(__file__, line, me)}
    assert len({tuple(r[:3]) for r in call_sites._runs if r[0] <= refs[-1].id and r[1] >= refs[0].id}) == 1
    one = length.remote(b"y"); line1 = sys._getframe().f_lineno
    assert call_sites.site_of(one.id) == (__file__, line1, me)
    assert call_sites.site_of(jpar.put(1).id) is None             # a put is not a task
    assert jpar.get(refs + [one], timeout=60) == [1] * 51
    from jpar.multiprocessing import Pool

    with Pool(2) as pool:
        res = pool.map_async(len, ["ab", "c"]); line2 = sys._getframe().f_lineno
        assert res.get(timeout=60) == [2, 1]
    seen = {site for site in (call_sites.site_of(i) for i in range(one.id + 1, one.id + 200)) if site}
    assert seen == {(__file__, line2, me)}, seen


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


def test_layout_gives_each_actor_a_lane_with_its_calls_in_order():
    """Actor calls sit on their actor's row, below every free task, each call right of the one before;
    free tasks keep their left-to-right layout."""
    nodes = ["a", "b", "c1", "c2", "c3", "d1", "x"]
    lanes = {"c1": "C", "c2": "C", "c3": "C", "d1": "D"}
    edges = [("a", "b"), ("b", "c2"), ("a", "x")]
    pos, rows = dag_layout.lane_layout(nodes, edges, lanes)
    assert [r[0] for r in rows] == ["C", "D"]
    row = dict(rows)
    assert {pos[n][1] for n in ("c1", "c2", "c3")} == {row["C"]} and pos["d1"][1] == row["D"]
    assert pos["c1"][0] < pos["c2"][0] < pos["c3"][0]
    free_bottom = max(pos[n][1] for n in ("a", "b", "x"))
    assert row["C"] > free_bottom and row["D"] > row["C"]
    assert pos["a"][0] < pos["b"][0] and pos["a"][0] < pos["x"][0]
    assert len(set(pos.values())) == len(nodes)


def test_model_sends_actor_lanes_and_task_times():
    m = DashboardModel()
    m.apply([ev("actor", 7, "alive", {"class": "Accumulator"}),
             submitted(1, name="load"), submitted(2, name="Accumulator.add", actor=7, deps=(1,)),
             submitted(3, name="Accumulator.add", actor=7),
             ev("task", 1, "running", {"engine": 0}, t=100.0), ev("task", 1, "done", None, t=101.5)])
    g = m.snapshot_graph()
    kinds = {n[0]: n[4] for n in g["nodes"]}
    assert kinds == {"1": "task", "2": "call", "3": "call"}
    assert g["lanes"] == [["actor:7", "Accumulator actor", g["nodes"][1][3]]]
    assert g["nodes"][1][3] == g["nodes"][2][3] > g["nodes"][0][3] and g["nodes"][1][2] < g["nodes"][2][2]
    st = m.snapshot_states(200.0)
    assert st["1"] == ["done", 0, 1.5, None, 100.0, 101.5, None, None, None]
    assert st["2"][4:6] == [None, None] and st["2"][8] == [None, [["1", None]]]   # a ref, its size unknown


def test_a_group_expands_into_its_newest_tasks_and_folds_back():
    m = DashboardModel(group_above=20)
    m.apply([submitted(i, name="f" if i % 2 else "g") for i in range(1, 301)])
    m.apply([ev("task", 2, "running", {"engine": 1})])
    g = m.snapshot_graph()
    assert g["mode"] == "groups" and sorted(n[0] for n in g["nodes"]) == ["fn:f", "fn:g"]
    version = g["version"]
    m.expand("fn:g")
    g = m.snapshot_graph()
    assert g["version"] > version and g["expanded"] == "fn:g"
    tasks = [n for n in g["nodes"] if n[4] == "task"]
    assert [n[0] for n in g["nodes"] if n[4] != "task"] == ["fn:f", "fn:g"]       # g stays, to fold it
    assert len(tasks) == 150 and {n[1] for n in tasks} == {"g"}          # the 150 tasks of g (<= EXPAND_MAX)
    assert len({(n[2], n[3]) for n in g["nodes"]}) == len(g["nodes"])    # no two on one spot
    st = m.snapshot_states(time.time())
    assert st["2"][:2] == ["running", 1] and st["fn:f"][0] == {"queued": 150}
    m.expand("fn:g")                                                     # the same key again folds it
    g = m.snapshot_graph()
    assert g["expanded"] is None and all(n[4] != "task" for n in g["nodes"])
    m.expand("fn:nope")                                                  # an unknown key: nothing open
    assert m.snapshot_graph()["expanded"] is None


def test_task_stream_bars_per_engine_merged_and_capped():
    from jpar.notebook.task_stream import TaskStream

    m = DashboardModel()
    now = 1000.0
    m.apply([submitted(1, name="f"), submitted(2, name="g"), submitted(3, name="f"), submitted(9, name="old"),
             ev("task", 9, "running", {"engine": 0}, t=now - 90), ev("task", 9, "done", None, t=now - 80),
             ev("task", 1, "running", {"engine": 0}, t=now - 10), ev("task", 1, "done", None, t=now - 8),
             ev("task", 2, "running", {"engine": 1}, t=now - 5), ev("task", 2, "failed", None, t=now - 4),
             ev("task", 3, "running", {"engine": 0}, t=now - 2)])
    s = m.snapshot_stream(now)
    assert s["window"] == 60.0 and s["rows"] == [[0, "engine 0"], [1, "engine 1"]]
    bars = {(b[0], s["names"][b[3]], b[5]): b for b in s["bars"]}
    assert set(bars) == {(0, "f", "done"), (1, "g", "failed"), (0, "f", "running")}     # "old" left the window
    assert bars[(0, "f", "done")][1:3] == [-10.0, -8.0] and bars[(0, "f", "running")][2] is None
    assert bars[(1, "g", "failed")][4] == "2"
    # an actor's call runs in the actor's own process (no engine): its row is the actor's
    m.apply([ev("actor", 7, "alive", {"class": "Acc"}), submitted(4, name="Acc.add", actor=7),
             ev("task", 4, "running", {}, t=now - 3), ev("task", 4, "done", None, t=now - 2.5)])
    s = m.snapshot_stream(now)
    assert s["rows"] == [[0, "engine 0"], [1, "engine 1"], ["actor:7", "Acc actor"]], s["rows"]
    assert [b[0] for b in s["bars"] if s["names"][b[3]] == "Acc.add"] == ["actor:7"]
    # back-to-back runs of one function on one engine are one bar; at most max_bars bars go out
    ts = TaskStream(window=60.0, max_bars=50)
    for i in range(1000):
        ts.finished(i, [], now - 50 + i * 0.04, now - 50 + i * 0.04 + 0.0399, i % 2, "h", "done")
    assert len(ts.snapshot(now)["bars"]) == 2 and ts.snapshot(now)["bars"][0][6] == 500
    for i in range(1000):
        ts.finished(i, [], now - 50 + i * 0.04, now - 50 + i * 0.04 + 0.01, 0, f"k{i % 3}", "done")
    snap = ts.snapshot(now)
    ends = sorted(b[2] for b in snap["bars"])        # 1000 unmergeable bars + the 2 above: the newest 50 kept
    assert len(ends) == 50 and ends[-1] == pytest.approx(-10.0, abs=1e-3) and ends[0] > -12.5, ends
    with pytest.raises(ValueError, match="window"):
        TaskStream(window=0)


def test_a_task_taken_back_from_a_busy_engine_waited_since_it_first_became_ready():
    """Prefetched behind a long task and taken back unstarted (assigned -> queued), a task run elsewhere
    at once waited from its first queued event, not its second (a CI run read 0 s for such a task);
    a retry (running -> queued) waits anew."""
    m = DashboardModel()
    now = 1000.0
    m.apply([ev("task", 1, "queued", {"name": "nap", "deps": (), "parent": 0, "owner": 1, "args": 40}, t=now - 9),
             ev("task", 1, "assigned", {"engine": 0}, t=now - 9), ev("task", 1, "queued", None, t=now - 5),
             ev("task", 1, "running", {"engine": 1}, t=now - 5), ev("task", 1, "done", None, t=now - 4),
             ev("task", 2, "queued", {"name": "nap", "deps": (), "parent": 0, "owner": 1, "args": 40}, t=now - 9),
             ev("task", 2, "running", {"engine": 0}, t=now - 8), ev("task", 2, "queued", None, t=now - 7),
             ev("task", 2, "running", {"engine": 0}, t=now - 6.5), ev("task", 2, "done", None, t=now - 6)])
    st = m.snapshot_states(now)
    assert st["1"][6] == 4.0 and st["2"][6] == 0.5, (st["1"], st["2"])


def test_a_chained_task_was_ready_when_its_argument_ended():
    """A chained task (waiting -> assigned on its argument's engine -> running) has no queued event: its
    wait starts when its argument's task ended, not at its submission."""
    m = DashboardModel()
    now = 1000.0
    m.apply([ev("task", 1, "queued", {"name": "a", "deps": (), "parent": 0, "owner": 1, "args": 40}, t=now - 9),
             ev("task", 1, "running", {"engine": 0}, t=now - 9),
             ev("task", 2, "waiting", {"name": "b", "deps": (1,), "parent": 0, "owner": 1, "args": 40}, t=now - 9),
             ev("task", 2, "assigned", {"engine": 0}, t=now - 9),
             ev("task", 1, "done", None, t=now - 5), ev("task", 2, "running", {"engine": 0}, t=now - 4.5),
             ev("task", 2, "done", None, t=now - 4)])
    assert m.snapshot_states(now)["2"][6] == 0.5


def test_waits_transfers_and_argument_sizes_from_events():
    """The phases Dask's task stream shows: a task's wait runs from its last queued event to its start,
    its transfer is the finished event's ``fetch``; its details give its pickled arguments' bytes
    and each ref argument's value's bytes (the producing task's ``size``, else the store's listing)."""
    m = DashboardModel()
    now = 1000.0
    m.apply([ev("task", 1, "queued", {"name": "load", "deps": (), "parent": 0, "owner": 1, "args": 40}, t=now - 9),
             ev("task", 1, "running", {"engine": 0}, t=now - 9),
             ev("task", 1, "done", {"fetch": 0.0, "size": 5_000_000}, t=now - 8),
             ev("task", 2, "waiting", {"name": "use", "deps": (1, 77), "parent": 0, "owner": 1, "args": 120},
                t=now - 9),
             ev("task", 2, "queued", None, t=now - 8), ev("task", 2, "assigned", {"engine": 1}, t=now - 7.5),
             ev("task", 2, "running", {"engine": 1}, t=now - 6),
             ev("task", 2, "done", {"fetch": 0.5, "size": 10}, t=now - 4),
             ev("task", 3, "queued", {"name": "late", "deps": (), "parent": 0, "owner": 1, "args": 30}, t=now - 3)])
    m.store = {"hosts": [], "largest": [{"id": "4d", "size": 2048}]}          # object 77, a put value
    st = m.snapshot_states(now)
    assert st["1"][6:] == [0.0, None, [40, []]]
    assert st["2"][:2] == ["done", 1] and st["2"][6:8] == [2.0, 0.5]          # ready (queued) -> start; fetch
    assert st["2"][8] == [120, [["1", 5_000_000], ["4d", 2048]]]
    assert st["3"][0] == "queued" and st["3"][6] == 3.0                        # queued for 3 s so far
    s = m.snapshot_stream(now)
    bars = {s["names"][b[3]]: b for b in s["bars"]}
    # [row, start, end, name, task, state, n, ready, fetch, wait]: relative to now
    assert bars["use"][:3] == [1, -6.0, -4.0] and bars["use"][7:] == [-8.0, 0.5, 2.0]
    assert bars["load"][7:] == [None, 0.0, 0.0]                                # no wait: started when queued
    # a backend with no queued event (Dask, Ray): ready when its last argument ended
    m.apply([ev("task", 4, "waiting", {"name": "dask", "deps": (1, 2)}, t=now - 5),
             ev("task", 4, "running", {"engine": 0}, t=now - 2.5), ev("task", 4, "done", {}, t=now - 2)])
    assert m.snapshot_states(now)["4"][6:8] == [1.5, None]                     # task 2 ended at now - 4
    bar = next(b for b in m.snapshot_stream(now)["bars"] if b[4] == "4")
    assert bar[7:] == [-4.0, 0.0, 1.5]
    # back-to-back runs merged into one bar add up their waits and transfers
    from jpar.notebook.task_stream import TaskStream

    ts = TaskStream(window=60.0)
    for i in range(4):
        ts.finished(i, [], now - 10 + i, now - 9 + i, 0, "h", "done", ready=now - 20, fetch=0.25)
    (bar,) = ts.snapshot(now)["bars"]
    assert bar[6] == 4 and bar[7] == -20.0 and bar[8] == 1.0 and bar[9] == 10 + 11 + 12 + 13


def test_fast_samples_make_one_point_a_second_and_live_figures():
    """Engines sample 4 times a second while busy: the figures are the newest sample, the sparkline one
    mean a second (the second in progress included), at most a minute of them."""
    m = DashboardModel()
    sample = lambda cpu, t, rss=1000: ev("metrics", 0, "sample", {"cpu": cpu, "rss": rss, "shared": 0, "task": 0}, t=t)
    m.apply([sample(c, 100.0 + i * 0.25) for i, c in enumerate([10, 20, 30, 40, 100, 100, 100, 100, 60])])
    e = m.snapshot_engines()[0]
    assert e["cpu"] == 60.0 and e["hist_cpu"] == [25.0, 100.0, 60.0], e
    m.apply([sample(50, 102.0 + i * 0.25, rss=2000 + i) for i in range(4 * 90)])
    e = m.snapshot_engines()[0]
    assert len(e["hist_cpu"]) == 60 and set(e["hist_cpu"]) == {50.0} and e["hist_heap"][-1] == 2000 + 359, e


def test_memory_is_measured_against_the_host_where_known():
    m = DashboardModel(host_memory={"here": 8 * 2**30})
    m.apply([ev("engine", 0, "alive", {"pid": 1, "node": "here"}), ev("engine", 1, "alive", {"pid": 2, "node": "far"})])
    assert [(e["id"], e["limit"]) for e in m.snapshot_engines()] == [(0, 8 * 2**30), (1, None)]
    from jpar.notebook.dashboard import local_host_memory
    import socket

    local = local_host_memory()
    assert local[socket.gethostname()] == psutil.virtual_memory().total and "127.0.0.1" in local


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
             ev("metrics", 0, "sample", {"cpu": 50.0, "rss": 300, "shared": 100, "task": 0, "node": "n", "pid": 11}, t=100.0),
             ev("metrics", 0, "sample", {"cpu": 90.0, "rss": 400, "shared": 100, "task": 0, "node": "n", "pid": 11}, t=101.0),
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
                     "largest": [{"id": "ff", "size": 64, "owner": "driver 1", "owner_no": None, "host": "",
                                  "spilled": False}]}
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
    assert store["largest"][0]["host"] == "n0" and store["largest"][0]["owner_no"] == 2
    # Ray's shape: {node id: {host: its address, ...}}: the address names the host
    store = normalize_store({"f00d" * 14: {"host": "10.0.0.5", "bytes_used": 7, "capacity": 9, "objects": [
        {"id": "00000a0000000003", "size": 7, "owner": 10}]}})
    assert store["hosts"][0]["host"] == "10.0.0.5" and store["largest"][0]["host"] == "10.0.0.5", store


def test_stored_objects_are_named_by_task_put_site_and_the_variables_holding_them(monkeypatch):
    """The largest objects' names come from driver-side records: the dashboard's task names (a
    task's return ref has its id), jpar.put's call sites and the namespace's variables."""
    from jpar import api
    from jpar.notebook import store_view
    from jpar.refs import ObjectRef

    owner = 3
    task_ref, put_ref, other = (ObjectRef((owner << 40) | n, owner) for n in (1, 2, 3))
    m = DashboardModel(namespace=lambda: ns, client_no=owner)
    m.apply([submitted(task_ref.id, name="load_table")])
    ns = {"t": task_ref, "parts": [other, put_ref], "by_key": {"k": put_ref}, "_": task_ref, "_7": put_ref,
          "n": 5, "big": list(range(store_view.MAX_ITEMS)) + [other]}   # past MAX_ITEMS: not looked at
    monkeypatch.setitem(api.put_sites, put_ref.id, ("/home/u/prep.py", 17, "load"))
    m.apply_status({"object_store": {"n0": {"used": 30, "capacity": 100, "spilled": 0, "objects": [
        {"id": task_ref.id, "size": 30, "owner": owner}, {"id": put_ref.id, "size": 20, "owner": owner},
        {"id": other.id, "size": 10, "owner": 9}]}}})
    rows = {r["id"]: r for r in m.store["largest"]}
    t, p, o = rows[f"{task_ref.id:x}"], rows[f"{put_ref.id:x}"], rows[f"{other.id:x}"]
    assert (t["made_by"], t["vars"], t["owner"], t["host"]) == ("task load_table", ["t"], "this notebook", "n0")
    assert (p["made_by"], p["vars"]) == ("put at prep.py:17 in load", ["parts[1]", "by_key['k']"])
    assert (o["made_by"], o["vars"], o["owner"], o["mine"]) == ("", ["parts[0]"], "client 9", False)
    # Ray's ids come as 16 hex digits: the same object
    assert store_view.holders(ns, {int(f"{other.id:016x}", 16)}) == {other.id: ["parts[0]"]}
    assert store_view.holders(None, {other.id}) == {}

    # the namespace's scan is bounded in all: past MAX_LOOKS values it stops
    crowded = {"filler": [0] * 20, "late": other}
    assert store_view.holders(crowded, {other.id}) == {other.id: ["late"]}
    monkeypatch.setattr(store_view, "MAX_LOOKS", 10)
    assert store_view.holders(crowded, {other.id}) == {}


def test_put_records_its_call_site_in_a_bounded_table(cluster, monkeypatch):
    from jpar import api
    from jpar.notebook import store_view

    monkeypatch.setattr(api, "PUT_SITES_MAX", 4)
    monkeypatch.setattr(api, "put_sites", {})
    refs = []
    for i in range(10):
        refs.append(jpar.put(i)); line = sys._getframe().f_lineno
    assert len(api.put_sites) <= 4 and refs[-1].id in api.put_sites and refs[0].id not in api.put_sites
    me = "test_put_records_its_call_site_in_a_bounded_table"
    assert api.put_sites[refs[-1].id] == (__file__, line, me)
    assert store_view.put_site(refs[-1].id) == f"put at test_dashboard.py:{line} in {me}"
    in_comprehension = [jpar.put(i) for i in range(1)]; line = sys._getframe().f_lineno
    assert store_view.put_site(in_comprehension[0].id) in (f"put at test_dashboard.py:{line}",   # <listcomp>
                                                           f"put at test_dashboard.py:{line} in {me}")  # 3.12+


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
    assert d.states[f"{b.id:x}"][0] == "assigned"     # chained: on a's engine, to start when a returns
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
    # local engines: their memory is drawn against this host's (not against the largest engine)
    assert {e["limit"] for e in d.engines} == {psutil.virtual_memory().total}, d.engines
    assert wait_for(d, lambda: any(x["class"] == "Counter" for x in d.totals.get("actors", []))), d.totals
    assert d.totals["store"] is None or "hosts" in d.totals["store"]
    jpar.kill(c)


@jpar.remote
def make_block(nbytes):
    return bytes(nbytes)


def test_the_live_store_names_its_largest_objects(board):
    """On a real cluster: a task's result and a put value, each held by a variable, are listed by
    the dashboard under the task's name and the put's call site, with the variables' names."""
    d = board(status_interval=0.2)
    ns: dict = {}
    d.model.namespace = lambda: ns
    ns["block"] = make_block.remote(6 * 2**20)
    ns["kept"] = [jpar.put(bytes(5 * 2**20))]; line = sys._getframe().f_lineno
    jpar.wait([ns["block"]], timeout=30)
    me = test_the_live_store_names_its_largest_objects.__name__
    want = {f"{ns['block'].id:x}": ("task make_block", ["block"]),
            f"{ns['kept'][0].id:x}": (f"put at test_dashboard.py:{line} in {me}", ["kept[0]"])}

    def named():
        rows = {r["id"]: (r["made_by"], r["vars"]) for r in ((d.totals.get("store") or {}).get("largest") or ())}
        return all(rows.get(k) == v for k, v in want.items())

    assert wait_for(d, named), d.totals.get("store")
    rows = [r for r in d.totals["store"]["largest"] if r["id"] in want]
    assert all(r["owner"] == "this notebook" and r["size"] >= 5 * 2**20 and r["host"] for r in rows), rows


def _store_objects() -> dict:
    """object id -> (size, spilled) of every object in a fresh scan of the cluster's stores."""
    from jpar import hooks

    return {o.object_id: (o.size, o.spilled) for st in hooks.store_statistics(timeout=10).values()
            for o in st.objects}


def test_the_free_button_frees_an_object_this_notebook_holds(board):
    """The store table's "free" message (what the button sends) frees the object through jpar.free:
    the row leaves the table, the store's bytes go, and the ref, still held, raises ObjectFreedError.
    A row of an object this notebook holds no ref to is not freeable, and its message is refused."""
    d = board(status_interval=0.2)
    ns: dict = {}
    d.model.namespace = lambda: ns
    ns["block"] = make_block.remote(7 * 2**20)
    jpar.wait([ns["block"]], timeout=30)
    key = f"{ns['block'].id:x}"

    def row():
        return next((r for r in ((d.totals.get("store") or {}).get("largest") or ()) if r["id"] == key), None)

    assert wait_for(d, lambda: row() is not None and row()["freeable"]), d.totals.get("store")
    assert row()["why_not"] == ""
    before = _store_objects()
    assert before[ns["block"].id][0] >= 7 * 2**20, before
    d._on_front_end_msg(d, {"type": "free", "id": key}, [])
    assert wait_for(d, lambda: row() is None), d.totals.get("store")
    # jpar.free answers once the segments are gone: a fresh scan of the stores no longer holds the
    # block (comparing the summed bytes instead failed once in CI: other work's objects land meanwhile)
    after = _store_objects()
    assert ns["block"].id not in after, (before, after)
    with pytest.raises(jpar.ObjectFreedError, match="jpar.free"):
        jpar.get(ns["block"], timeout=10)
    assert jpar.get(make_block.remote(10), timeout=30) == bytes(10)   # the cluster goes on
    # another driver's object, held by no variable here: not freeable, and a message for it is refused
    from jpar.notebook import store_view

    other = {"id": "ff", "owner_no": 9, "mine": False, "vars": []}
    ok, why = store_view.freeable(other)
    assert not ok and "another driver" in why
    d.close()                                           # its updater thread no longer replaces the store
    d.model.store = {"hosts": [], "largest": [dict(other, freeable=ok, why_not=why)]}
    assert d.free_object("ff") is False and d.free_object("not a row") is False
    assert [r["id"] for r in d.model.store["largest"]] == ["ff"]


@jpar.remote
def length(x):
    return len(x)


def test_waits_transfers_and_argument_sizes_on_a_real_cluster(board):
    """On the native cluster, from its real events: tasks queued behind busy engines show their wait,
    a task with a stored ref argument its engine's fetch time (the transfer), its pickled arguments'
    bytes and that ref's value's bytes (from the producing task's finished event); the task stream's
    bars carry the same phases."""
    d = board()
    block = make_block.remote(3 * 2**20)            # over the inline limit: a segment of the object store
    jpar.wait([block], timeout=30)
    sub = hooks.subscribe_events()                  # what happened, for the message of a failure
    naps = [nap.remote(0.4) for _ in range(4)]      # two engines: two of the four queue for ~0.4 s
    use = length.remote(block)
    assert jpar.get(use, timeout=60) == 3 * 2**20 and jpar.get(naps, timeout=60) == [0.4] * 4
    keys, ukey = [f"{r.id:x}" for r in naps], f"{use.id:x}"
    assert wait_for(d, lambda: all(d.states.get(k, [""])[0] == "done" for k in keys + [ukey])), d.states
    index = {r.id: i for i, r in enumerate(naps)}
    seen = [(round(e.time, 3), index[e.key], e.state, (e.info or {}).get("engine"))
            for e in sub.poll(0.5) if e.kind == "task" and e.key in index]
    sub.close()
    waits = [d.states[k][6] for k in keys]
    # whichever engines ran them and whatever was taken back, two of four 0.4 s naps on two engines
    # started after both engines were busy for ~0.4 s
    assert all(w is not None and w >= 0 for w in waits) and sum(w >= 0.3 for w in waits) >= 2, (waits, seen)
    state, engine, secs, err, start, end, wait, fetch, args = d.states[ukey]
    assert fetch is not None and 0 < fetch < 1.0, d.states[ukey]              # the ref mapped from the store
    assert 0 < args[0] < 1000 and args[1] == [[f"{block.id:x}", args[1][0][1]]], args   # a ref, not 3 MiB inline
    assert 3 * 2**20 <= args[1][0][1] < 3 * 2**20 + 65536, args                # the stored value's bytes
    assert all(d.states[k][7] is None for k in keys)                           # no ref arguments: no transfer
    s = d.stream
    named = [(s["names"][b[3]], b) for b in s["bars"]]
    assert any(name == "length" and b[8] > 0 for name, b in named), named
    assert any(name == "nap" and b[9] >= 0.3 for name, b in named), named
    assert all(b[7] is None or b[7] <= b[1] for _, b in named), named          # a wait ends where its run starts


def test_a_busy_engine_is_sampled_four_times_a_second(cluster):
    """While it runs a task an engine samples its CPU and memory 4 times a second (idle: once), so
    the dashboard's CPU is live; counted on the event stream between the task's start and end."""
    sub = hooks.subscribe_events()
    try:
        ref = nap.remote(2.0)
        run = {}
        samples = []
        deadline = time.monotonic() + 30
        while "done" not in run and time.monotonic() < deadline:
            for e in sub.poll(0.5):
                if e.kind == "task" and e.key == ref.id and e.state in ("running", "done"):
                    run[e.state] = (e.time, (e.info or {}).get("engine"))
                elif e.kind == "metrics":
                    samples.append((e.time, e.key))
        assert jpar.get(ref) == 2.0 and "running" in run and "done" in run, run
        (t0, engine), (t1, _) = run["running"], run["done"]
        during = [t for t, eid in samples if eid == engine and t0 + 0.1 <= t <= t1 - 0.1]
        assert len(during) >= 5, (len(during), t1 - t0)        # 4 a second over ~1.8 s: 7; once a second: 2
    finally:
        sub.close()


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
    # 3000 tasks' counts reach the browser in a few updates, <= 4 a second
    assert 1 <= updates <= 4 * elapsed + 2, (updates, elapsed)
    assert all(len(keys) >= 2 for keys in sent.keys), sent.keys    # each update carries several traits
    key = "fn:nap@test_dashboard.py in test_updates_are_throttled_and_batched"   # per block of code
    assert d.graph["mode"] == "groups" and [n[:2] for n in d.graph["nodes"]] == [[key, "nap"]], d.graph
    assert d.states[key][0] == {"done": 3000}, d.states
    st = d.statistics()
    assert st.running and d.model.summary_mode       # native: the head's summary stream, counts per call site
    # ... and a sample of tasks one by one: at most 500 a second are submitted detailed (3000 made
    # 9000+ events on the full stream)
    seconds = int(elapsed) + 2                       # calendar seconds the submissions may span
    assert 0 < len(d.model.tasks) <= 500 * seconds and st.events < 3 * 3000, (len(d.model.tasks), elapsed, st)


def test_an_expanded_group_shows_its_newest_tasks_not_only_the_sample(board):
    """Summary stream: past 500 new tasks a second the dashboard follows a sample; the group it expands
    has every task told (the head is asked to), so the newest are drawn."""
    d = board(group_above=50)
    assert wait_for(d, lambda: d.status == "live"), d.status

    def burst(n):
        return [nap.remote(0.0) for _ in range(n)]         # one call site: one group

    first = burst(2000)
    jpar.get(first)
    assert wait_for(d, lambda: d.totals.get("finished", 0) >= 2000), d.totals
    site = call_sites.site_of(first[0].id)

    def group_of_burst():      # by call site: its first tasks may fall in a second whose sample is spent
        return next((k for k, heads in d.model.head_keys.items()
                     if any(call_sites.site_number(n) == site for _, _, n in heads)), None)

    assert wait_for(d, lambda: group_of_burst() is not None)
    key = group_of_burst()
    assert d.model.summary_mode and len([t for t in first if t.id in d.model.tasks]) < 2000   # a sample
    d._on_front_end_msg(d, {"type": "expand", "key": key}, [])
    assert wait_for(d, lambda: d.detailed_group == key)   # the head was asked and agreed
    later = burst(1500)
    jpar.get(later)
    assert wait_for(d, lambda: all(t.id in d.model.tasks for t in later)), \
        sum(t.id in d.model.tasks for t in later)          # every one of them, past the 500 a second
    assert wait_for(d, lambda: all(f"{t.id:x}" in d.states for t in later[-200:]))   # the newest drawn
    d._on_front_end_msg(d, {"type": "expand", "key": key}, [])     # fold: the head samples again
    assert wait_for(d, lambda: d.model.expanded is None and d.detailed_group is None)
    again = burst(1500)
    jpar.get(again)
    assert wait_for(d, lambda: d.totals.get("finished", 0) >= 5000), d.totals
    assert sum(t.id in d.model.tasks for t in again) < 1500


def test_closing_stops_the_thread_and_several_dashboards_work(board):
    """Counted by the summary stream, which counts every task: a lone task is not always told one by
    one (past 500 new tasks in the same second, as right after the previous test's burst, it is
    not), so the per-task view is no proof that a dashboard saw it (this test failed in CI so)."""
    d1, d2 = board(), board()

    def finished(d):
        return d.totals.get("finished", 0)

    assert wait_for([d1, d2], lambda: d1.status == "live" and d2.status == "live")
    before = finished(d1), finished(d2)
    jpar.get(nap.remote(0.0))
    assert wait_for([d1, d2], lambda: finished(d1) == before[0] + 1 and finished(d2) == before[1] + 1), \
        (before, d1.totals, d2.totals)
    d1.close()
    assert not d1.running and d1._sub.closed
    jpar.get(nap.remote(0.0))
    assert wait_for(d2, lambda: finished(d2) == before[1] + 2), d2.totals
    assert finished(d1) == before[0] + 1 and d2.running
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
    ("IPython", "from jpar.notebook import progress; progress.ProgressBar(2, 'x')", "pip install 'jpar[notebook]'"),
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
