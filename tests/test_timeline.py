"""jpar.timeline(): the tasks a driver saw, as a Chrome trace (Trace Event Format), on the native
cluster and on Dask (its events come through jpar.hooks, as the dashboard's do)."""

from __future__ import annotations

import json
import logging
import time

import psutil
import pytest

import jpar
from jpar import trace

pytestmark = pytest.mark.timeout(120)


@jpar.remote
def work(seconds):
    time.sleep(seconds)
    return seconds


@jpar.remote
def broken():
    raise ValueError("on purpose")


def check_trace(events: list, refs: dict, failed_id: int, engines: set) -> None:
    """``refs``: task id -> seconds it slept. Every task is one "X" event with its function's name,
    times in microseconds, its engine as tid; the failed one says so; metadata names each thread.
    Five tasks on two engines: at least two waited for one, and their waits are "b"/"e" pairs."""
    json.loads(json.dumps(events))                                      # plain JSON, nothing exotic
    xs = {e["args"]["task_id"]: e for e in events if e["ph"] == "X" and e["cat"] == "task"}
    for tid, secs in refs.items():
        e = xs[f"{tid:x}"]
        assert e["name"].endswith("work") and e["cat"] == "task" and e["args"]["state"] == "done", e
        assert secs * 1e6 * 0.9 <= e["dur"] < secs * 1e6 + 5e6, e      # microseconds
        assert abs(e["ts"] / 1e6 - time.time()) < 120, e                # epoch microseconds, recent
        assert e["tid"] in engines and e["args"]["engine"] == e["tid"], (e, engines)
        assert isinstance(e["pid"], int)
    bad = xs[f"{failed_id:x}"]
    assert bad["name"].endswith("broken") and bad["args"]["state"] == "failed", bad
    names = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in xs.values()} <= names
    assert all(e["ph"] in ("X", "M", "b", "e") for e in events)
    waits = check_phases(events)
    assert sum(w >= 50_000 for tid, w in waits.items() if tid in xs) >= 2, waits


def check_phases(events: list) -> dict:
    """Waits and transfers are well formed: each wait a "b" then "e" of one id (the task's), ending
    where its run starts, with the run's ``wait_ms``; each transfer an "X" nested at the start of its
    run, whose ``fetch_ms`` it is. Returns {task id: wait in microseconds}."""
    runs = {e["args"]["task_id"]: e for e in events if e["ph"] == "X" and e["cat"] == "task"}
    begins = {e["id"]: e for e in events if e["ph"] == "b"}
    ends = {e["id"]: e for e in events if e["ph"] == "e"}
    assert begins.keys() == ends.keys() and len(begins) == len([e for e in events if e["ph"] == "b"])
    waits = {}
    for wid, b in begins.items():
        e, run = ends[wid], runs[b["args"]["task_id"]]
        assert b["cat"] == e["cat"] == "wait" and b["name"] == e["name"] == "wait " + run["name"]
        assert wid == "0x" + run["args"]["task_id"] and (b["pid"], b["tid"]) == (run["pid"], run["tid"])
        assert b["ts"] < e["ts"] == run["ts"], (b, e, run)
        assert run["args"]["wait_ms"] == pytest.approx((e["ts"] - b["ts"]) / 1e3, abs=0.01)
        waits[run["args"]["task_id"]] = e["ts"] - b["ts"]
    for t in (e for e in events if e["ph"] == "X" and e["cat"] == "transfer"):
        run = runs[t["args"]["task_id"]]
        assert t["name"] == "fetch arguments" and (t["pid"], t["tid"], t["ts"]) == (run["pid"], run["tid"], run["ts"])
        assert 0 <= t["dur"] <= run["dur"] and run["args"]["fetch_ms"] > 0
    return waits


def run_and_export(tmp_path, engines: set) -> None:
    jpar.timeline()                          # starts recording (returns what was seen so far)
    assert trace.recording()
    held = [(work.remote(s), s) for s in (0.3, 0.2, 0.1, 0.2)]     # held: a dropped ref may cancel its task
    refs = {r.id: s for r, s in held}
    bad = broken.remote()
    assert jpar.get([r for r, _ in held], timeout=60) == [s for _, s in held]
    with pytest.raises(ValueError):
        jpar.get(bad, timeout=60)
    assert trace.wait_recorded(list(refs) + [bad.id], timeout=30), "the tasks' runs never reached the recorder"
    events = jpar.timeline()
    check_trace(events, refs, bad.id, engines)
    # only this cluster's tasks: an earlier cluster's (whose task ids start over) are not mixed in
    assert sorted(int(e["args"]["task_id"], 16) for e in events
                  if e["ph"] == "X" and e["cat"] == "task") == sorted(list(refs) + [bad.id])
    path = tmp_path / "trace.json"
    assert jpar.timeline(str(path)) is None
    check_trace(json.loads(path.read_text()), refs, bad.id, engines)    # what Perfetto would load


def test_chrome_trace_format_from_spans():
    spans = [(10.0, 10.5, 0, "hostA", "f", 0x1f, "done"), (10.2, 10.3, 1, "", "g", 0x20, "failed")]
    events = trace.chrome_trace(spans, {1: "hostB"})
    x = [e for e in events if e["ph"] == "X"]
    assert x[0] == {"name": "f", "cat": "task", "ph": "X", "ts": 10_000_000.0, "dur": 500_000.0, "pid": 1, "tid": 0,
                    "args": {"task_id": "1f", "state": "done", "engine": 0}}
    assert x[1]["pid"] == 2 and x[1]["tid"] == 1 and x[1]["dur"] == pytest.approx(100_000.0)
    meta = {(e["name"], e["pid"], e["tid"]): e["args"]["name"] for e in events if e["ph"] == "M"}
    assert meta == {("process_name", 1, 0): "host hostA", ("process_name", 2, 0): "host hostB",
                    ("thread_name", 1, 0): "engine 0", ("thread_name", 2, 1): "engine 1"}
    # with its phases: waited 2 s from ready (8.0) to start; spent 0.1 s of its run fetching arguments
    events = trace.chrome_trace([(10.0, 10.5, 0, "hostA", "f", 0x1f, "done", 8.0, 0.1),
                                 (10.5, 10.6, 0, "hostA", "g", 0x20, "done", 0.0, 0.0)])
    assert json.loads(json.dumps(events)) == events
    by = {(e["ph"], e["cat"]): e for e in events if e["ph"] != "M"}
    assert set(by) == {("X", "task"), ("b", "wait"), ("e", "wait"), ("X", "transfer")}   # g: no phases
    assert by["b", "wait"]["ts"] == 8_000_000.0 and by["e", "wait"]["ts"] == 10_000_000.0
    assert by["b", "wait"]["id"] == by["e", "wait"]["id"] == "0x1f" and by["b", "wait"]["name"] == "wait f"
    assert by["X", "transfer"]["ts"] == 10_000_000.0 and by["X", "transfer"]["dur"] == pytest.approx(100_000.0)
    f = next(e for e in events if e["ph"] == "X" and e["args"]["task_id"] == "1f" and e["cat"] == "task")
    assert f["args"] == {"task_id": "1f", "state": "done", "engine": 0, "wait_ms": 2000.0, "fetch_ms": 100.0}
    assert check_phases(events) == {"1f": 2_000_000.0}


def test_a_task_taken_back_from_a_busy_engine_waited_since_it_first_became_ready():
    """Queued at 1, prefetched behind a long task, taken back unstarted at 5 and run elsewhere at once:
    its wait began at 1, not at its second queued event (that read 0 s in a CI run). A retry after it
    ran waits anew from its requeue."""
    rec = trace._Recorder()
    rec.apply([(1.0, "task", 7, "queued", {"name": "f"}), (1.0, "task", 7, "assigned", {"engine": 0}),
               (5.0, "task", 7, "queued", None), (5.0, "task", 7, "running", {"engine": 1}),
               (6.0, "task", 7, "queued", None), (8.0, "task", 7, "running", {"engine": 1}),
               (9.0, "task", 7, "done", None)])
    assert [s[7] for s in rec.spans] == [6.0]             # the retried run: ready at its requeue
    rec.apply([(10.0, "task", 8, "queued", {"name": "g"}), (10.0, "task", 8, "assigned", {"engine": 0}),
               (14.0, "task", 8, "queued", None), (14.0, "task", 8, "running", {"engine": 1}),
               (15.0, "task", 8, "done", None)])
    assert rec.spans[-1][7] == 10.0 and rec.spans[-1][0] == 14.0


def test_timeline_on_the_native_cluster(cluster, tmp_path):
    engines = {e["id"] for e in jpar.hooks.engines()}
    run_and_export(tmp_path, engines)


@jpar.remote
def total(xs):
    return len(xs)


def test_timeline_has_the_transfer_of_a_ref_argument(cluster, tmp_path):
    """A task with a stored ref argument: its run has a "transfer" slice (its engine's fetch), nested
    at its start, in the JSON written for Perfetto."""
    jpar.timeline()
    block = jpar.put(bytes(2 * 2**20))
    use = total.remote(block)
    assert jpar.get(use, timeout=60) == 2 * 2**20
    assert trace.wait_recorded([use.id], timeout=30)
    path = tmp_path / "trace.json"
    jpar.timeline(str(path))
    events = json.loads(path.read_text())
    check_phases(events)
    (t,) = [e for e in events if e["ph"] == "X" and e["cat"] == "transfer" and e["args"]["task_id"] == f"{use.id:x}"]
    assert 0 <= t["dur"] < 1e6, t               # clipped to the run (its times are the head's clock)


def test_an_open_dashboard_feeds_the_timeline(cluster):
    """With a dashboard open the timeline records what the dashboard reads, with no subscription of
    its own (a second one decoded every event twice); once it closes, timeline() subscribes itself."""
    trace.stop()
    board = jpar.dashboard()
    try:
        assert trace.recording() and not trace._recorder.thread.is_alive()
        held = [work.remote(0.05) for _ in range(3)]
        jpar.get(held, timeout=60)
        assert trace.wait_recorded([r.id for r in held], timeout=30)
        events = jpar.timeline()
        assert not trace._recorder.thread.is_alive()                  # still fed, not subscribed
        assert {f"{r.id:x}" for r in held} <= {e["args"]["task_id"] for e in events if e["ph"] == "X"}
    finally:
        board.close()
    assert not trace.recording()
    jpar.timeline()
    assert trace.recording() and trace._recorder.thread.is_alive()


def test_timeline_on_dask(tmp_path):
    distributed = pytest.importorskip("distributed")
    if jpar.is_initialized():
        jpar.shutdown()
    trace.stop()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address="127.0.0.1:0", host="127.0.0.1",
                                       silence_logs=logging.ERROR)
    started = [p for p in psutil.Process().children(recursive=True)
               if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())]
    try:
        jpar.init(backend="dask", address=cluster.scheduler_address)
        try:
            run_and_export(tmp_path, {e["id"] for e in jpar.hooks.engines()})
        finally:
            jpar.shutdown()
        trace.stop()
        assert not trace.recording()
        assert len([e for e in jpar.timeline() if e["ph"] == "X"]) >= 5     # kept after shutdown
    finally:
        cluster.close()
        _, alive = psutil.wait_procs(started, timeout=15)
        for p in alive:
            p.kill()
        assert not alive, "LocalCluster processes survived close()"
