"""The scheduler as a pure state machine: events in, actions out, no processes."""

import pytest

from jpar.runtime.wire import protocol as P
from jpar.runtime.head.scheduler import (TRANSITIONS, CancelOnEngine, DispatchTask, DrainEngine, Failure, FreeObjects,
                            ReplyObjects, RetireEngine, RevokeOnEngine, SpawnEngine,
                            Scheduler, SendFailure, TaskState, Transition)

S = TaskState


def spec(tid, deps=(), cpus=1.0, gpus=0.0, retries=3, parent=0, placement=-1, returns=1, **res):
    resources = [("CPU", cpus)] + ([("GPU", gpus)] if gpus else []) + sorted(res.items())
    return P.TaskSpec(tid, 1, f"t{tid}", b"", tuple(deps), returns, tuple(resources), retries, False, parent, 0,
                      placement)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def done(sched, eng, tid, status=P.OK, blob=b"v", attempt=None):
    task = sched.tasks[tid]
    rec = P.DoneRecord(tid, task.attempt if attempt is None else attempt, status, ((tid, status, blob),), 0.5)
    return sched.tasks_done(eng, [rec])


@pytest.fixture
def sched():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    return s


@pytest.fixture
def unchained():
    """The head's own rules for a task waiting for its arguments: with chaining off, a dependant waits at
    the head even where it could be chained (as it does where it cannot: fan-out, another shape)."""
    s = Scheduler(prefetch=0, chain=False)
    s.client_added(1)
    return s


def test_every_transition_taken_is_in_the_table(unchained):
    sched = unchained
    acts = sched.engine_added(0, "n", {"CPU": 1})
    acts += sched.submit(1, [spec(10), spec(11, deps=[10])])
    acts += done(sched, 0, 10)
    acts += done(sched, 0, 11)
    moves = [(a.old, a.new) for a in of(acts, Transition)]
    assert moves and all(m in TRANSITIONS for m in moves)
    assert (None, S.QUEUED) in moves and (None, S.WAITING) in moves and (S.WAITING, S.QUEUED) in moves


def test_illegal_transition_is_refused(sched):
    sched.submit(1, [spec(1)])
    with pytest.raises(AssertionError, match="illegal transition"):
        sched._move(sched.tasks[1], S.DONE, "test")


def test_queued_until_an_engine_joins(sched):
    assert of(sched.submit(1, [spec(1)]), DispatchTask) == []
    assert sched.tasks[1].state is S.QUEUED
    assert of(sched.engine_added(0, "n", {"CPU": 1}), DispatchTask) == [DispatchTask(0, 1, ())]
    assert sched.tasks[1].state is S.RUNNING


def test_dependency_waits_then_runs_and_failure_propagates(unchained):
    sched = unchained
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[2])])
    assert sched.tasks[2].state is S.WAITING
    acts = done(sched, 0, 1)
    assert DispatchTask(0, 2, ()) in acts
    acts = done(sched, 0, 2, status=P.ERROR, blob=b"boom")
    fails = of(acts, SendFailure)
    assert [(f.task_id, f.kind, f.detail) for f in fails] == [(3, Failure.DEPENDENCY, b"boom")]
    assert 3 not in sched.tasks


def test_prefetch_depth_follows_task_duration():
    s = Scheduler(prefetch=8, prefetch_s=0.002)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(i) for i in range(1, 30)])
    assert len(s.engines[0].queue) == 1            # unknown durations: one at a time
    fast = [P.DoneRecord(1, 0, P.OK, ((1, P.OK, b""),), 1e-5)]
    s.tasks_done(0, fast)
    assert len(s.engines[0].queue) == 9            # short tasks: a deep prefetch queue
    assert s.available()["CPU"] == 0.0             # ...that reserves one CPU, not nine


def test_big_request_is_not_starved_by_younger_small_ones(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {"CPU": 2})
    sched.submit(1, [spec(1), spec(2), spec(3, cpus=2), spec(4), spec(5)])
    assert sched.tasks[3].state is S.QUEUED
    acts = done(sched, 0, 1)                      # one CPU frees: not enough for 3, and 4 must not take it
    assert of(acts, DispatchTask) == []
    acts = done(sched, 1, 2)
    assert of(acts, DispatchTask)[0].task_id == 3


def test_infeasible_fails_fast_with_the_numbers(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    fails = of(sched.submit(1, [spec(1, cpus=4), spec(2, widgets=1)]), SendFailure)
    assert [f.kind for f in fails] == [Failure.INFEASIBLE, Failure.INFEASIBLE]
    assert "CPU" in fails[0].detail and "no node can ever provide" in fails[0].detail


def test_custom_resources_and_gpus(sched):
    sched.engine_added(0, "n", {"CPU": 3, "GPU": 2, "GPU_IDS": ["0", "1"], "disk": 1})
    sched.engine_added(1, "n", {})
    sched.engine_added(2, "n", {})
    acts = sched.submit(1, [spec(1, gpus=1), spec(2, gpus=1), spec(3, gpus=1), spec(4, disk=1)])
    got = {a.task_id: a.gpu_ids for a in of(acts, DispatchTask)}
    assert sorted(got[1] + got[2]) == ["0", "1"] and 3 not in got
    acts = done(sched, sched.tasks[1].engine, 1)
    assert {a.task_id: a.gpu_ids for a in of(acts, DispatchTask)} == {3: got[1], 4: ()}


def test_engine_death_retries_then_gives_up(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1, retries=1)])
    sched.engine_added(1, "n", {})
    acts = sched.engine_removed(0)
    assert sched.tasks[1].attempt == 1 and DispatchTask(1, 1, ()) in acts
    acts = sched.engine_removed(1)
    fails = of(acts, SendFailure)
    assert [(f.task_id, f.kind) for f in fails] == [(1, Failure.ENGINE_CRASHED)]


def test_prefetched_task_on_a_dead_engine_keeps_its_retries():
    s = Scheduler(prefetch=4, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.engines[0].depth = 3
    s.submit(1, [spec(1, retries=0), spec(2, retries=0)])
    assert s.tasks[2].state is S.ASSIGNED
    acts = s.engine_removed(0)
    assert [f.task_id for f in of(acts, SendFailure)] == [1]   # it ran: no retries left
    assert s.tasks[2].state is S.QUEUED and s.tasks[2].attempt == 0


def test_a_dead_engines_tasks_go_back_to_the_front_in_their_order():
    s = Scheduler(prefetch=4, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.engines[0].depth = 4
    s.submit(1, [spec(i) for i in range(1, 7)])
    assert list(s.engines[0].queue) == [1, 2, 3, 4]          # 1 runs, 2-4 prefetched; 5 and 6 wait
    s.engine_removed(0, "killed")
    assert [s.tasks[t].state for t in range(1, 7)] == [S.QUEUED] * 6
    assert [list(q) for q in s.ready.values()] == [[1, 2, 3, 4, 5, 6]]   # in front of 5 and 6, order kept
    order = [a.task_id for a in of(s.engine_added(1, "n", {"CPU": 1}), DispatchTask)]
    while len(order) < 6:
        tid = order[-1]
        acts = s.task_done(1, tid, s.tasks[tid].attempt, False, ((tid, P.OK, b"v"),))
        order += [a.task_id for a in of(acts, DispatchTask)]
    assert order == [1, 2, 3, 4, 5, 6]


def test_tasks_an_engine_gives_back_keep_their_order():
    """Revoked tasks went back to the front one by one, reversed, like a dead engine's once did."""
    s = Scheduler(prefetch=4, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "n", {"CPU": 1})
    s.engines[0].depth = 4
    s.engines[1].depth = 4
    s.submit(1, [spec(i) for i in range(1, 11)])
    leaving = s.tasks[1].engine
    behind = tuple(t for t in s.engines[leaving].queue if t != 1)
    assert len(behind) >= 2
    s.drain_engines(engine_ids=[leaving])
    s.revoked(leaving, behind)
    queued = [t for q in s.ready.values() for t in q]
    assert queued[:len(behind)] == list(behind), queued          # at the front, in the engine's order
    assert queued == sorted(queued)


def test_late_report_from_a_previous_attempt_is_ignored(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.engine_added(1, "n", {})
    sched.submit(1, [spec(1)])
    eng = sched.tasks[1].engine
    sched.engine_removed(eng)
    acts = sched.tasks_done(eng, [P.DoneRecord(1, 0, P.OK, ((1, P.OK, b""),), 0.1)])
    assert sched.tasks[1].state is S.RUNNING and of(acts, Transition) == []


def test_cancel_queued_running_and_children(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2), spec(3, parent=1)])
    acts = sched.cancel(1, force=False, recursive=True)
    assert CancelOnEngine(0, 1, False) in acts
    cancelled = {f.task_id for f in of(acts, SendFailure) if f.kind is Failure.CANCELLED}
    assert cancelled == {1, 3}
    assert of(acts, DispatchTask) == [DispatchTask(0, 2, ())]


def test_objects_live_while_held_and_are_freed_after(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.put(1, [100], 0, [b"data"])
    sched.submit(1, [spec(1, deps=[100])])
    assert of(sched.release(1, [100]), FreeObjects) == []     # the pending task still needs it
    acts = done(sched, 0, 1)
    assert FreeObjects((100,)) in acts
    assert of(sched.release(1, [1]), FreeObjects) == [FreeObjects((1,))]


def test_get_objects_replies_when_ready_or_lost(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.client_added(2)
    sched.submit(1, [spec(1)])
    acts = sched.get_objects(2, 77, [1, 999])
    assert [(f.kind, f.object_ids) for f in of(acts, SendFailure)] == [(Failure.OBJECT_LOST, (999,))]
    acts = done(sched, 0, 1)
    assert ReplyObjects(2, 77, (1,)) in acts


def test_placement_pins_to_one_engine(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {})
    acts = sched.submit(1, [spec(1, placement=1), spec(2, placement=1), spec(3, placement=5)])
    assert of(acts, DispatchTask) == [DispatchTask(1, 1, ())]
    assert [f.task_id for f in of(acts, SendFailure)] == [3]
    acts = sched.engine_removed(1)
    assert [(f.task_id, f.kind) for f in of(acts, SendFailure)] == [(1, Failure.ENGINE_CRASHED),
                                                                    (2, Failure.ENGINE_CRASHED)]


def test_blocked_task_frees_its_engine(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2, parent=1)])
    assert sched.tasks[2].state is S.QUEUED
    acts = sched.blocked(0, 1, True)
    assert DispatchTask(0, 2, ()) in acts


def test_client_leaving_cancels_its_work(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    acts = sched.client_removed(1)
    assert CancelOnEngine(0, 1, False) in acts
    assert sched.tasks == {} and sched.statistics().tasks["cancelled"] == 2


def test_no_prefetch_behind_a_task_that_runs_far_longer_than_usual():
    s = Scheduler(prefetch=8, prefetch_s=0.002)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 2})
    s.engine_added(1, "n", {})
    for eng in s.engines.values():
        eng.avg_s, eng.depth = 1e-4, 9                # both have run tiny tasks quickly so far
    s.now = 100.0
    s.submit(1, [spec(1)])                            # a long task starts on one engine
    slow = s.tasks[1].engine
    s.now = 102.0                                     # two seconds later, tiny tasks arrive
    acts = s.submit(1, [spec(i) for i in range(2, 10)])
    assert {a.engine_id for a in of(acts, DispatchTask)} == {1 - slow}


def two_fast_engines() -> Scheduler:
    """Two engines on one 2-CPU node, each with a deep prefetch queue of tasks taking 0.1 ms."""
    s = Scheduler(prefetch=8, prefetch_s=0.002)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 2})
    s.engine_added(1, "n", {})
    for eng in s.engines.values():
        eng.avg_s, eng.depth = 1e-4, 9
    return s


def test_idle_engine_takes_back_tasks_queued_behind_a_long_one():
    s = two_fast_engines()
    s.now = 10.0
    s.submit(1, [spec(1), spec(2), spec(3), spec(4)])     # 1 turns out long; 3 is prefetched behind it
    slow = s.tasks[1].engine
    behind = [t for t in s.engines[slow].queue if t != 1]
    assert behind
    fast = 1 - slow
    for tid in list(s.engines[fast].queue):
        s.tasks_done(fast, [P.DoneRecord(tid, 0, P.OK, ((tid, P.OK, b""),), 1e-4)])
    s.now = 11.0
    acts = s.tick()
    assert of(acts, RevokeOnEngine) == [RevokeOnEngine(slow, tuple(behind))]
    assert of(s.tick(), RevokeOnEngine) == []             # asked once, not on every tick
    acts = s.revoked(slow, behind)
    assert {a.task_id: a.engine_id for a in of(acts, DispatchTask)} == {t: fast for t in behind}
    assert s.tasks[1].state is S.RUNNING and list(s.engines[slow].queue) == [1]


def test_goodbye_lets_running_tasks_finish_but_a_vanished_client_loses_them(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    acts = sched.client_removed(1, graceful=True)
    assert of(acts, CancelOnEngine) == [] and sched.tasks[1].state is S.RUNNING   # its result may be out
    assert 2 not in sched.tasks                                                  # queued work is dropped
    done(sched, 0, 1)
    assert sched.statistics().tasks["done"] == 1 and sched.objects == {}         # counted done, then freed
    sched.client_added(2)
    sched.submit(2, [spec(3)])
    assert CancelOnEngine(0, 3, False) in sched.client_removed(2)


# ---- removing engines (drain) and cancelling a client's work
def prefetching(n_engines: int) -> Scheduler:
    """Engines that have run tiny tasks quickly, so they prefetch deep queues."""
    s = Scheduler(prefetch=8, prefetch_s=0.002)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": n_engines})
    for e in range(1, n_engines):
        s.engine_added(e, "n", {})
    for eng in s.engines.values():
        eng.avg_s, eng.depth = 1e-4, 9
    return s


def test_drain_picks_idle_engines_first_then_fewest_queued_newest_first(sched):
    for e in range(4):
        sched.engine_added(e, "n", {"CPU": 4} if e == 0 else {})
    sched.submit(1, [spec(1, placement=0), spec(2, placement=2)])       # engines 0 and 2 busy, 1 and 3 idle
    acts = sched.drain_engines(1)
    assert of(acts, DrainEngine) == [DrainEngine(3)] and of(acts, RetireEngine) == [RetireEngine(3)]
    acts = sched.drain_engines(2)
    assert of(acts, DrainEngine) == [DrainEngine(1), DrainEngine(2)]   # the idle one, then the newest busy one
    assert of(acts, RetireEngine) == [RetireEngine(1)]                  # engine 2 still runs task 2
    assert sched.engines[2].draining and sched.tasks[2].state is S.RUNNING


def test_draining_engine_gets_no_new_tasks_and_retires_after_its_running_task(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {})
    sched.submit(1, [spec(1), spec(2)])
    draining = sched.tasks[1].engine
    other = 1 - draining
    acts = sched.drain_engines(engine_ids=[draining])
    assert of(acts, DrainEngine) == [DrainEngine(draining)] and of(acts, RetireEngine) == []
    acts = sched.submit(1, [spec(3), spec(4)])
    assert of(acts, DispatchTask) == []                                 # the other engine is busy: they wait
    acts = done(sched, other, 2)
    assert of(acts, DispatchTask) == [DispatchTask(other, 3, ())] and of(acts, RetireEngine) == []
    acts = done(sched, draining, 1)                                     # its running task finishes normally
    assert of(acts, RetireEngine) == [RetireEngine(draining)] and of(acts, DispatchTask) == []
    assert of(acts, SendFailure) == [] and sched.statistics().tasks["done"] == 2
    acts = sched.engine_removed(draining)
    assert of(acts, SendFailure) == [] and sched.tasks[4].state is S.QUEUED
    assert draining not in sched.engines and [t.state for t in sched.tasks.values()] == [S.RUNNING, S.QUEUED]


def test_prefetched_tasks_of_a_draining_engine_are_revoked_and_rerun_elsewhere():
    s = prefetching(2)
    s.submit(1, [spec(i) for i in range(1, 9)])
    leaving = s.tasks[1].engine
    stay = 1 - leaving
    behind = tuple(t for t in s.engines[leaving].queue if t != 1)
    assert behind
    acts = s.drain_engines(engine_ids=[leaving])
    assert of(acts, RevokeOnEngine) == [RevokeOnEngine(leaving, behind)]
    acts = s.revoked(leaving, behind)                  # the engine gave them all back unstarted
    assert of(acts, RetireEngine) == []                # task 1 still runs there
    assert list(s.engines[leaving].queue) == [1]
    ran = {a.task_id: a.engine_id for a in of(acts, DispatchTask)}
    while s.engines[stay].queue:
        tid = next(iter(s.engines[stay].queue))
        acts = s.tasks_done(stay, [P.DoneRecord(tid, 0, P.OK, ((tid, P.OK, b""),), 1e-4)])
        ran.update({a.task_id: a.engine_id for a in of(acts, DispatchTask)})
    assert set(behind) <= set(ran) and set(ran.values()) == {stay}   # every one re-ran on the other engine
    acts = s.tasks_done(leaving, [P.DoneRecord(1, 0, P.OK, ((1, P.OK, b""),), 1e-4)])
    assert of(acts, RetireEngine) == [RetireEngine(leaving)]
    assert s.tasks == {} and s.statistics().tasks["done"] == 8


def test_a_started_task_the_engine_would_not_give_back_still_finishes_before_retiring():
    s = prefetching(2)
    s.submit(1, [spec(1), spec(2), spec(3), spec(4)])
    leaving = s.tasks[1].engine
    behind = tuple(t for t in s.engines[leaving].queue if t != 1)
    s.drain_engines(engine_ids=[leaving])
    acts = s.revoked(leaving, behind[1:])              # it had started the first one already
    assert of(acts, RetireEngine) == []
    s.tasks_done(leaving, [P.DoneRecord(1, 0, P.OK, ((1, P.OK, b""),), 1e-4)])
    acts = s.tasks_done(leaving, [P.DoneRecord(behind[0], 0, P.OK, ((behind[0], P.OK, b""),), 1e-4)])
    assert of(acts, RetireEngine) == [RetireEngine(leaving)]


def test_a_task_given_back_after_the_one_ahead_finished_is_rerun_not_lost():
    s = prefetching(2)
    s.submit(1, [spec(1), spec(2), spec(3), spec(4)])
    leaving = s.tasks[1].engine
    behind = tuple(t for t in s.engines[leaving].queue if t != 1)
    s.drain_engines(engine_ids=[leaving])
    s.tasks_done(leaving, [P.DoneRecord(1, 0, P.OK, ((1, P.OK, b""),), 1e-4)])   # crosses the Revoke
    assert s.tasks[behind[0]].state is S.RUNNING                                   # as far as the head knows
    acts = s.revoked(leaving, behind)                                               # but the engine gave it back
    assert {a.task_id for a in of(acts, DispatchTask)} == set(behind)
    assert all(s.tasks[t].engine == 1 - leaving for t in behind)
    assert of(acts, RetireEngine) == [RetireEngine(leaving)]


def test_the_last_engine_and_unknown_engines_are_refused_and_nothing_changes(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {})
    with pytest.raises(ValueError, match="keeps at least one engine"):
        sched.drain_engines(2)
    with pytest.raises(ValueError, match="keeps at least one engine"):
        sched.drain_engines(engine_ids=[0, 1])
    with pytest.raises(LookupError, match="No engine with id 7"):
        sched.drain_engines(engine_ids=[0, 7])
    with pytest.raises(ValueError, match="at least one"):
        sched.drain_engines(0)
    assert not any(e.draining for e in sched.engines.values())
    sched.drain_engines(1)
    with pytest.raises(ValueError, match="keeps at least one engine"):
        sched.drain_engines(1)                         # one is leaving: the other is the last
    assert of(sched.drain_engines(engine_ids=[1]), DrainEngine) == [DrainEngine(1)]   # asking again is harmless


def test_tasks_pinned_to_a_removed_engine_fail_saying_so(unchained):
    sched = unchained
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {})
    sched.submit(1, [spec(1, placement=1), spec(2, placement=1), spec(3, deps=[1], placement=1)])
    acts = sched.drain_engines(engine_ids=[1])
    fails = {f.task_id: f for f in of(acts, SendFailure)}
    assert list(fails) == [2] and fails[2].kind is Failure.INFEASIBLE and "being removed" in fails[2].detail
    acts = sched.submit(1, [spec(4, placement=1)])
    assert [f.task_id for f in of(acts, SendFailure)] == [4]
    acts = done(sched, 1, 1)                          # the running pinned task finishes; its dependant can't run
    assert [f.task_id for f in of(acts, SendFailure)] == [3] and of(acts, RetireEngine) == [RetireEngine(1)]
    sched.engine_removed(1)
    acts = sched.submit(1, [spec(5, placement=1)])
    (fail,) = of(acts, SendFailure)
    assert fail.kind is Failure.INFEASIBLE and "was removed on request" in fail.detail


def test_cancel_client_cancels_only_that_clients_tasks_and_counts_them(unchained):
    sched = unchained
    sched.engine_added(0, "n", {"CPU": 2})
    sched.engine_added(1, "n", {})
    sched.client_added(2)
    sched.submit(1, [spec(1), spec(2), spec(3, deps=[1])])           # two run, one waits
    sched.submit(2, [spec(10), spec(11)])                            # queued behind them
    sched.submit(2, [spec(12, parent=1)])                            # a child of client 1's task 1
    acts = sched.cancel_client(1, force=False)
    cancelled = [a.task_id for a in of(acts, Transition) if a.new is S.CANCELLED]
    assert sorted(cancelled) == [1, 2, 3, 12]
    assert sorted(a.task_id for a in of(acts, CancelOnEngine)) == [1, 2]
    assert {(f.owner, f.task_id, f.kind) for f in of(acts, SendFailure)} == {
        (1, 1, Failure.CANCELLED), (1, 2, Failure.CANCELLED), (1, 3, Failure.CANCELLED), (2, 12, Failure.CANCELLED)}
    assert {a.task_id for a in of(acts, DispatchTask)} == {10, 11}   # client 2's tasks take the engines
    assert of(sched.cancel_client(1, force=True), Transition) == []  # nothing left: count 0
    with pytest.raises(LookupError, match="No client"):
        sched.cancel_client(9, force=False)


@pytest.mark.parametrize("why", ["infeasible", "unknown engine", "argument lost"])
def test_a_task_failed_at_submission_leaves_its_arguments_references_alone(sched, why):
    """A task failed before it could wait (no node fits it, no such engine, an argument already gone)
    must not drop references it never took: the object stays while another task still needs it."""
    sched.engine_added(0, "n", {"CPU": 1})
    sched.put(1, [100], 0, [b"data"])
    sched.submit(1, [spec(1, cpus=1)])                                      # keeps the engine busy
    bad = {"infeasible": spec(2, deps=[100], cpus=64), "unknown engine": spec(2, deps=[100], placement=7),
           "argument lost": spec(2, deps=[999, 100])}[why]
    acts = sched.submit(1, [bad])
    assert of(acts, SendFailure) and 2 not in sched.tasks
    assert sched.objects[100].task_refs == 0
    sched.submit(1, [spec(3, deps=[100])])                                  # queued behind task 1
    assert of(sched.release(1, [100]), FreeObjects) == []                   # task 3 still needs it
    acts = done(sched, 0, 1)
    assert of(acts, DispatchTask) == [DispatchTask(0, 3, ())] and 100 in sched.objects
    assert FreeObjects((100,)) in done(sched, 0, 3)


# ---- a task blocked in get() never holds up what it waits for
def test_blocked_engine_takes_only_what_its_top_blocked_task_submitted(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2), spec(3, parent=1)])
    acts = sched.blocked(0, 1, True)
    # 2 might wait on 1 (a ref to 1 can reach it): run on top of 1 it would never finish
    assert of(acts, DispatchTask) == [DispatchTask(0, 3, ())]
    assert sched.tasks[2].state is S.QUEUED
    acts = done(sched, 0, 3)
    acts += sched.blocked(0, 1, False)
    acts += done(sched, 0, 1)
    assert of(acts, DispatchTask) == [DispatchTask(0, 2, ())]


def test_blocking_gives_back_prefetched_tasks_it_did_not_submit():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.engines[0].depth = 4
    s.submit(1, [spec(1), spec(2), spec(3)])
    assert list(s.engines[0].queue) == [1, 2, 3]
    acts = s.blocked(0, 1, True)
    assert of(acts, RevokeOnEngine) == [RevokeOnEngine(0, (2, 3))]
    s.revoked(0, [2, 3])
    assert s.tasks[2].state is S.QUEUED and s.tasks[3].state is S.QUEUED


def test_extra_engine_started_for_blocked_tasks_and_retired_after(sched):
    sched.spawn_nodes.add("n")
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    sched.now = 10.0
    sched.blocked(0, 1, True)
    sched.now = 10.05
    assert of(sched.tick(), SpawnEngine) == []             # a short block: no extra engine yet
    sched.now = 10.2
    assert of(sched.tick(), SpawnEngine) == [SpawnEngine("n")]
    assert of(sched.tick(), SpawnEngine) == []             # one per blocked engine at most
    total = dict(sched.nodes["n"].total)
    acts = sched.engine_added(1, "n", {"CPU": 1}, extra=True)
    assert of(acts, DispatchTask) == [DispatchTask(1, 2, ())]
    assert sched.nodes["n"].total == total                 # it runs on the blocked task's lent CPU
    assert of(done(sched, 1, 2), RetireEngine) == []       # still blocked: the extra engine stays
    acts = sched.blocked(0, 1, False)
    assert of(acts, RetireEngine) == [RetireEngine(1)]
    sched.engine_removed(1)
    assert sched.extras == 0 and sched.nodes["n"].total == total


def test_no_extra_engine_where_the_head_cannot_start_one(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    sched.blocked(0, 1, True)
    sched.now = 100.0
    assert of(sched.tick(), SpawnEngine) == []


def test_failed_extra_engine_start_can_be_retried(sched):
    sched.spawn_nodes.add("n")
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2)])
    sched.blocked(0, 1, True)
    sched.now = 1.0
    assert of(sched.tick(), SpawnEngine) == [SpawnEngine("n")]
    sched.spawn_failed("n")
    assert of(sched.tick(), SpawnEngine) == [SpawnEngine("n")]


# ---------------------------------------------------------------- compact queued tasks (Queued)
def test_a_ready_task_waits_in_the_compact_form_until_placed(sched):
    from jpar.runtime.head.scheduler_state import Obj, Queued, Task

    sched.submit(1, [spec(1), spec(2, returns=2)])
    q = sched.tasks[1]
    assert type(q) is Queued and sched.objects[1] is q                   # one record: the task and its object
    assert (q.state, q.owner, q.engine, q.attempt, q.return_ids, q.demand) == (S.QUEUED, 1, -1, 0, (1,), {"CPU": 1.0})
    assert (q.ready, q.held_by_owner, q.task_refs, q.requests) == (False, True, 0, ())
    assert q.spec == spec(1)
    assert type(sched.tasks[2]) is Task                                   # several returns: a full record
    assert sched.statistics().tasks["queued"] == 2 and sched.statistics().objects == 3
    acts = sched.engine_added(0, "n", {"CPU": 1})
    assert of(acts, DispatchTask)[0] == DispatchTask(0, 1, ())
    assert type(sched.tasks[1]) is Task and sched.tasks[1].spec == spec(1) and type(sched.objects[1]) is Obj
    assert sched.tasks[1].state is S.RUNNING
    with pytest.raises(AttributeError):
        q.state = S.DONE                                                  # read-only: a change needs the full record


def test_a_compact_queued_task_is_found_by_cancel_get_release_and_dependents(unchained):
    sched = unchained
    sched.submit(1, [spec(1), spec(2), spec(3), spec(4), spec(5)])
    acts = sched.cancel(1, force=False, recursive=True)
    assert [(f.task_id, f.object_ids, f.kind) for f in of(acts, SendFailure)] == [(1, (1,), Failure.CANCELLED)]
    assert 1 not in sched.tasks and sched.objects[1].status == 1                 # kept: its owner holds it
    assert sched.get_objects(2, 9, [2]) == [] and sched.objects[2].requests == [(2, 9)]
    assert sched.release(1, [3]) == [] and not sched.objects[3].held_by_owner
    sched.submit(1, [spec(6, deps=[4])])
    assert sched.tasks[6].state is S.WAITING and sched.objects[4].waiters == [6] and sched.objects[4].task_refs == 1
    sched.engine_added(0, "n", {"CPU": 1})
    acts = done(sched, 0, 2)
    assert ReplyObjects(2, 9, (2,)) in acts
    acts = done(sched, 0, 3)
    assert FreeObjects((3,)) in acts and 3 not in sched.objects                  # released while queued
    done(sched, 0, 4)
    assert sched.tasks[5].state is S.RUNNING and sched.tasks[6].state is S.QUEUED
    sched.client_removed(1)
    assert sched.tasks == {} and sched.objects == {}
    assert sched.statistics().tasks["cancelled"] == 3                            # 1, then 5 and 6 as it left


def test_cancelling_a_client_reaches_its_compact_tasks_in_submit_order(sched):
    sched.submit(1, [spec(3), spec(1), spec(2)])
    acts = sched.cancel_client(1)
    assert [f.task_id for f in of(acts, SendFailure)] == [3, 1, 2]
    assert sched.tasks == {} and all(o.status == 1 for o in sched.objects.values())


# ---------------------------------------------------------------- chaining (scheduler_chaining)
def moves(acts):
    return [(a.task_id, a.old, a.new) for a in of(acts, Transition)]


def test_a_chain_is_sent_at_once_behind_its_first_task_and_runs_there(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.engine_added(1, "n", {"CPU": 1})
    acts = sched.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[2])])
    assert (2, S.WAITING, S.ASSIGNED) in moves(acts) and (3, S.WAITING, S.ASSIGNED) in moves(acts)
    assert [(d.engine_id, d.task_id) for d in of(acts, DispatchTask)] == [(0, 1), (0, 2), (0, 3)]
    assert "chained" in next(a.stimulus for a in of(acts, Transition) if a.task_id == 2 and a.new is S.ASSIGNED)
    assert (sched.tasks[2].chained, sched.tasks[3].chained) == (1, 2)
    assert list(sched.engines[0].queue) == [1, 2, 3] and sched.engines[1].queue == {}
    assert sorted(moves(done(sched, 0, 1))) == [(1, S.RUNNING, S.DONE), (2, S.ASSIGNED, S.RUNNING)]
    done(sched, 0, 2)
    done(sched, 0, 3)
    assert sched.tasks == {} and sched.counts[S.DONE] == 3


def test_a_task_submitted_after_its_argument_was_placed_is_chained_too(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1)])
    acts = sched.submit(1, [spec(2, deps=[1])])
    assert moves(acts) == [(2, None, S.WAITING), (2, S.WAITING, S.ASSIGNED)] and of(acts, DispatchTask)


def test_only_one_waiter_per_value_and_only_of_the_same_shape_is_chained(sched):
    sched.engine_added(0, "n", {"CPU": 2})
    sched.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[1]), spec(4, deps=[1], cpus=2.0)])
    assert [sched.tasks[t].state for t in (2, 3, 4)] == [S.ASSIGNED, S.WAITING, S.WAITING]
    acts = done(sched, 0, 1)                   # the others spread once the value is ready
    assert (3, S.WAITING, S.QUEUED) in moves(acts) and (4, S.WAITING, S.QUEUED) in moves(acts)


def test_a_failed_producer_fails_its_chained_tasks_at_once_and_stops_them_on_the_engine(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[2])])
    acts = done(sched, 0, 1, status=P.ERROR, blob=b"boom")
    fails = {f.task_id: f.detail for f in of(acts, SendFailure)}
    assert fails == {2: b"boom", 3: b"boom"}
    assert CancelOnEngine(0, 2, False) in acts and CancelOnEngine(0, 3, False) in acts
    assert sched.given_back(0, [2, 3]) == [] and sched.tasks == {}     # the engine's word comes late: no-op


def test_a_retried_producer_gets_its_chained_task_back_waiting(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2, deps=[1])])
    acts = sched.tasks_done(0, [P.DoneRecord(1, 0, 2, (), 0.1)])      # RETRY
    assert (1, S.RUNNING, S.QUEUED) in moves(acts)
    assert sched.tasks[2].state is S.RUNNING    # the head takes it to follow 1 on its engine, which is full
    acts = sched.given_back(0, [2])             # the engine had no value for it: 1 goes there, 2 chains again
    assert moves(acts) == [(2, S.RUNNING, S.WAITING), (1, S.QUEUED, S.RUNNING), (2, S.WAITING, S.ASSIGNED)]
    assert of(acts, DispatchTask) == [DispatchTask(0, 1, ()), DispatchTask(0, 2, ())]
    done(sched, 0, 1)
    done(sched, 0, 2)
    assert sched.tasks == {}


def test_chained_tasks_survive_their_engine_dying_and_chain_again(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[2])])
    acts = sched.engine_removed(0, "exit code -9")
    assert sorted(moves(acts)) == [(1, S.RUNNING, S.QUEUED), (2, S.ASSIGNED, S.WAITING), (3, S.ASSIGNED, S.WAITING)]
    acts = sched.engine_added(5, "n", {"CPU": 1})
    assert [d.task_id for d in of(acts, DispatchTask)] == [1, 2, 3]
    assert sched.tasks[3].chained == 2 and sched.tasks[3].engine == 5


def test_a_chained_task_is_never_stolen_but_goes_back_with_a_leaving_engine():
    s = two_fast_engines()
    s.submit(1, [spec(1), spec(2, deps=[1]), spec(3, deps=[2])])
    e = s.tasks[1].engine
    s.now = 50.0
    assert of(s.tick(), RevokeOnEngine) == []   # an idle engine, but the chain could run nowhere sooner
    acts = s.drain_engines(engine_ids=[e])
    assert RevokeOnEngine(e, (2, 3)) in acts
    acts = s.revoked(e, (2, 3))
    assert sorted(moves(acts)) == [(2, S.ASSIGNED, S.WAITING), (3, S.ASSIGNED, S.WAITING)]


def test_with_chaining_off_dependants_wait_at_the_head(unchained):
    unchained.engine_added(0, "n", {"CPU": 1})
    unchained.submit(1, [spec(1), spec(2, deps=[1])])
    assert unchained.tasks[2].state is S.WAITING and unchained.tasks[2].engine == -1


def test_a_task_whose_other_arguments_are_ready_chains_behind_its_last_one(sched):
    sched.engine_added(0, "n", {"CPU": 1})
    sched.engine_added(1, "m", {"CPU": 1})
    sched.submit(1, [spec(1), spec(2), spec(3, deps=[1, 2])])
    assert {sched.tasks[1].state, sched.tasks[2].state} == {S.RUNNING}
    assert sched.tasks[3].state is S.WAITING and sched.tasks[3].missing == 2
    other = sched.tasks[2].engine
    acts = done(sched, sched.tasks[1].engine, 1)
    assert (3, S.WAITING, S.ASSIGNED) in moves(acts) and DispatchTask(other, 3, ()) in acts
    assert sched.tasks[3].chained == 2


def _stored_on(node, size):
    """A location record as engines report a stored value (what the head keeps as its blob)."""
    import pickle

    from jpar.runtime.store.segments import LOCATION_MAGIC, Location

    return LOCATION_MAGIC + pickle.dumps(tuple(Location("tag", node, f"seg-{node}", size, "host", "")))


def test_a_task_goes_to_a_free_engine_of_the_node_holding_its_stored_arguments(sched):
    """Locality: engine 0 (node a) comes first otherwise; the task's bytes are mostly on node b."""
    sched.engine_added(0, "a", {"CPU": 1})
    sched.engine_added(1, "b", {"CPU": 1})
    sched.put(1, [100, 101, 102], 0, [_stored_on("b", 8 << 20), _stored_on("a", 1 << 20), b"inline"])
    acts = sched.submit(1, [spec(1, deps=[100, 101, 102])])
    assert [a.engine_id for a in of(acts, DispatchTask)] == [1]
    acts = sched.submit(1, [spec(2, deps=[100])])            # node b's engine is busy: not waited for
    assert [a.engine_id for a in of(acts, DispatchTask)] == [0]
    acts = sched.submit(1, [spec(3, deps=[102])])             # nothing stored: the usual order (both busy: queued)
    assert of(acts, DispatchTask) == []
