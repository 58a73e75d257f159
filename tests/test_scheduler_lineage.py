"""Lineage in the scheduler (pure state): a value lost with its node is made again by its task.

The controller calls keep_lineage for a task whose result it saw stored on a host other than the
head's, and rebuild when that host's node leaves; these tests drive the same calls by hand.
"""

import pytest

from jpar.runtime.wire import protocol as P
from jpar.runtime.head.scheduler import CancelOnEngine, DispatchTask, FreeObjects, Scheduler, TaskState

from .test_scheduler import done, of, spec

S = TaskState


def why(oid, reason):
    return f"lost {oid}: {reason}".encode()


@pytest.fixture
def two_far():
    """Engine 0 on node far-a and engine 1 on far-b, both with the custom resource "far"."""
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.engine_added(0, "far-a", {"CPU": 1, "far": 1})
    s.engine_added(1, "far-b", {"CPU": 1, "far": 1})
    return s


def run_on_far_a(s, tid, **kw):
    """Submit a task that needs "far", finish it on engine 0 with its value kept for lineage."""
    acts = s.submit(1, [spec(tid, far=1, **kw)])
    assert [a.engine_id for a in of(acts, DispatchTask)] == [0], "engine 0 was idle and comes first"
    s.keep_lineage(tid, [tid])
    done(s, 0, tid, blob=b"loc-a")


def lose_far_a(s, *oids):
    """Node far-a's engine dies; the head asks to rebuild what lived only there."""
    s.engine_removed(0, "killed")
    return s.rebuild("far-a", list(oids), why)


def test_a_lost_value_is_made_again_by_its_task_on_another_node(two_far):
    s = two_far
    run_on_far_a(s, 1)
    rebuilt, lost, acts = lose_far_a(s, 1)
    assert (rebuilt, lost) == ([1], [])
    assert of(acts, DispatchTask) == [DispatchTask(1, 1, ())]          # on far-b, the node left that fits
    assert not s.objects[1].ready and s.tasks[1].attempt == 1
    # a task given the value meanwhile waits for the new one, then runs on it
    s.submit(1, [spec(2, deps=[1])])
    assert s.tasks[2].state is S.WAITING
    acts = done(s, 1, 1, blob=b"loc-b")
    assert s.objects[1].ready and s.objects[1].blob == b"loc-b"
    assert s.tasks[2].state is S.RUNNING


def test_no_retries_left_is_lost_and_says_why(two_far):
    s = two_far
    run_on_far_a(s, 1, retries=0)
    rebuilt, lost, acts = lose_far_a(s, 1)
    assert rebuilt == [] and of(acts, DispatchTask) == []
    [(owner, rec)] = lost
    assert owner == 1 and rec.status == P.ERROR and b"no retries left" in rec.blob and b"max_retries=0" in rec.blob
    assert s.objects[1].status == P.ERROR and s.objects[1].blob == rec.blob   # tasks given it fail with it


def test_a_put_value_has_no_task_to_run_again(two_far):
    s = two_far
    s.put(1, [100], 0, [b"loc-a"])
    rebuilt, lost, _ = s.rebuild("far-a", [100], why)
    assert rebuilt == [] and b"put()" in lost[0][1].blob


def test_a_task_whose_argument_was_released_cannot_be_rebuilt(two_far):
    s = two_far
    s.put(1, [100], 0, [b"inline"])
    run_on_far_a(s, 1, deps=[100])
    s.release(1, [100])                       # the only ref to the argument is gone: freed
    assert 100 not in s.objects
    rebuilt, lost, _ = lose_far_a(s, 1)
    assert rebuilt == [] and b"no longer exists" in lost[0][1].blob


def test_a_chain_is_rebuilt_in_order(two_far):
    s = two_far
    run_on_far_a(s, 1)
    run_on_far_a(s, 2, deps=[1])
    rebuilt, lost, acts = lose_far_a(s, 1, 2)
    assert sorted(rebuilt) == [1, 2] and lost == []
    assert of(acts, DispatchTask)[0].task_id == 1                       # 2 waits for (or is chained behind) 1
    assert s.tasks[2].state in (S.WAITING, S.ASSIGNED)
    done(s, 1, 1, blob=b"loc-b")
    assert s.tasks[2].state in (S.RUNNING, S.ASSIGNED)
    done(s, 1, 2, blob=b"loc-b2")
    assert s.objects[2].ready and s.objects[2].blob == b"loc-b2"


def test_a_lost_argument_that_cannot_come_back_sinks_its_users(two_far):
    t = two_far
    run_on_far_a(t, 1, retries=0)
    run_on_far_a(t, 2, deps=[1])
    rebuilt, lost, _ = lose_far_a(t, 1, 2)
    assert rebuilt == []
    reasons = {rec.object_id: rec.blob for _, rec in lost}
    assert b"no retries left" in reasons[1] and b"was lost too" in reasons[2]


def test_what_no_node_left_can_run_is_lost(two_far):
    s = two_far
    s.engine_added(2, "head", {"CPU": 1})        # the head's node stays, without "far"
    run_on_far_a(s, 1)
    s.engine_removed(1, "killed")
    rebuilt, lost, _ = lose_far_a(s, 1)
    assert rebuilt == [] and b"no node left can run" in lost[0][1].blob


def test_lineage_goes_with_the_value(two_far):
    s = two_far
    run_on_far_a(s, 1)
    assert 1 in s.lineage
    acts = s.release(1, [1])
    assert FreeObjects((1,)) in acts and s.lineage == {} and s.lineage_of == {}


def test_tasks_given_a_value_being_rebuilt_wait_for_the_new_one(two_far):
    """Dispatched, queued and waiting users of a lost value: none may run on (or be sent) the old
    location. A dispatched one is cancelled on its engine, a retry spent; a late report of its old
    run is ignored; all run once the value is made again."""
    s = two_far
    s.engine_added(2, "head", {"CPU": 1})
    run_on_far_a(s, 1)
    s.submit(1, [spec(9, far=1)])                     # occupies far-a's engine
    s.submit(1, [spec(10, deps=[1], far=1)])          # runs on far-b's engine, sent the value's location
    s.submit(1, [spec(11, deps=[1], far=1)])          # ready, queued: both "far" engines busy
    s.submit(1, [spec(30, far=1)])                    # queued too
    s.submit(1, [spec(12, deps=[1, 30])])             # waits for 30
    assert (s.tasks[10].state, s.tasks[10].engine) == (S.RUNNING, 1)
    assert (s.tasks[11].state, s.tasks[12].state, s.tasks[12].missing) == (S.QUEUED, S.WAITING, 1)
    s.engine_removed(0, "killed")                     # 9 goes back to the queue (a retry)
    rebuilt, lost, acts = s.rebuild("far-a", [1], why)
    assert rebuilt == [1] and lost == []
    assert CancelOnEngine(1, 10, False) in acts and s.tasks[10].attempt == 1
    assert [(s.tasks[t].state, s.tasks[t].missing) for t in (10, 11, 12)] == [(S.WAITING, 1), (S.WAITING, 1),
                                                                              (S.WAITING, 2)]
    done(s, 1, 10, attempt=0)                          # the cancelled run reports: ignored
    assert s.tasks[10].state is S.WAITING
    for _ in range(3):                                 # far-b runs 9, then the rebuild of 1, then 30 (oldest first)
        [tid] = [t for t, task in s.tasks.items() if task.state is S.RUNNING and task.engine == 1]
        done(s, 1, tid, blob=b"loc-b")
    assert s.objects[1].ready and s.objects[1].blob == b"loc-b"
    assert all(s.tasks[t].state in (S.QUEUED, S.ASSIGNED, S.RUNNING) for t in (10, 11, 12))
