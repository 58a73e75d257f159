"""Scheduler rules that mutation testing found unchecked: invariants under random event streams, each
task's story (its transitions, as the event stream publishes them), the exact failures owners are
told, extra engines for blocked tasks, GPUs, and the read-only views. Pure: no processes.

The random streams are seeded and replayable; after every event the scheduler's books must add up
(:func:`check`), and in the end every submitted task has exactly one terminal transition.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from jpar.runtime.wire import protocol as P
from jpar.runtime.head.scheduler import (CancelOnEngine, DispatchTask, DrainEngine, Failure, FreeObjects, ReplyObjects,
                            RetireEngine, RevokeOnEngine, Scheduler, SendFailure, SpawnEngine, TaskState, Transition)
from jpar.runtime.head.scheduler_state import PER_ENGINE, TERMINAL

S = TaskState


def spec(tid, deps=(), cpus=1.0, gpus=0.0, retries=3, parent=0, placement=-1, returns=1, name=None):
    resources = [("CPU", cpus)] + ([("GPU", gpus)] if gpus else [])
    return P.TaskSpec(tid, 1, name or f"t{tid}", b"", tuple(deps), returns, tuple(resources), retries, False, parent,
                      0, placement)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def story(actions):
    return [(t.task_id, t.old, t.new, t.stimulus) for t in of(actions, Transition)]


def rec(sched, tid, status=P.OK, blob=b"v", duration=0.5, attempt=None):
    a = sched.tasks[tid].attempt if attempt is None else attempt
    return P.DoneRecord(tid, a, status, ((tid, status, blob),), duration)


def done(sched, eng, tid, **kw):
    return sched.tasks_done(eng, [rec(sched, tid, **kw)])


def per_engine_node(s, *engine_ids, node="n", extra=False):
    acts = []
    for e in engine_ids:
        acts += s.engine_added(e, node, {PER_ENGINE: {"CPU": 1.0}}, extra=extra)
    return acts


@pytest.fixture
def s():
    sched = Scheduler(prefetch=0)
    sched.client_added(1)
    return sched


@pytest.fixture
def unchained():
    """With chaining off: the head's rules for dependants waiting at the head (see test_scheduler.py)."""
    sched = Scheduler(prefetch=0, chain=False)
    sched.client_added(1)
    return sched


# ---------------------------------------------------------------- the books must add up
def check(s: Scheduler) -> None:
    """Invariants that hold between any two events."""
    live = Counter(t.state for t in s.tasks.values())
    for state in (S.WAITING, S.QUEUED, S.ASSIGNED, S.RUNNING):
        assert s.counts[state] == live[state], (state, s.counts[state], live[state])
    assert not any(t.state in TERMINAL for t in s.tasks.values())
    queued = set()
    for q in s.ready.values():
        queued.update(q)
    for tid, t in s.tasks.items():
        if t.state in (S.WAITING, S.QUEUED):
            assert t.engine == -1, (tid, t.state, t.engine)
        if t.state is S.QUEUED:
            assert tid in queued, tid
        if t.state is S.WAITING:
            assert t.missing > 0
        if t.state in (S.ASSIGNED, S.RUNNING):
            assert t.engine in s.engines and tid in s.engines[t.engine].queue, (tid, t.state, t.engine)
    for e, eng in s.engines.items():
        assert e in s.nodes[eng.node].engines
        mine = [tid for tid, t in s.tasks.items() if t.engine == e]
        assert sorted(eng.queue) == sorted(mine), (e, list(eng.queue), mine)
        unblocked = [s.tasks[tid] for tid in eng.queue if not s.tasks[tid].blocked]
        assert eng.active == len(unblocked)
        assert eng.shapes == dict(Counter(t.dshape for t in unblocked))
        want: dict = {}
        for t in unblocked:
            for k, v in t.dshape:
                want[k] = max(want.get(k, 0.0), v)
        assert eng.reserved == want, (e, eng.reserved, want)
    for name, node in s.nodes.items():
        assert node.engines and all(s.engines[e].node == name for e in node.engines)
        for k in set(node.used) | {k for e in node.engines for k in s.engines[e].reserved}:
            assert node.used.get(k, 0.0) == pytest.approx(sum(s.engines[e].reserved.get(k, 0.0)
                                                                for e in node.engines)), (name, k)
        for g, free in node.gpu_free.items():
            held = sum(t.demand["GPU"] if t.demand["GPU"] < 1 else 1.0
                       for t in s.tasks.values() if g in t.gpu_ids)
            assert free == pytest.approx(1.0 - held), (g, free, held)
    assert s.extras == sum(1 for e in s.engines.values() if e.extra) + sum(n.spawning for n in s.nodes.values())
    st = s.statistics()
    assert st.engines == len(s.engines) and st.nodes == len(s.nodes) and st.objects == len(s.objects)
    assert st.clients == len(s.clients) and st.ready == sum(len(q) for q in s.ready.values())
    assert st.tasks["running"] == live[S.RUNNING] and st.tasks["queued"] == live[S.QUEUED]


class Sim:
    """A controller and engines as the scheduler sees them, driven by a seeded random event stream."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.s = Scheduler(prefetch=self.rng.choice([0, 2, 8]))
        self.s.client_added(1)
        self.next_task = 1
        self.next_engine = 0
        self.terminal: Counter = Counter()
        self.failures: Counter = Counter()
        self.submitted: list[int] = []
        self.revokes: list = []
        self.retire: list = []
        self.crash: list = []
        for _ in range(self.rng.randint(1, 3)):
            self.add_engine("a")
        self.add_engine("b")

    def new_engine(self):
        self.next_engine += 1
        return self.next_engine

    def add_engine(self, node):
        if node == "a":
            self.apply(per_engine_node(self.s, self.new_engine(), node=node))
        else:
            self.apply(self.s.engine_added(self.new_engine(), "b", {"CPU": 2.0, "GPU": 1.0, "GPU_IDS": ["g0"]}))

    def crashed(self, e, why):
        """An engine died: the controller starts another on its node (as the head respawns engines)."""
        node = self.s.engines[e].node
        self.apply(self.s.engine_removed(e, why))
        self.add_engine(node)

    def apply(self, acts):
        for a in acts:
            if isinstance(a, Transition):
                if a.new in TERMINAL:
                    self.terminal[a.task_id] += 1
                    assert a.task_id not in self.s.tasks
            elif isinstance(a, SendFailure):
                assert a.owner == 1
                self.failures[a.task_id] += 1
            elif isinstance(a, RevokeOnEngine):
                self.revokes.append(a)
            elif isinstance(a, RetireEngine):
                self.retire.append(a.engine_id)
            elif isinstance(a, CancelOnEngine) and a.force:
                self.crash.append(a.engine_id)
        check(self.s)

    def step(self):
        s, rng = self.s, self.rng
        self.s.now += rng.uniform(0, 0.05)
        while self.retire:
            e = self.retire.pop()
            if e in s.engines:
                self.apply(s.engine_removed(e, "retired"))
        while self.crash:
            e = self.crash.pop()
            if e in s.engines:
                self.crashed(e, "killed by cancel(force=True)")
        if self.revokes and rng.random() < 0.7:
            r = self.revokes.pop(0)
            eng = s.engines.get(r.engine_id)
            if eng is not None:
                first = next(iter(eng.queue), None)   # the engine runs its first task: it gives back the others
                self.apply(s.revoked(r.engine_id, tuple(t for t in r.task_ids if t != first)))
        x = rng.random()
        running = [t for t in s.tasks.values() if t.state is S.RUNNING]
        runnable = [t for t in running if not t.blocked]   # a task blocked in get() cannot finish
        if x < 0.35:
            specs = []
            for _ in range(rng.randint(1, 3)):
                tid = self.next_task
                self.next_task += 3
                pool = [o for o in s.objects if rng.random() < 0.3]
                deps = tuple(rng.sample(pool, min(len(pool), rng.randint(0, 2))))
                parent = rng.choice(running).spec.task_id if running and rng.random() < 0.2 else 0
                gpus = rng.choice([0.0, 0.0, 0.0, 0.5, 1.0])
                specs.append(spec(tid, deps=deps, cpus=rng.choice([1.0, 1.0, 0.5, 2.0]), gpus=gpus,
                                  retries=rng.randint(0, 2), parent=parent, returns=rng.choice([1, 1, 2])))
                self.submitted.append(tid)
            self.apply(s.submit(1, specs))
        elif x < 0.7:
            if runnable:
                t = rng.choice(runnable)
                if t.chained and not s._made(t.chained):   # as an engine does: its argument was not made there
                    self.apply(s.given_back(t.engine, [t.spec.task_id]))
                    return
                status = rng.choice([P.OK, P.OK, P.OK, P.ERROR, 2])
                objs = tuple((oid, P.ERROR if status == P.ERROR else P.OK, b"v") for oid in t.return_ids)
                r = P.DoneRecord(t.spec.task_id, t.attempt, status, objs, rng.uniform(0, 0.01))
                self.apply(s.tasks_done(t.engine, [r]))
        elif x < 0.78 and s.engines:
            self.crashed(rng.choice(sorted(s.engines)), "exit code -9")
        elif x < 0.86 and s.tasks:
            tid = rng.choice(sorted(s.tasks))
            was_blocked = [(t.engine, t.spec.task_id) for t in s.tasks.values() if t.blocked]
            self.apply(s.cancel(tid, force=rng.random() < 0.3, recursive=rng.random() < 0.5))
            for e, b in was_blocked:   # an interrupted get() returns: the engine says the task resumed
                if b not in s.tasks and e in s.engines:
                    self.apply(s.blocked(e, b, False))
        elif x < 0.9 and s.engines:
            # a chained task whose argument was not made is not really running (its engine gives it back)
            running = [t for t in running if not t.chained or s._made(t.chained)]
            t = rng.choice(running) if running else None
            if t is not None:
                self.apply(s.blocked(t.engine, t.spec.task_id, not t.blocked))
        elif x < 0.93:
            try:
                self.apply(s.drain_engines(1))
            except ValueError:
                pass
        else:
            self.apply(s.tick())

    def finish(self):
        """Unblock everything and run every task to its end on healthy engines."""
        s = self.s
        for _ in range(5000):
            self.step_retire_and_revoke()
            if not s.tasks:
                break
            for t in [t for t in s.tasks.values() if t.blocked]:
                self.apply(s.blocked(t.engine, t.spec.task_id, False))
            running = [t for t in s.tasks.values() if t.state is S.RUNNING and not t.blocked]
            if not running:
                s.now += 1.0
                self.apply(s.tick())
                if not any(t.state is S.RUNNING for t in s.tasks.values()) and not self.revokes:
                    break
                continue
            t = running[0]
            if t.chained and not s._made(t.chained):
                self.apply(s.given_back(t.engine, [t.spec.task_id]))
                continue
            objs = tuple((oid, P.OK, b"v") for oid in t.return_ids)
            self.apply(s.tasks_done(t.engine, [P.DoneRecord(t.spec.task_id, t.attempt, P.OK, objs, 0.001)]))

    def step_retire_and_revoke(self):
        s = self.s
        while self.retire or self.crash or self.revokes:
            if self.retire:
                e = self.retire.pop()
                if e in s.engines:
                    self.apply(s.engine_removed(e, "retired"))
            if self.crash:
                e = self.crash.pop()
                if e in s.engines:
                    self.crashed(e, "killed")
            if self.revokes:
                r = self.revokes.pop(0)
                eng = s.engines.get(r.engine_id)
                if eng is not None:
                    first = next(iter(eng.queue), None)
                    self.apply(s.revoked(r.engine_id, tuple(t for t in r.task_ids if t != first)))
        if not any(e.node == "a" and not e.draining for e in s.engines.values()):
            self.add_engine("a")


@pytest.mark.parametrize("seed", range(40))
def test_random_event_streams_keep_the_books_and_end_every_task_once(seed):
    sim = Sim(seed)
    for _ in range(120):
        sim.step()
    sim.finish()
    s = sim.s
    assert s.tasks == {}, {t: v.state for t, v in s.tasks.items()}
    assert set(sim.terminal) == set(sim.submitted)
    assert all(n == 1 for n in sim.terminal.values()), sim.terminal
    assert all(n == 1 for n in sim.failures.values()), sim.failures      # one notice per failed task
    assert sum(s.counts[st] for st in TERMINAL) == len(sim.submitted)


# ---------------------------------------------------------------- stories: transitions and what owners are told
def test_engine_death_story_retries_a_started_task_then_fails_it_when_retries_are_spent(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1, retries=1)])
    assert s.tasks_done(0, []) == []                       # no records: nothing changes
    acts = s.engine_removed(0, "exit code -9")
    assert story(acts) == [(1, S.RUNNING, S.QUEUED, "engine 0 died under it; retry 1")]
    assert of(acts, SendFailure) == []
    assert (s.tasks[1].attempt, s.tasks[1].started, s.tasks[1].engine) == (1, False, -1)
    assert s.nodes == {} and s.ready == {(-1, ("CPU", 1.0)): __import__("collections").deque([1])}
    acts = s.engine_added(1, "n", {"CPU": 1})
    assert story(acts) == [(1, S.QUEUED, S.RUNNING, "placed on idle engine 1")]
    assert of(acts, DispatchTask) == [DispatchTask(1, 1, ())]
    acts = s.engine_removed(1, "signal 9")
    assert story(acts) == [(1, S.RUNNING, S.FAILED, "engine died, no retries left")]
    assert of(acts, SendFailure) == [SendFailure(1, 1, (1,), Failure.ENGINE_CRASHED,
                                                 "engine 1 died (signal 9) while running t1 and its 1 retries are spent")]
    assert s.counts[S.FAILED] == 1 and s.engine_removed(1) == []     # twice: nothing more


def test_an_engine_dying_without_a_reason_says_just_that(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1, retries=0)])
    acts = s.engine_removed(0)
    assert of(acts, SendFailure)[0].detail == "engine 0 died while running t1 and its 0 retries are spent"


def test_prefetched_tasks_of_a_dead_engine_are_requeued_ahead_without_spending_a_retry():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(0, [rec(s, 1, duration=0.001)])          # short tasks: prefetch deeply
    s.submit(1, [spec(2), spec(3), spec(4)])
    assert [s.tasks[t].state for t in (2, 3, 4)] == [S.RUNNING, S.ASSIGNED, S.ASSIGNED]
    acts = s.engine_removed(0, "oom")
    assert story(acts) == [(2, S.RUNNING, S.QUEUED, "engine 0 died under it; retry 1"),
                           (3, S.ASSIGNED, S.QUEUED, "its engine died before starting it"),
                           (4, S.ASSIGNED, S.QUEUED, "its engine died before starting it")]
    assert [s.tasks[t].attempt for t in (2, 3, 4)] == [1, 0, 0]
    assert not any(s.tasks[t].revoking or s.tasks[t].started for t in (2, 3, 4))
    s.submit(1, [spec(8)])                                 # queued after the death: runs after them
    queue = list(s.ready[(-1, ("CPU", 1.0))])
    assert sorted(queue[:3]) == [2, 3, 4] and queue[3:] == [8]


def test_pinned_task_fails_when_its_engine_dies_and_says_why(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    s.submit(1, [spec(1, placement=0)])
    acts = s.engine_removed(0, "exit code 1")
    assert story(acts) == [(1, S.RUNNING, S.FAILED, "its pinned engine died")]
    assert of(acts, SendFailure) == [SendFailure(1, 1, (1,), Failure.ENGINE_CRASHED,
                                                 "engine 0, which it was pinned to, died (exit code 1)")]
    s.submit(1, [spec(2, placement=1)])
    acts = s.engine_removed(1)
    assert of(acts, SendFailure)[0].detail == "engine 1, which it was pinned to, died"


def test_pinned_ready_task_fails_when_its_engine_leaves(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    s.submit(1, [spec(1, placement=0), spec(2, placement=0)])     # 2 waits behind 1 in the ready queue
    assert s.tasks[2].state is S.QUEUED
    acts = s.engine_removed(0, "x")
    assert story(acts) == [(1, S.RUNNING, S.FAILED, "its pinned engine died"),
                           (2, S.QUEUED, S.FAILED, "its pinned engine left")]
    assert of(acts, SendFailure)[1] == SendFailure(1, 2, (2,), Failure.ENGINE_CRASHED,
                                                   "engine 0, which it was pinned to, died")


def test_submit_stories_and_rejections(unchained):
    s = unchained
    s.engine_added(0, "n", {"CPU": 2})
    s.put(1, [500], 0, [b"p"])
    acts = s.submit(1, [spec(1), spec(4, deps=[1]), spec(7, deps=[500])])
    assert story(acts) == [(1, None, S.QUEUED, "submitted"),
                           (4, None, S.WAITING, "submitted; some arguments are not ready"),
                           (7, None, S.QUEUED, "submitted"), (1, S.QUEUED, S.RUNNING, "placed on idle engine 0")]
    assert s.objects[500].task_refs == 1 and s.tasks[4].missing == 1 and s.objects[1].waiters == [4]
    acts = done(s, 0, 1)
    assert story(acts) == [(1, S.RUNNING, S.DONE, "finished"), (4, S.WAITING, S.QUEUED, "the last argument became ready"),
                           (7, S.QUEUED, S.RUNNING, "placed on idle engine 0")]
    acts = s.submit(1, [spec(10, cpus=3)])
    assert story(acts) == [(10, None, S.FAILED, "no node can ever run it")]
    f = of(acts, SendFailure)[0]
    assert f.kind is Failure.INFEASIBLE and f.detail == (
        "t10 asks for {'CPU': 3.0}, which no node can ever provide (nodes: n: {'CPU': 2.0}). Lower "
        "num_cpus/num_gpus/resources in .options(), or start engines that advertise them.")
    acts = s.submit(1, [spec(13, placement=9)])
    assert story(acts) == [(13, None, S.FAILED, "no such engine")]
    assert of(acts, SendFailure)[0] == SendFailure(1, 13, (13,), Failure.INFEASIBLE, (
        "t13 was pinned to engine 9, which does not exist (engines: [0]). Pick a live engine id."))
    acts = s.submit(1, [spec(16, deps=[999])])
    assert story(acts) == [(16, None, S.FAILED, "argument lost")]
    assert of(acts, SendFailure)[0] == SendFailure(1, 16, (16,), Failure.OBJECT_LOST, (
        "its argument (object 0x3e7) no longer exists: its owner released it or it belongs to another cluster. "
        "Keep the ObjectRef alive, or put() the value again."))
    s.put(1, [600], P.ERROR, [b"err-blob"])
    acts = s.submit(1, [spec(19, deps=[500, 600])])
    assert story(acts) == [(19, None, S.FAILED, "an argument had failed")]
    assert of(acts, SendFailure)[0] == SendFailure(1, 19, (19,), Failure.DEPENDENCY, b"err-blob")


def test_the_submit_of_a_task_placed_at_engine_zero_is_accepted(s):
    s.engine_added(0, "n", {"CPU": 1})
    acts = s.submit(1, [spec(1, placement=0)])
    assert of(acts, DispatchTask) == [DispatchTask(0, 1, ())]


def test_retryable_exception_story_and_stale_reports_are_ignored(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1, retries=2)])
    acts = s.tasks_done(0, [rec(s, 1, status=2)])
    assert story(acts) == [(1, S.RUNNING, S.QUEUED, "raised a retryable exception; retry 1"),
                           (1, S.QUEUED, S.RUNNING, "placed on idle engine 0")]
    assert s.tasks[1].attempt == 1
    assert s.tasks_done(0, [rec(s, 1, attempt=0)]) == []        # a late report of attempt 0: ignored
    assert s.tasks_done(5, [rec(s, 1)]) == []                   # from another engine: ignored
    acts = s.tasks_done(0, [rec(s, 1, status=P.ERROR, blob=b"e")])
    assert story(acts) == [(1, S.RUNNING, S.FAILED, "raised")]
    assert of(acts, SendFailure) == []                          # the engine told the owner itself


def test_a_failed_argument_fails_its_waiters_with_the_error_blob(unchained):
    s = unchained
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1), spec(4, deps=[1]), spec(7, deps=[4])])
    acts = done(s, 0, 1, status=P.ERROR, blob=b"boom")
    assert story(acts) == [(1, S.RUNNING, S.FAILED, "raised"), (4, S.WAITING, S.FAILED, "argument 1 failed"),
                           (7, S.WAITING, S.FAILED, "an argument failed")]
    assert [(f.task_id, f.kind, f.detail) for f in of(acts, SendFailure)] == [
        (4, Failure.DEPENDENCY, b"boom"), (7, Failure.DEPENDENCY, b"boom")]


def test_a_cancelled_argument_cancels_nothing_but_fails_its_waiters_with_the_cancel_reason(unchained):
    s = unchained
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1), spec(4, deps=[1])])
    s.get_objects(1, 77, [1])
    acts = s.cancel(1, force=False, recursive=False)
    assert story(acts) == [(1, S.RUNNING, S.CANCELLED, "jpar.cancel()"), (4, S.WAITING, S.FAILED, "an argument failed")]
    assert of(acts, CancelOnEngine) == [CancelOnEngine(0, 1, False)]
    assert of(acts, ReplyObjects) == [ReplyObjects(1, 77, (1,))]
    fails = of(acts, SendFailure)
    assert fails == [SendFailure(1, 1, (1,), Failure.CANCELLED, ("t1", "jpar.cancel()")),
                     SendFailure(1, 4, (4,), Failure.CANCELLED, ("t1", "jpar.cancel()"))]
    assert s.objects[1].failure == (Failure.CANCELLED, ("t1", "jpar.cancel()")) and s.objects[1].status == 1
    assert s.counts[S.CANCELLED] == 1 and s.counts[S.FAILED] == 1


def test_a_head_failure_marks_the_return_objects_and_answers_their_requests(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1, retries=0, returns=2)])
    s.get_objects(2, 5, [1, 2])
    acts = s.engine_removed(0, "x")
    assert of(acts, ReplyObjects) == [ReplyObjects(2, 5, (1,)), ReplyObjects(2, 5, (2,))]
    f = of(acts, SendFailure)[0]
    assert f.object_ids == (1, 2) and f.kind is Failure.ENGINE_CRASHED
    for oid in (1, 2):
        assert s.objects[oid].ready and s.objects[oid].status == 1 and s.objects[oid].failure == (f.kind, f.detail)
        assert s.objects[oid].requests == []


def test_cancelling_the_parent_cancels_children_with_their_own_story(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.submit(1, [spec(4, parent=1)])
    s.submit(1, [spec(7, parent=4)])
    acts = s.cancel(1, force=False, recursive=True)
    assert story(acts) == [(1, S.RUNNING, S.CANCELLED, "jpar.cancel()"),
                           (4, S.RUNNING, S.CANCELLED, "its parent task was cancelled"),
                           (7, S.QUEUED, S.CANCELLED, "its parent task was cancelled")]
    assert s.cancel(1, force=False, recursive=True) == []            # gone: nothing to do





def test_client_leaving_tells_no_one_and_frees_what_it_held(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.put(1, [900], 0, [b"x"])
    s.submit(1, [spec(1), spec(4)])
    s.client_added(2)
    s.submit(2, [spec(7)])
    acts = s.client_removed(1)
    assert of(acts, SendFailure) == []                       # the owner is gone: no one to tell
    assert story(acts)[:2] == [(1, S.RUNNING, S.CANCELLED, "owner left"), (4, S.QUEUED, S.CANCELLED, "owner left")]
    assert FreeObjects((900,)) in acts and 900 not in s.objects
    assert of(acts, CancelOnEngine) == [CancelOnEngine(0, 1, False)]
    assert s.tasks[7].state is S.RUNNING and s.clients == {2}


def test_release_frees_only_the_owners_ready_objects(s):
    s.client_added(2)
    s.put(1, [10], 0, [b"a"])
    assert s.release(2, [10]) == [] and 10 in s.objects    # not the owner
    assert s.release(1, [11]) == []                        # unknown
    assert s.release(1, [10]) == [FreeObjects((10,))]
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    assert s.release(1, [1]) == [] and not s.objects[1].held_by_owner     # not ready yet: kept
    acts = done(s, 0, 1)
    assert FreeObjects((1,)) in acts


def test_put_resolves_status_and_blob_and_wakes_waiters(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.put(1, [40], 0, [b"a"])
    assert (s.objects[40].ready, s.objects[40].status, s.objects[40].blob) == (True, 0, b"a")
    s.put(1, [41, 42])
    assert s.objects[41].ready and s.objects[41].blob == b"" and s.objects[42].owner == 1
    s.put(1, [41], P.ERROR, [b"late"])                     # already resolved: unchanged
    assert s.objects[41].status == 0 and s.objects[41].blob == b""


def test_get_objects_ready_pending_lost_and_parked(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.put(1, [10], 0, [b"a"])
    s.submit(1, [spec(1)])
    acts = s.get_objects(3, 8, [10, 1, 555])
    assert acts == [ReplyObjects(3, 8, (10,)), SendFailure(3, 8, (555,), Failure.OBJECT_LOST,
                                                          "its owner released it or the cluster restarted")]
    assert s.objects[1].requests == [(3, 8)]
    assert done(s, 0, 1)[0:0] == [] and s.objects[1].requests == []
    future = (1 << 40) | 50                                # client 1's object 50: not submitted yet
    assert s.get_objects(3, 9, [future]) == []
    assert s.parked == {future: [(3, 9)]}
    acts = s.put(1, [future], 0, [b"z"])
    assert ReplyObjects(3, 9, (future,)) in acts and s.parked == {}


def test_tasks_done_keeps_a_moving_average_and_sets_the_prefetch_depth():
    s = Scheduler(prefetch=8, prefetch_s=0.01)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1), spec(4)])
    s.tasks_done(0, [rec(s, 1, duration=0.004)])
    assert s.engines[0].avg_s == pytest.approx(0.004)
    assert s.engines[0].depth == 1 + 2                     # 0.01 / 0.004 = 2.5 -> 2
    s.tasks_done(0, [rec(s, 4, duration=0.014)])
    assert s.engines[0].avg_s == pytest.approx(0.004 + (0.014 - 0.004) * 0.2)      # 0.006
    assert s.engines[0].depth == 1 + 1
    s.tasks_done(0, [P.DoneRecord(99, 0, P.OK, (), 0.0)])   # a late report of a gone task: still timed
    assert s.engines[0].avg_s == pytest.approx(0.006 * 0.8) and s.engines[0].depth == 1 + 2


# ---------------------------------------------------------------- resources, engines, nodes
def test_per_engine_resources_grow_and_shrink_with_the_engines(s):
    per_engine_node(s, 0, 1, node="n")
    assert s.resources() == {"CPU": 2.0} and s.available() == {"CPU": 2.0}
    assert s.engine_share(0) == ({"CPU": 1.0}, "n") and s.engine_share(9) == ({}, "")
    assert s.node_grows("n") == {"CPU": 1.0} and s.node_grows("zz") is None
    s.submit(1, [spec(1)])
    assert s.available() == {"CPU": 1.0}
    s.engine_removed(1)
    assert s.resources() == {"CPU": 1.0} and s.available() == {"CPU": 0.0}
    acts = s.submit(1, [spec(4, cpus=2)])                   # 2 CPUs no longer fit the node
    assert story(acts) == [(4, None, S.FAILED, "no node can ever run it")]


def test_a_node_shrinking_below_a_queued_demand_fails_it_when_engines_are_removed_on_request(s):
    per_engine_node(s, 0, 1)
    s.submit(1, [spec(1), spec(4, cpus=2)])
    assert s.tasks[4].state is S.QUEUED
    s.drain_engines(engine_ids=[1])
    acts = s.engine_removed(1, "retired")
    assert story(acts) == [(4, S.QUEUED, S.FAILED, "its last node left")]
    assert of(acts, SendFailure)[0].kind is Failure.INFEASIBLE


def test_a_node_whose_last_engine_dies_fails_what_only_it_could_run(s):
    s.engine_added(0, "big", {"CPU": 4})
    s.engine_added(1, "small", {"CPU": 1})
    s.submit(1, [spec(1, cpus=4), spec(4, cpus=4)])
    acts = s.engine_removed(0, "x")
    assert (4, S.QUEUED, S.FAILED, "its last node left") in story(acts)
    assert s.tasks == {} and "big" not in s.nodes


def test_extra_engines_add_nothing_and_their_death_gives_nothing_back(s):
    per_engine_node(s, 0)
    s.nodes["n"].spawning = 1
    s.extras = 1
    s.engine_added(5, "n", {PER_ENGINE: {"CPU": 1.0}}, extra=True)
    assert s.nodes["n"].spawning == 0 and s.extras == 1 and s.engines[5].extra
    assert s.resources() == {"CPU": 1.0}
    s.engine_removed(5, "retired")
    assert s.extras == 0 and s.resources() == {"CPU": 1.0}
    s.engine_added(6, "n", {PER_ENGINE: {"CPU": 1.0}}, extra=True)   # none asked for: spawning stays 0
    assert s.nodes["n"].spawning == 0


def test_blocked_task_lends_its_cpu_and_revokes_what_waits_behind_it():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(0, [rec(s, 1, duration=0.001)])
    s.submit(1, [spec(4), spec(7)])
    assert s.tasks[7].state is S.ASSIGNED
    acts = s.blocked(0, 4, True)
    assert acts == [RevokeOnEngine(0, (7,))]
    assert s.tasks[7].revoking and s.engines[0].blocked == [4] and s.tasks[4].blocked
    assert s.engines[0].active == 1 and s.engines[0].reserved == {"CPU": 1.0}   # 7 is still counted until given back
    acts = s.revoked(0, (7,))
    assert story(acts) == [(7, S.ASSIGNED, S.QUEUED, "taken back from busy engine 0")]
    assert s.engines[0].active == 0 and s.available() == {"CPU": 1.0}           # 4's CPU is lent
    acts = s.submit(1, [spec(10, parent=4)])          # its own child runs on top of it
    assert story(acts) == [(10, None, S.QUEUED, "submitted"), (10, S.QUEUED, S.RUNNING, "placed on idle engine 0")]
    assert s.tasks[7].state is S.QUEUED               # foreign work still waits
    assert s.blocked(0, 4, True) == []                # a repeated notice changes nothing
    assert s.engines[0].blocked == [4]
    done(s, 0, 10)
    acts = s.blocked(0, 4, False)
    assert story(acts) == [(7, S.QUEUED, S.ASSIGNED, "prefetched on engine 0")]
    assert s.engines[0].blocked == [] and not s.tasks[4].blocked and s.engines[0].active == 2
    assert s.blocked(9, 4, True) == []                # unknown engine


def test_blocked_engine_takes_no_foreign_work_and_an_extra_engine_is_spawned_after_a_while():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.spawn_nodes.add("n")
    per_engine_node(s, 0)
    s.submit(1, [spec(1)])
    s.now = 10.0
    s.blocked(0, 1, True)
    assert s.engines[0].blocked_since == 10.0
    acts = s.submit(1, [spec(4)])                    # not its child: the blocked engine may not take it
    assert of(acts, DispatchTask) == [] and s.tasks[4].state is S.QUEUED
    s.now = 10.05
    assert of(s.tick(), SpawnEngine) == []            # not blocked long enough yet
    s.now = 10.2
    acts = s.tick()
    assert of(acts, SpawnEngine) == [SpawnEngine("n")]
    assert s.nodes["n"].spawning == 1 and s.extras == 1
    assert of(s.tick(), SpawnEngine) == []            # one per blocked engine
    acts = s.engine_added(5, "n", {PER_ENGINE: {"CPU": 1.0}}, extra=True)
    assert of(acts, DispatchTask) == [DispatchTask(5, 4, ())]
    assert s.nodes["n"].spawning == 0 and s.extras == 1 and s.resources() == {"CPU": 1.0}
    acts = done(s, 5, 4)                              # idle extra, its engine still blocked: kept
    assert of(acts, RetireEngine) == []
    acts = s.blocked(0, 1, False)                     # resumed: the idle extra engine is retired
    assert of(acts, RetireEngine) == [RetireEngine(5)] and s.engines[5].draining
    s.engine_removed(5, "retired")
    assert s.extras == 0


def test_a_failed_spawn_is_forgotten_and_may_be_tried_again():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.spawn_nodes.add("n")
    per_engine_node(s, 0)
    s.submit(1, [spec(1), spec(4)])
    s.blocked(0, 1, True)
    s.now = 1.0
    assert of(s.tick(), SpawnEngine) == [SpawnEngine("n")]
    assert s.spawn_failed("n") == [] and s.nodes["n"].spawning == 0 and s.extras == 0
    assert s.spawn_failed("n") == [] and s.extras == 0     # nothing pending: no change
    assert s.spawn_failed("zz") == []
    assert of(s.tick(), SpawnEngine) == [SpawnEngine("n")]


def test_no_spawn_while_an_idle_engine_exists_and_none_for_unknown_nodes():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.spawn_nodes.update({"n", "gone"})
    per_engine_node(s, 0, 1)
    s.submit(1, [spec(1)])
    s.blocked(0, 1, True)
    s.now = 5.0
    assert of(s.tick(), SpawnEngine) == []            # nothing waits
    acts = s.submit(1, [spec(4)])                     # the idle engine takes it
    assert of(acts, DispatchTask) == [DispatchTask(1, 4, ())]
    assert of(s.tick(), SpawnEngine) == []
    s.submit(1, [spec(7)])                            # now it waits: engine 0 blocked, engine 1 busy
    assert of(s.tick(), SpawnEngine) == [SpawnEngine("n")]


def test_max_extra_bounds_the_extra_engines():
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.spawn_nodes.add("n")
    s.max_extra = 0
    per_engine_node(s, 0)
    s.submit(1, [spec(1), spec(4)])
    s.blocked(0, 1, True)
    s.now = 5.0
    assert of(s.tick(), SpawnEngine) == []


def test_gpus_are_assigned_whole_or_shared_and_given_back(s):
    s.engine_added(0, "g", {"CPU": 4, "GPU": 2, "GPU_IDS": ["3", "5"]})
    s.engine_added(1, "g", {"CPU": 4, "GPU": 2, "GPU_IDS": ["3", "5"]})
    acts = s.submit(1, [spec(1, gpus=0.5), spec(4, gpus=0.5)])
    d = of(acts, DispatchTask)
    assert [x.gpu_ids for x in d] == [("3",), ("3",)]              # two halves share one GPU
    assert s.nodes["g"].gpu_free == {"3": 0.0, "5": 1.0}
    done(s, d[0].engine_id, 1)
    assert s.nodes["g"].gpu_free == {"3": 0.5, "5": 1.0}
    done(s, d[1].engine_id, 4)
    assert s.nodes["g"].gpu_free == {"3": 1.0, "5": 1.0}
    acts = s.submit(1, [spec(7, gpus=2)])
    assert of(acts, DispatchTask)[0].gpu_ids == ("3", "5")
    assert s.nodes["g"].gpu_free == {"3": 0.0, "5": 0.0}
    acts = s.submit(1, [spec(10, gpus=1)])
    assert of(acts, DispatchTask) == [] and s.tasks[10].state is S.QUEUED
    e = s.tasks[7].engine
    s.engine_removed(e, "x")                          # 7 is retried first (front of the queue), on both GPUs
    assert s.tasks[7].state is S.RUNNING and s.tasks[7].gpu_ids == ("3", "5") and s.tasks[7].engine == 1 - e
    assert s.tasks[10].gpu_ids == () and s.nodes["g"].gpu_free == {"3": 0.0, "5": 0.0}
    acts = s.cancel(7, force=False, recursive=False)
    assert of(acts, DispatchTask) == [DispatchTask(1 - e, 10, ("3",))]
    assert s.nodes["g"].gpu_free == {"3": 0.0, "5": 1.0}


def test_statistics_count_everything(s):
    per_engine_node(s, 0)
    s.put(1, [100], 0, [b""])
    s.submit(1, [spec(1), spec(4)])
    st = s.statistics()
    assert (st.engines, st.nodes, st.clients, st.objects, st.ready) == (1, 1, 1, 3, 1)
    assert st.tasks["running"] == 1 and st.tasks["queued"] == 1 and st.tasks["done"] == 0


def test_an_idle_engine_takes_back_what_waits_behind_a_long_task():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(0, [rec(s, 1, duration=0.001)])
    s.submit(1, [spec(4), spec(7), spec(10, placement=0)])
    assert [s.tasks[t].state for t in (4, 7, 10)] == [S.RUNNING, S.ASSIGNED, S.ASSIGNED]
    s.engine_added(1, "m", {"CPU": 1})
    s.now = 0.004                                     # within max(4 x 0.001, 0.005): not late yet
    assert s.tick() == []
    s.now = 1.0
    assert s.tick() == [RevokeOnEngine(0, (7,))]      # the pinned one stays
    assert s.tick() == []                             # already being taken back


def test_drain_emits_drain_then_revokes_and_retires(s):
    s.prefetch = 4
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    acts = s.drain_engines(engine_ids=[1, 1])
    assert acts == [DrainEngine(1), RetireEngine(1)]
    acts = s.drain_engines(engine_ids=[1])        # already draining: named again, nothing else
    assert acts == [DrainEngine(1)]
    with pytest.raises(LookupError, match=r"No engine with id 7, 8 in this cluster \(engines: \[0, 1\]\)"):
        s.drain_engines(engine_ids=[7, 8])
    with pytest.raises(ValueError, match="Removing 0 engines does nothing"):
        s.drain_engines(0)
    with pytest.raises(ValueError, match=r"^Removing 1 of the 1 engine\(s\) still taking tasks would leave none; a "
                                         r"cluster keeps at least one engine\. Remove fewer, or stop the cluster "
                                         r"instead \(jpar\.shutdown\(\) or `jpar stop`\)\.$"):
        s.drain_engines(1)


def test_a_task_pinned_to_a_draining_engine_fails_with_advice(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    s.submit(1, [spec(1, placement=1)])
    s.drain_engines(engine_ids=[1])
    acts = s.submit(1, [spec(4, placement=1)])
    assert story(acts) == [(4, None, S.FAILED, "its pinned engine is leaving or gone")]
    assert of(acts, SendFailure)[0] == SendFailure(1, 4, (4,), Failure.INFEASIBLE, (
        "t4 was pinned to engine 1, which is being removed on request, before it could run it. Pin it to a live "
        "engine (jpar.hooks.engines() lists them), or drop placement= from .options()."))
    done(s, 1, 1)
    s.engine_removed(1, "retired")
    acts = s.submit(1, [spec(7, placement=1)])
    assert of(acts, SendFailure)[0].detail.startswith("t7 was pinned to engine 1, which was removed on request")


def test_cancel_client_cancels_unstarted_first_and_refuses_unknown_clients(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1), spec(4)])
    with pytest.raises(LookupError, match=r"No client \(driver\) number 9 is connected to this cluster "
                                          r"\(connected: \[1\]\)"):
        s.cancel_client(9)
    acts = s.cancel_client(1, force=True)
    assert story(acts) == [(4, S.QUEUED, S.CANCELLED, "all tasks of driver 1 were cancelled"),
                           (1, S.RUNNING, S.CANCELLED, "all tasks of driver 1 were cancelled")]
    assert of(acts, CancelOnEngine) == [CancelOnEngine(0, 1, True)]


# ---------------------------------------------------------------- extra engines: when one is worth starting
def _blocked_node(total_engines=2, gpus=0):
    s = Scheduler(prefetch=0)
    s.client_added(1)
    s.spawn_nodes.add("n")
    res = {PER_ENGINE: {"CPU": 1.0}}
    if gpus:
        res.update({"GPU": float(gpus), "GPU_IDS": [str(g) for g in range(gpus)]})
    for e in range(total_engines):
        s.engine_added(e, "n", res)
    s.submit(1, [spec(1)])                                   # engine 0: blocked, lends its CPU
    s.blocked(0, 1, True)
    for e in range(1, total_engines):
        s.submit(1, [spec(1 + 3 * e)])                       # the others: busy
    s.now = 1.0
    return s


def test_an_extra_engine_is_spawned_only_for_a_task_that_fits_what_the_node_has_free():
    s = _blocked_node()
    assert s.available() == {"CPU": 1.0}
    s.submit(1, [spec(20, cpus=2)])                          # fits the node (2 CPUs), not its free CPU
    assert s.tasks[20].state is S.QUEUED and of(s.tick(), SpawnEngine) == []
    s2 = _blocked_node()
    s2.submit(1, [spec(20, cpus=1)])
    assert of(s2.tick(), SpawnEngine) == [SpawnEngine("n")]


def test_an_extra_engine_is_spawned_for_a_gpu_task_only_when_a_gpu_is_free():
    s = _blocked_node(gpus=1)
    s.submit(1, [spec(20, gpus=1)])                          # the GPU is free: worth an engine
    assert of(s.tick(), SpawnEngine) == [SpawnEngine("n")]
    s2 = _blocked_node(gpus=1)
    s2.submit(1, [spec(20, gpus=1, cpus=0.5)])
    s2.engine_added(9, "n", {PER_ENGINE: {"CPU": 1.0}})      # takes the GPU task at once
    assert s2.tasks[20].state is S.RUNNING and s2.tasks[20].gpu_ids == ("0",)
    s2.engines[9].blocked_since = 0.0
    s2.submit(1, [spec(23, gpus=1, cpus=0.5)])               # waits for the GPU, not for a CPU
    assert s2.tasks[23].state is S.QUEUED
    assert of(s2.tick(), SpawnEngine) == []


def test_a_pinned_waiting_task_spawns_no_extra_engine():
    s = _blocked_node()
    s.submit(1, [spec(20, placement=1)])                     # only engine 1 may run it
    assert s.tasks[20].state is S.QUEUED
    assert of(s.tick(), SpawnEngine) == []


def test_draining_engines_neither_count_as_blocked_nor_as_idle():
    s = _blocked_node(total_engines=3)
    s.drain_engines(engine_ids=[2])                          # busy, leaving: not idle, so no reason to wait
    s.submit(1, [spec(20)])
    assert of(s.tick(), SpawnEngine) == [SpawnEngine("n")]


# ---------------------------------------------------------------- placement details
def test_gpu_tasks_are_never_prefetched_and_the_least_loaded_engine_is_picked():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 8, "GPU": 2, "GPU_IDS": ["a", "b"]})
    s.engine_added(1, "n", {"CPU": 8, "GPU": 2, "GPU_IDS": ["a", "b"]})
    s.submit(1, [spec(1), spec(4)])
    s.tasks_done(0, [rec(s, 1, duration=0.001)])
    s.tasks_done(1, [rec(s, 4, duration=0.001)])
    acts = s.submit(1, [spec(7), spec(10), spec(13)])
    assert [(d.engine_id, d.task_id) for d in of(acts, DispatchTask)] == [(0, 7), (1, 10), (0, 13)]
    acts = s.submit(1, [spec(16, cpus=0.5, gpus=1)])         # both engines busy: a GPU task waits
    assert of(acts, DispatchTask) == [] and s.tasks[16].state is S.QUEUED
    acts = done(s, 1, 10)
    assert of(acts, DispatchTask) == [DispatchTask(1, 16, ("a",))]


def test_an_engine_is_late_only_past_four_times_its_average():
    s = Scheduler(prefetch=8, prefetch_s=10.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(0, [rec(s, 1, duration=0.25)])               # average 0.25 s: late after 1.0 s
    s.now = 10.0
    s.submit(1, [spec(4)])                                     # starts at 10.0
    s.now = 11.0
    acts = s.submit(1, [spec(7)])                              # exactly 4 x 0.25 s later: not late yet
    assert of(acts, DispatchTask) == [DispatchTask(0, 7, ())]
    s.now = 11.1
    acts = s.submit(1, [spec(10)])                             # past it: nothing more behind it
    assert of(acts, DispatchTask) == [] and s.tasks[10].state is S.QUEUED


def test_the_next_prefetched_task_starts_when_the_one_ahead_ends_and_then_spends_a_retry():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(0, [rec(s, 1, duration=0.001)])
    s.submit(1, [spec(4), spec(7, retries=0)])
    s.now = 0.5
    acts = done(s, 0, 4)
    assert story(acts) == [(7, S.ASSIGNED, S.RUNNING, "engine 0 reached it"), (4, S.RUNNING, S.DONE, "finished")]
    assert s.tasks[7].started and s.engines[0].running_since == 0.5
    acts = s.engine_removed(0, "x")
    assert story(acts) == [(7, S.RUNNING, S.FAILED, "engine died, no retries left")]


def test_task_done_single_report(s):
    s.engine_added(0, "n", {"CPU": 1})
    s.submit(1, [spec(1, retries=1), spec(4)])
    acts = s.task_done(0, 1, 0, True, ())
    assert story(acts)[0] == (1, S.RUNNING, S.QUEUED, "raised a retryable exception; retry 1")
    assert s.task_done(0, 1, 0, False, ((1, P.OK, b"x"),)) == []        # stale attempt: ignored
    acts = s.task_done(0, 4, 0, False, ((4, P.OK, b"x"),))
    assert story(acts)[0] == (4, S.RUNNING, S.DONE, "finished") and s.objects[4].blob == b"x"


def test_revoked_notices_count_only_for_tasks_being_taken_back_from_that_engine():
    s = Scheduler(prefetch=8, prefetch_s=1.0)
    s.client_added(1)
    s.engine_added(0, "n", {"CPU": 1})
    s.engine_added(1, "m", {"CPU": 1})
    s.submit(1, [spec(1)])
    s.tasks_done(s.tasks[1].engine, [rec(s, 1, duration=0.001)])
    s.submit(1, [spec(4), spec(7), spec(10), spec(13)])
    on0 = [t for t in s.engines[0].queue]
    assert s.revoked(0, tuple(on0[1:])) == []                 # never asked back: the engine keeps them
    assert all(s.tasks[t].engine == 0 for t in on0)
    acts = s.drain_engines(engine_ids=[0])
    assert RevokeOnEngine(0, tuple(on0[1:])) in acts
    assert s.revoked(1, tuple(on0[1:])) == []                 # from another engine: ignored
    acts = s.revoked(0, tuple(on0[1:]) + (999,))
    assert story(acts)[0] == (on0[1], S.ASSIGNED, S.QUEUED, "taken back from leaving engine 0")
    assert not s.tasks[on0[1]].started and not s.tasks[on0[1]].revoking
