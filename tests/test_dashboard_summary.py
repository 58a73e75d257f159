"""The dashboard's model on the summary stream (pure: events in, trait values out): function groups
counted by the head's summaries, the tasks that come one by one drawn but not counted twice."""

import time

import pytest

from jpar.notebook.dashboard_model import DashboardModel
from jpar.runtime.wire.protocol import Event

pytestmark = pytest.mark.timeout(60)

SITES = {1: ("/nb/cell3.py", 4, "<module>"), 2: ("/nb/cell5.py", 1, "<module>")}


def model(**kw):
    m = DashboardModel(client_no=1, site_number=SITES.get, site_of=lambda tid: None, **kw)
    m.summary_mode = True
    return m


def summary(*groups, edges=()):
    """groups: (owner, name, site, {state: n}, mean s, runs)"""
    return Event(time.time(), "summary", 1, "groups", {"groups": [list(g) for g in groups], "edges": list(edges)})


def task(tid, state, name="f", site=1, owner=1, **info):
    return Event(time.time(), "task", tid, state, {"name": name, "deps": (), "parent": 0, "owner": owner,
                                                    "site": site, **info})


def test_counts_come_from_summaries_per_call_site_and_owner():
    m = model(group_above=10)
    m.apply([summary((1, "f", 0, {}, None, 0))])          # where this dashboard starts: nothing yet
    m.apply([summary((1, "f", 1, {"queued": 3, "done": 2}, 0.5, 2), (1, "f", 2, {"running": 1}, None, 0),
                     (7, "f", 9, {"done": 4}, 0.25, 4), edges=[(0, 1)])])
    keys = {k: (dict(g.counts), g.label) for k, g in m.groups.items()}
    assert set(keys) == {"fn:f@cell3.py", "fn:f@cell5.py", "fn:f"}, keys           # another owner: by name
    assert keys["fn:f@cell3.py"][0] == {"queued": 3, "done": 2} and keys["fn:f"][0] == {"done": 4}
    assert ("fn:f@cell3.py", "fn:f@cell5.py") in m.group_edges
    totals = m.snapshot_totals(time.monotonic())
    assert totals["states"] == {"queued": 3, "done": 6, "running": 1} and totals["finished"] == 6
    assert m.grouped is False and totals["tasks"] == 10
    m.apply([summary((1, "f", 1, {"done": 11}, 0.5, 11))])
    assert m.grouped is True                                # past group_above: the grouped view
    states = m.snapshot_states(time.time())
    assert states["fn:f@cell3.py"] == [{"done": 11}, 0.5]


def test_tasks_told_one_by_one_are_drawn_but_not_counted_twice():
    m = model(group_above=100)
    m.apply([summary()])
    m.apply([task(1, "queued"), task(1, "running", engine=0), task(2, "queued")])
    assert m.snapshot_totals(time.monotonic())["tasks"] == 0       # counts are the summaries' alone
    m.apply([summary((1, "f", 1, {"running": 1, "queued": 1}, None, 0))])
    m.apply([Event(time.time(), "task", 1, "done", {"fetch": 0.0, "size": 8})])
    assert dict(m.groups["fn:f@cell3.py"].counts) == {"running": 1, "queued": 1}   # until the next summary
    assert m.snapshot_states(time.time())["1"][0] == "done"        # the task itself is drawn as it is
    assert len(m.stream.spans) == 1                                   # and in the task stream


def test_actor_calls_stay_counted_by_their_events():
    m = model()
    m.apply([summary()])
    m.actors[5] = {"id": 5, "class": "Counter", "name": "", "state": "alive"}
    call = Event(time.time(), "task", 9, "queued", {"name": "Counter.add", "actor": 5, "owner": 1})
    m.apply([call, Event(time.time(), "task", 9, "done", None), summary((1, "f", 1, {"done": 2}, 0.1, 2))])
    assert {s: n for s, n in m.groups["actor:5"].counts.items() if n} == {"done": 1}
    assert m.snapshot_totals(time.monotonic())["states"] == {"done": 3}


def test_what_finished_before_the_dashboard_or_a_clear_is_not_counted():
    m = model()
    m.apply([summary((1, "f", 1, {"done": 50, "running": 2}, 0.2, 50))])   # the first: when it subscribed
    assert m.snapshot_totals(time.monotonic())["states"] == {"running": 2}
    m.apply([summary((1, "f", 1, {"done": 52, "queued": 1}, 0.2, 52))])
    assert dict(m.groups["fn:f@cell3.py"].counts) == {"done": 2, "queued": 1}
    m.reset()                                              # the "clear" button
    m.apply([summary((1, "f", 1, {"done": 53}, 0.2, 53))])
    assert m.snapshot_totals(time.monotonic())["states"] == {"done": 1}
    assert m.groups["fn:f@cell3.py"].dur_n == 1


def test_a_failure_told_alone_is_placed_in_its_group():
    m = model()
    m.apply([summary()])
    m.apply([Event(time.time(), "task", 3, "failed", {"name": "g", "owner": 1, "site": 2, "fetch": 0.0})])
    assert m.tasks[3][1] == "fn:g@cell5.py"
    assert m.snapshot_totals(time.monotonic())["tasks"] == 0   # counted when the summary says so
