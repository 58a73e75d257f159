"""The summary stream's counts (jpar.runtime.head.task_summary), made in the scheduler's moves: a pure
state machine, no processes; then the real stream from a cluster."""

import time

import pytest

import jpar
from jpar import hooks
from jpar.runtime.head.scheduler import Scheduler, TaskState, Transition
from jpar.runtime.head.task_summary import DETAILED, UNTOLD, TaskSummary
from jpar.runtime.wire import protocol as P

S = TaskState


def spec(tid, deps=(), name="f", site=1, parent=0):
    return P.TaskSpec(tid, 1, name, b"", tuple(deps), 1, (("CPU", 1.0),), 0, False, parent, 0, -1, site)


def done(sched, eng, tid, status=P.OK):
    task = sched.tasks[tid]
    return sched.tasks_done(eng, [P.DoneRecord(tid, task.attempt, status, ((tid, status, b"v"),), 0.0)])


def summarized(detail_per_s=1000):
    """A scheduler that counts for the summary stream only (no full-stream listener)."""
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.full_stream = False
    s.summary = TaskSummary(detail_per_s)
    return s


def counts(summary):
    return {(row[1], row[2]): {k: v for k, v in row[3].items()} for row in summary.snapshot()["groups"]}


def test_every_task_is_counted_per_call_site_and_state_and_only_the_detailed_are_told():
    sched = summarized(detail_per_s=2)
    sched.now = 100.0
    acts = sched.engine_added(0, "n", {"CPU": 1})
    acts += sched.submit(1, [spec(t) for t in range(1, 6)] + [spec(6, name="g", site=2)])
    snap = counts(sched.summary)
    assert snap == {("f", 1): {"queued": 4, "running": 1}, ("g", 2): {"queued": 1}}, snap
    for tid in range(1, 7):
        acts += done(sched, 0, tid)
    assert counts(sched.summary) == {("f", 1): {"done": 5}, ("g", 2): {"done": 1}}
    told = {a.task_id for a in acts if type(a) is Transition}
    assert told == {1, 2}                                 # the first two of the second, and no others
    assert all(a.told == DETAILED for a in acts if type(a) is Transition)
    row = sched.summary.snapshot()["groups"][0]
    assert row[5] == 5 and row[4] is not None and row[4] >= 0.0     # runs and their mean seconds


def test_the_full_stream_still_gets_every_transition_beside_the_counts():
    sched = summarized(detail_per_s=0)
    sched.full_stream = True
    acts = sched.engine_added(0, "n", {"CPU": 1}) + sched.submit(1, [spec(1), spec(2)])
    acts += done(sched, 0, 1) + done(sched, 0, 2)
    moves = [(a.task_id, a.new, a.told) for a in acts if type(a) is Transition]
    assert (1, S.DONE, 0) in moves and (2, S.QUEUED, 0) in moves and len(moves) >= 6
    assert counts(sched.summary) == {("f", 1): {"done": 2}}


def test_a_failure_is_told_with_what_places_it_even_when_not_detailed():
    sched = summarized(detail_per_s=0)
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1)])
    acts = done(sched, 0, 1, status=P.ERROR)
    failed = [a for a in acts if type(a) is Transition]
    assert [(a.task_id, a.new, a.told) for a in failed] == [(1, S.FAILED, UNTOLD)]
    assert sched.summary.placed(1) == {"name": "f", "owner": 1, "site": 1} and sched.summary.placed(1) == {}
    assert counts(sched.summary) == {("f", 1): {"failed": 1}}


def test_edges_join_groups_through_arguments_finished_or_not_and_parents():
    sched = summarized()
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1, name="load", site=1)])
    done(sched, 0, 1)                                     # finished before its dependant came
    sched.submit(1, [spec(2, deps=[1], name="clean", site=2), spec(3, deps=[2], name="fit", site=3),
                     spec(4, name="load", site=1, parent=3)])
    snap = sched.summary.snapshot()
    names = [g[1] for g in snap["groups"]]
    edges = {(names[i], names[j]) for i, j in snap["edges"]}
    assert edges == {("load", "clean"), ("clean", "fit"), ("fit", "load")}, edges


def test_tasks_from_before_the_summary_are_not_counted():
    sched = Scheduler(prefetch=0)
    sched.client_added(1)
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    sched.full_stream, sched.summary = False, TaskSummary()
    done(sched, 0, 1)
    sched.submit(1, [spec(3)])
    done(sched, 0, 2)
    done(sched, 0, 3)
    assert counts(sched.summary) == {("f", 1): {"done": 1}}   # only task 3: no negative counts


def test_an_expanded_group_has_every_task_told_until_folded():
    sched = summarized(detail_per_s=0)                    # no sample: only what is asked for
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2), spec(3, name="g", site=2)])     # 1 runs, 2 and 3 wait
    sched.summary.expand((1, "f", 1), True)
    acts = sched.submit(1, [spec(4), spec(5, name="g", site=2)]) + done(sched, 0, 1)
    told = {(a.task_id, a.told) for a in acts if type(a) is Transition}
    assert (4, DETAILED) in told and not any(t in (3, 5) for t, _ in told), told   # g's are not expanded
    assert (1, UNTOLD) in told and (2, UNTOLD) in told, told   # in flight when expanded: told with placing
    assert sched.summary.placed(2) == {"name": "f", "owner": 1, "site": 1}
    sched.summary.expand((1, "f", 1), False)
    acts = sched.submit(1, [spec(6)])
    assert not [a for a in acts if type(a) is Transition and a.task_id == 6]
    assert counts(sched.summary)[("f", 1)] == {"done": 1, "running": 1, "queued": 2}   # 1 done, 2 runs, 4 and 6 wait


def test_the_detail_budget_renews_every_second():
    s = TaskSummary(detail_per_s=1)
    sched = Scheduler(prefetch=0)
    sched.client_added(1)
    sched.submit(1, [spec(1), spec(2), spec(3)])
    tasks = [sched.tasks[t] for t in (1, 2, 3)]
    assert [s.submitted(t, S.QUEUED, 100.2) for t in tasks[:2]] == [True, False]
    assert s.submitted(tasks[2], S.QUEUED, 101.0) is True


# ---------------------------------------------------------------- the stream from a cluster
@jpar.remote
def summed_ident(x):      # names no other test module uses: the cluster (and its counts) is shared
    return x


@jpar.remote
def summed_boom(x):
    raise ValueError(x)


def _until(sub, pred, timeout=30.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += sub.poll(0.25)
        if pred(seen):
            return seen
    raise AssertionError(f"not seen in {timeout} s: {seen[-5:]}")


def _last_summary(events):
    return [e for e in events if e.kind == "summary"][-1].info


def test_a_summary_subscriber_gets_exact_counts_and_a_sample(cluster):
    from jpar import call_sites

    summary, full = hooks.subscribe_events(summary=True), hooks.subscribe_events()
    try:
        assert summary.summary and not full.summary
        refs = [summed_ident.remote(i) for i in range(1500)]               # one call site ...
        more = [summed_ident.remote(r) for r in refs[:20]]                  # ... and another, on the first's results
        bad = [summed_boom.remote(i) for i in range(3)]
        jpar.wait(refs + more + bad, num_returns=len(refs + more + bad), timeout=120)
        mine = {r.id for r in refs + more + bad}
        ev = _until(summary, lambda ev: any(e.kind == "summary" and _done(e.info, "summed_ident") >= 1520
                                            and _done(e.info, "summed_boom", "failed") >= 3 for e in ev))
        info = _last_summary(ev)
        rows = [g for g in info["groups"] if g[1] in ("summed_ident", "summed_boom")]
        sites = {g[2] for g in rows if g[1] == "summed_ident"}
        assert len(sites) == 2 and all(call_sites.site_number(n)[0] == __file__ for n in sites), rows
        by_site = {g[2]: g[3] for g in rows if g[1] == "summed_ident"}
        assert sorted(c.get("done", 0) for c in by_site.values()) == [20, 1500], rows
        told = {e.key for e in ev if e.kind == "task" and e.key in mine}
        assert 0 < len(told) < len(mine)                          # a sample, not every task ...
        failed = [e for e in ev if e.kind == "task" and e.state == "failed" and e.key in mine]
        assert {e.key for e in failed} == {r.id for r in bad}     # ... but every failure, placed
        named = {e.key: e.info for e in ev if e.kind == "task" and e.key in mine and (e.info or {}).get("name")}
        assert all(named[r.id]["name"] == "summed_boom" and named[r.id]["owner"] == refs[0].owner for r in bad)
        told_full = {e.key for e in _until(full, lambda ev: sum(e.kind == "task" and e.state in ("done", "failed")
                                                                 and e.key in mine for e in ev) >= len(mine))}
        assert mine <= told_full                                   # the full stream still has every task
    finally:
        summary.close()
        full.close()


def _done(info, name, state="done"):
    return sum(g[3].get(state, 0) for g in info["groups"] if g[1] == name)


@jpar.remote
def summed_sleeper(s):
    time.sleep(s)


def test_the_status_a_dashboard_polls_counts_each_clients_tasks_and_store_refs(cluster):
    """What the once-a-second status and store figures report, now made without a pass over every
    task and object in Python (a Counter over task ids; refs looked up for the listed objects only)."""
    import numpy as np

    blocker = summed_sleeper.remote(60)
    waiting = [summed_ident.remote(blocker) for _ in range(3)]
    big = jpar.put(np.ones(4_000_000))                     # 32 MB: a segment of the object store
    try:
        me = hooks.driver_info()["client_no"]
        row = [c for c in hooks.status()["clients"] if c["no"] == me]
        assert row and row[0]["tasks"] >= 4, row           # the blocker and its three dependants
        listed = [o for st in hooks.store_statistics().values() for o in st.objects if o.object_id == big.id]
        assert listed and listed[0].refcount == 1, listed   # the driver's own ref
    finally:
        jpar.cancel(blocker, force=True)
        for r in waiting:
            with pytest.raises(jpar.JparError):
                jpar.get(r, timeout=60)
