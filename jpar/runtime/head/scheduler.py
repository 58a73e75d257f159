"""The cluster's scheduler: a pure state machine (events in, actions out, transitions in a table).

No sockets, threads, clocks or processes here: the controller feeds it events
(``submit``, ``task_done``, ``engine_added``...) and carries out the actions it returns
(:class:`DispatchTask`, :class:`SendFailure`, ...). That keeps every scheduling rule
testable in microseconds and every task's story replayable from its transitions.

Task states and the legal moves between them are in :data:`TRANSITIONS`::

    WAITING --args ready--> QUEUED --placed--> ASSIGNED --engine reaches it--> RUNNING --> DONE
       |                      |                   |  (prefetched)                 |  \\--> FAILED
       +--> FAILED/CANCELLED  +--> FAILED/CANCELLED  +--> QUEUED (engine died)    +--> QUEUED (retry)

Resources live per node (a host). Engines run one task at a time and may hold a short
prefetch queue; an engine reserves the element-wise maximum of its queued tasks' demands
(they run one after another), so prefetching costs no extra CPUs. Ready tasks wait in
one FIFO per resource shape; a shape whose oldest task does not fit holds its demand
back from younger tasks of other shapes, so big requests are not starved. A task submitted ready
waits there as a compact :class:`~jpar.runtime.head.scheduler_state.Queued` record (the task and its return object
in one, read-only) until something needs its full records (:meth:`Scheduler._promote`): event handlers
reach tasks and objects that may change through ``_task()`` and ``_obj()``, which promote.

Engines leave on request by draining (:meth:`Scheduler.drain_engines`): a draining engine takes
no new task, its prefetched tasks are revoked and run elsewhere, its running task finishes, and
then :class:`RetireEngine` tells the controller to stop it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..wire.protocol import TaskSpec
from .scheduler_actors import ACTOR_TRANSITIONS, ActorScheduling, ActorState  # noqa: F401  (actors: see there)
from .scheduler_chaining import Chaining
from .scheduler_lineage import Lineage
from .scheduler_placement import Placement
from .scheduler_rebalance import Rebalancing
from .scheduler_state import (PER_ENGINE, TERMINAL, TRANSITIONS, CancelOnEngine, DispatchTask,  # noqa: F401
                              DrainEngine, Engine, Failure, FreeObjects, Node, Obj, Queued, ReplyObjects,
                              RetireEngine, RevokeOnEngine, S, SendFailure, SpawnEngine, Task, TaskState, Transition)

__all__ = ["Scheduler", "TaskState", "TRANSITIONS", "DispatchTask", "SendFailure", "CancelOnEngine", "RevokeOnEngine",
           "ReplyObjects", "Transition", "Failure", "ActorState", "ACTOR_TRANSITIONS", "DrainEngine", "RetireEngine", "SpawnEngine"]


# ---------------------------------------------------------------- the state machine
class Scheduler(ActorScheduling, Rebalancing, Chaining, Placement, Lineage):
    """All scheduling state of one cluster; every public method is one event (actor events: scheduler_actors)."""

    def __init__(self, prefetch: int = 64, prefetch_s: float = 0.002, chain: bool = True):
        self.prefetch = prefetch
        self.prefetch_s = prefetch_s
        self.chain = chain                               # send dependants to their argument's engine (Chaining)
        self.tasks: dict[int, Task | Queued] = {}       # live tasks (Queued: waiting ready, compact)
        self.objects: dict[int, Obj | Queued] = {}      # known objects (Queued: its task's, pending)
        self.engines: dict[int, Engine] = {}
        self.nodes: dict[str, Node] = {}
        self.clients: set[int] = set()
        self.ready: dict[tuple, deque] = {}              # shape -> FIFO of task ids
        self.counts: dict[TaskState, int] = {s: 0 for s in TaskState}
        self.actions: list = []
        self.now = 0.0                                   # the controller's clock, set before each event
        self._feasible_cache: dict = {}                  # demand shape -> can some node ever run it
        self._forms: dict = {}                           # (resources, placement) -> Task.form, shared
        self._protos: dict = {}                          # what Queued tasks of one call site share (Queued.proto)
        self.transitions = True                          # someone reads the event stream (the controller's events)
        self.full_stream = True                          # ... every task's every Transition (else the summary's told ones)
        self.summary = None                              # a TaskSummary counting transitions for the summary stream
        self.removed: set[int] = set()                   # ids of engines retired on request
        self.spawn_nodes: set[str] = set()               # nodes whose engines the controller can start
        self.spawn_after_s = 0.1                         # blocked this long with work waiting: add an engine
        self.max_extra = 32                              # extra engines per node at most
        self.extras = 0                                  # extra engines alive or asked for, all nodes
        self.blocked_engines = 0                         # engines with a task blocked in get()
        self._init_actors(Obj)
        self._init_lineage()

    # ---- helpers
    def _move(self, task: Task, new: TaskState, stimulus: str) -> None:
        old = task.state
        if (old, new) not in TRANSITIONS:
            raise AssertionError(f"illegal transition {old} -> {new} for task {task.spec.task_id} ({stimulus})")
        task.state = new
        if old is not None:
            self.counts[old] -= 1
        self.counts[new] += 1
        if self.transitions:
            tid = task.spec.task_id
            told = 0
            summary = self.summary
            if summary is not None:      # counted here, in the move: no action unless it is told
                told = summary.submitted(task, new, self.now) if old is None else summary.moved(tid, old, new, self.now)
            if told or self.full_stream:
                self.actions.append(Transition(tid, old, new, stimulus, told))

    def _take(self) -> list:
        out, self.actions = self.actions, []
        return out

    # ---- compact queued tasks (Queued): a full record only once something needs more than to read it
    def _promote(self, q: Queued) -> Task:
        """Replace a :class:`Queued` task (and its return object) with a :class:`Task` and an :class:`Obj`."""
        tid = q.task_id
        task = self.tasks[tid] = Task(q.spec, q.proto[8], q.proto[9], S.QUEUED)   # same dict slots: order kept
        self.objects[tid] = Obj(owner=q.proto[8])
        return task

    def _task(self, tid: int) -> Task | None:
        """The live task ``tid`` as a full record (promoted if it was :class:`Queued`), or None."""
        task = self.tasks.get(tid)
        return self._promote(task) if type(task) is Queued else task

    def _obj(self, oid: int) -> Obj | None:
        """The object ``oid`` as a full record (its task promoted if it was :class:`Queued`), or None."""
        obj = self.objects.get(oid)
        if type(obj) is Queued:
            self._promote(obj)
            obj = self.objects[oid]
        return obj

    # ---- clients
    def client_added(self, client: int) -> list:
        self.clients.add(client)
        return self._take()

    def client_removed(self, client: int, graceful: bool = False) -> list:
        """A client left (or died): cancel its unfinished tasks and release what it held.

        After a goodbye, tasks already running are left to finish: their results go to the engine
        straight to the client, so the client may have them while the head has not heard yet
        (cancelling would count finished work as cancelled). A vanished client's running tasks are
        cancelled to free their engines."""
        self.clients.discard(client)
        self._actors_owner_left(client)
        for tid in [t for t, task in self.tasks.items() if task.owner == client and task.state not in TERMINAL]:
            task = self._task(tid)
            if graceful and task.state is S.RUNNING:
                continue
            self._cancel_one(task, force=False, notify=False, stimulus="owner left")
        for oid in [o for o, obj in self.objects.items() if obj.owner == client]:
            self._obj(oid).held_by_owner = False
            self._maybe_free(oid)
        self._schedule()
        return self._take()

    # ---- nodes and engines
    def engine_added(self, engine_id: int, node: str, resources: dict, extra: bool = False) -> list:
        """An engine joined ``node``. The node's first engine says what the node advertises: fixed
        amounts (declared: num_cpus=, resources=, GPUs) and, under :data:`PER_ENGINE`, what each of
        its engines adds (CPU 1 where no num_cpus was declared), so capacity follows the engine count."""
        n = self.nodes.get(node)
        if n is None:
            total = {k: float(v) for k, v in resources.items() if k not in ("GPU_IDS", PER_ENGINE)}
            n = self.nodes[node] = Node(node, total)
            n.gpu_free = {g: 1.0 for g in resources.get("GPU_IDS", ())}
            n.grows = {k: float(v) for k, v in (resources.get(PER_ENGINE) or {}).items()}
        if extra:   # started for blocked tasks (SpawnEngine): it runs on their lent resources, adds none
            n.spawning = max(0, n.spawning - 1)
        else:
            for k, v in n.grows.items():
                n.total[k] = n.total.get(k, 0.0) + v
        n.engines.append(engine_id)
        self._feasible_cache.clear()
        self.engines[engine_id] = Engine(engine_id, node, extra=extra)
        self._schedule()
        return self._take()

    def engine_removed(self, engine_id: int, why: str = "") -> list:
        """An engine died or left (``why``: how, e.g. its exit code): requeue what it held (a started
        task spends one retry); the node gives back what the engine added to it."""
        eng = self.engines.pop(engine_id, None)
        if eng is None:
            return self._take()
        if eng.draining:
            self.removed.add(engine_id)
        node = self.nodes[eng.node]
        node.engines.remove(engine_id)
        self._unreserve(eng)
        if eng.extra:
            self.extras -= 1
        if eng.blocked:
            self.blocked_engines -= 1
        for k, v in (node.grows if not eng.extra else {}).items():
            node.total[k] = node.total.get(k, 0.0) - v
        if node.grows and not eng.extra:
            self._feasible_cache.clear()
        died = f"engine {engine_id} died ({why})" if why else f"engine {engine_id} died"
        front: dict = {}   # shape -> how many went back to its front: they keep the order they had here
        for tid in list(eng.queue):
            task = self.tasks.get(tid)
            if task is None or task.engine != engine_id:
                continue     # failed meanwhile: chained behind a task of this queue that failed just now
            self._release_gpus(task, node)
            task.engine, task.revoking = -1, False
            if task.chained and not (task.started and self._made(task.chained)):
                task.started = False
                self._unchain(task, "chained, and its engine died before starting it", front)
            elif task.state is S.ASSIGNED and not task.started:
                self._move(task, S.QUEUED, "its engine died before starting it")
                self._enqueue(task, front=front)
            elif task.spec.placement == engine_id:
                self._fail(task, Failure.ENGINE_CRASHED,
                           f"engine {engine_id}, which it was pinned to, died" + (f" ({why})" if why else ""),
                           "its pinned engine died")
            elif task.attempt < task.spec.max_retries:
                task.attempt += 1
                task.started = task.blocked = False
                task.chained = 0
                self._move(task, S.QUEUED, f"engine {engine_id} died under it; retry {task.attempt}")
                self._enqueue(task, front=front)
            else:
                self._fail(task, Failure.ENGINE_CRASHED,
                           f"{died} while running {task.spec.name} and its {task.spec.max_retries} "
                           "retries are spent", "engine died, no retries left")
        eng.queue.clear()
        eng.shapes.clear()
        eng.active = 0
        self._fail_pinned_ready(engine_id)
        if not node.engines:
            del self.nodes[eng.node]
            self._feasible_cache.clear()
            self._fail_infeasible()
        elif node.grows and eng.draining:
            self._fail_infeasible()   # removed on request: what no longer fits never will (a crash is respawned)
        self._schedule()
        return self._take()

    def drain_engines(self, count: int = 0, engine_ids=()) -> list:
        """Remove engines gracefully: ``engine_ids``, or else ``count`` of them (idle ones first, then the
        fewest queued, the newest first). Each takes no new task, gives back the tasks it prefetched but
        has not started (they run elsewhere), finishes what it runs, then is retired (:class:`RetireEngine`).
        The engines chosen come first in the actions, as :class:`DrainEngine` (already draining ones too).

        Raises ValueError or LookupError, changing nothing, for a request that would leave no engine
        taking tasks, or names an unknown engine."""
        ids = list(dict.fromkeys(int(i) for i in engine_ids))
        taking = [e for e in self.engines.values() if not e.draining]
        if ids:
            unknown = [i for i in ids if i not in self.engines]
            if unknown:
                raise LookupError(f"No engine with id {', '.join(map(str, unknown))} in this cluster (engines: "
                                  f"{sorted(self.engines)}). Pick ids from jpar.hooks.engines() or `jpar status`.")
            chosen = [self.engines[i] for i in ids]
        elif count < 1:
            raise ValueError(f"Removing {count} engines does nothing; ask for at least one, or name engine ids.")
        else:
            chosen = sorted(taking, key=lambda e: (len(e.queue), -e.engine_id))[:count]
        if len(taking) - sum(1 for e in chosen if not e.draining) < 1:
            raise ValueError(f"Removing {len(ids) or count} of the {len(taking)} engine(s) still taking tasks would "
                             "leave none; a cluster keeps at least one engine. Remove fewer, or stop the cluster "
                             "instead (jpar.shutdown() or `jpar stop`).")
        for eng in chosen:
            self.actions.append(DrainEngine(eng.engine_id))
        for eng in chosen:
            if eng.draining:
                continue
            eng.draining = True
            back = tuple(tid for tid in eng.queue
                         if (t := self.tasks[tid]).state is S.ASSIGNED and not t.started and not t.revoking)
            if back:
                for tid in back:
                    self.tasks[tid].revoking = True
                self.actions.append(RevokeOnEngine(eng.engine_id, back))
            self._fail_pinned_ready(eng.engine_id)
            self._maybe_retire(eng)
        self._schedule()
        return self._take()

    def _maybe_retire(self, eng: Engine) -> None:
        if eng.draining and not eng.queue and not eng.retired:
            eng.retired = True
            self.actions.append(RetireEngine(eng.engine_id))

    def _pin_lost(self, task: Task) -> tuple | None:
        """(Failure, message) when the engine a task is pinned to will never run it, else None."""
        pin = task.spec.placement
        eng = self.engines.get(pin)
        if eng is not None and not eng.draining:
            return None
        if eng is None and pin not in self.removed:
            return Failure.ENGINE_CRASHED, f"engine {pin}, which it was pinned to, died"
        return Failure.INFEASIBLE, (
            f"{task.spec.name} was pinned to engine {pin}, which {'is being' if eng else 'was'} removed on request, "
            "before it could run it. Pin it to a live engine (jpar.hooks.engines() lists them), or drop "
            "placement= from .options().")

    def _fail_pinned_ready(self, engine_id: int) -> None:
        """Fail the ready tasks pinned to an engine that left or is leaving."""
        for shape in [s for s in self.ready if s[0] == engine_id]:
            for tid in self.ready.pop(shape):
                task = self._task(tid)
                if task is not None and task.state is S.QUEUED:
                    kind, detail = self._pin_lost(task) or (Failure.ENGINE_CRASHED, f"engine {engine_id} left")
                    self._fail(task, kind, detail, "its pinned engine left")

    # ---- objects
    def put(self, client: int, object_ids, status: int = 0, blobs=None) -> list:
        for i, oid in enumerate(object_ids):
            obj = self._obj(oid) or self.objects.setdefault(oid, Obj(owner=client))
            self._saw(client, oid, obj)
            self._resolve(oid, obj, status, blobs[i] if blobs else b"")
        self._schedule()
        return self._take()

    def release(self, client: int, object_ids) -> list:
        for oid in object_ids:
            obj = self._obj(oid)
            if obj is not None and obj.owner == client:
                obj.held_by_owner = False
                self._maybe_free(oid)
        return self._take()

    def get_objects(self, client: int, req_id: int, object_ids) -> list:
        """A client asks for values it does not own; replied as each becomes ready."""
        ready, lost = [], []
        for oid in object_ids:
            obj = self._obj(oid)
            if obj is None:
                if self._not_arrived(oid):
                    self.parked.setdefault(oid, []).append((client, req_id))   # overtook its Submit/put
                else:
                    lost.append(oid)
            elif obj.ready:
                ready.append(oid)
            elif obj.requests:
                obj.requests.append((client, req_id))
            else:
                obj.requests = [(client, req_id)]
        if ready:
            self.actions.append(ReplyObjects(client, req_id, tuple(ready)))
        if lost:
            self.actions.append(SendFailure(client, req_id, tuple(lost), Failure.OBJECT_LOST,
                                            "its owner released it or the cluster restarted"))
        return self._take()

    def _resolve(self, oid: int, obj: Obj, status: int, blob: bytes) -> None:
        if obj.ready:
            if obj.failure and obj.failure[0] is Failure.OBJECT_FREED and blob is not obj.blob:
                self.actions.append(FreeObjects((oid,)))   # the value of a ref freed while its task ran
            return
        obj.ready, obj.status, obj.blob = True, status, blob
        if obj.requests:
            for client, req_id in obj.requests:
                self.actions.append(ReplyObjects(client, req_id, (oid,)))
            obj.requests = []
        waiters, obj.waiters = obj.waiters, ()
        for tid in waiters:
            task = self.tasks.get(tid)
            if task is None or task.state is not S.WAITING:
                if status and task is not None and self._chained_behind(task):
                    if task.engine in self.engines:
                        self.actions.append(CancelOnEngine(task.engine, tid, False))
                    self._fail(task, Failure.DEPENDENCY, blob, f"argument {oid} failed")
                continue
            if status:
                self._fail(task, Failure.DEPENDENCY, blob, f"argument {oid} failed")
            else:
                task.missing -= 1
                if task.missing == 0:
                    self._move(task, S.QUEUED, "the last argument became ready")
                    self._enqueue(task)
                elif task.missing == 1:
                    self._chain_to_producer(task)
        self._maybe_free(oid)

    def free(self, records) -> list:
        """jpar.free: drop objects' values now though refs to them remain. Each ``(oid, status, blob)``
        record is the error (a pickled ObjectFreedError) the object becomes for every later reader and
        task: tasks waiting for it fail with it, askers get it, a task dispatched later with it raises it.
        A pending object settles as that error now while its task runs on; the value that task makes
        is freed on arrival (:meth:`_resolve`). Unknown ids and objects freed already are skipped."""
        for oid, status, blob in records:
            obj = self._obj(oid)
            if obj is None or (obj.failure and obj.failure[0] is Failure.OBJECT_FREED):
                continue
            if obj.ready:
                obj.status, obj.blob = status, blob
                self.actions.append(FreeObjects((oid,)))   # its segments, if any
            else:
                self._resolve(oid, obj, status, blob)
            obj.failure = (Failure.OBJECT_FREED, "jpar.free()")
            self._maybe_free(oid)
        self._schedule()
        return self._take()

    def _maybe_free(self, oid: int) -> None:
        obj = self.objects.get(oid)
        if obj is not None and obj.ready and not obj.held_by_owner and obj.task_refs <= 0 and not obj.requests:
            del self.objects[oid]
            if self.lineage_of:
                self._drop_lineage(oid)
            self.actions.append(FreeObjects((oid,)))

    # ---- tasks
    def submit(self, client: int, specs) -> list:
        for spec in specs:
            self._submit_one(client, spec)
        self._schedule()
        return self._take()

    def _submit_one(self, client: int, spec: TaskSpec) -> None:
        if spec.actor:
            self._actor_call_submitted(client, spec)
            return
        form = self._form(spec)
        dshape = form[1]
        tid = spec.task_id
        if (spec.num_returns <= 1 and spec.placement < 0 and (not self.nodes or self._feasible(dshape))
                and not (self.parked and tid in self.parked) and self._args_ready(spec.deps)):
            self._submit_queued(client, spec, form)
            return
        task = Task(spec, client, form)
        self.tasks[tid] = task
        for oid in task.return_ids:
            obj = self.objects[oid] = Obj(owner=client)
            self._saw(client, oid, obj)
        self._link_child(spec.parent, tid)
        for oid in spec.deps:   # first: whatever fails it below, _finish drops exactly these references
            obj = self._obj(oid)
            if obj is not None:
                obj.task_refs += 1
        if self.nodes and not self._feasible(dshape):
            self._fail(task, Failure.INFEASIBLE, self._infeasible_message(task), "no node can ever run it")
            return
        if spec.placement >= 0 and spec.placement not in self.engines and spec.placement not in self.removed:
            self._fail(task, Failure.INFEASIBLE, f"{spec.name} was pinned to engine {spec.placement}, which does "
                       f"not exist (engines: {sorted(self.engines)}). Pick a live engine id.", "no such engine")
            return
        if spec.placement >= 0 and (lost := self._pin_lost(task)) is not None:
            self._fail(task, *lost, "its pinned engine is leaving or gone")
            return
        failed = None
        for oid in spec.deps:
            obj = self.objects.get(oid)
            if obj is None:
                self._fail(task, Failure.OBJECT_LOST,
                           f"its argument (object {oid:#x}) no longer exists: its owner released it or it "
                           "belongs to another cluster. Keep the ObjectRef alive, or put() the value again.",
                           "argument lost")
                return
            if not obj.ready:
                task.missing += 1
                self._add_waiter(obj, tid)
            elif obj.status and failed is None:
                failed = obj.blob
        if failed is not None:
            self._fail(task, Failure.DEPENDENCY, failed, "an argument had failed")
        else:
            self._wait_or_queue(task, "submitted; some arguments are not ready", "submitted")

    @staticmethod
    def _add_waiter(obj, tid: int) -> None:
        if obj.waiters:
            obj.waiters.append(tid)
        else:
            obj.waiters = [tid]

    def _wait_or_queue(self, task, waiting: str, queued: str) -> None:
        """A task whose missing arguments are counted: waiting for them (chained behind the task making
        the last one, where it can be), or ready in its queue."""
        if task.missing:
            self._move(task, S.WAITING, waiting)
            if task.missing == 1:
                self._chain_to_producer(task)
        else:
            self._move(task, S.QUEUED, queued)
            self._enqueue(task)

    def _form(self, spec: TaskSpec) -> tuple:
        """A task's (demand, dshape, shape): tasks share few resource requests, so each is built once
        and shared (never mutated)."""
        key = (spec.resources, spec.placement)
        form = self._forms.get(key)
        if form is None:
            demand = {k: float(v) for k, v in spec.resources if v}
            dshape = tuple(sorted(demand.items()))
            if len(self._forms) >= 1024:
                self._forms.clear()
            form = self._forms[key] = (demand, dshape, (spec.placement, *dshape))
        return form

    @staticmethod
    def _chained_behind(task) -> bool:
        """A chained task still on its engine, not started (a blocked one runs: its argument was made)."""
        return bool(task.chained) and task.engine >= 0 and not task.blocked and task.state in (S.ASSIGNED,
                                                                                                  S.RUNNING)

    def _made(self, oid: int) -> bool:
        """Whether an object is ready and did not fail."""
        obj = self.objects.get(oid)
        return obj is not None and obj.ready and not obj.status

    def _args_ready(self, deps) -> bool:
        """Every argument exists, is ready and did not fail (a Queued task's return is never ready)."""
        objects = self.objects
        for oid in deps:
            obj = objects.get(oid)
            if obj is None or not obj.ready or obj.status:
                return False
        return True

    def _submit_queued(self, client: int, spec: TaskSpec, form: tuple) -> None:
        """Submit a task that goes straight to a ready queue in the compact :class:`Queued` form."""
        tid = spec.task_id
        key = (spec.fn_id, spec.name, spec.num_returns, spec.resources, spec.max_retries, spec.retry_exceptions,
               spec.parent, spec.placement, client, spec.site)
        proto = self._protos.get(key)
        if proto is None:   # shared by the tasks of one call site; like _forms, a bounded cache
            if len(self._protos) >= 4096:
                self._protos.clear()
            proto = self._protos[key] = (*key[:9], form, spec.site)
        q = Queued(tid, spec.args, spec.deps, proto)
        self.tasks[tid] = q
        self.objects[tid] = q
        self._saw(client, tid, q)           # not parked (checked): nothing to attach
        self._link_child(spec.parent, tid)
        objects = self.objects
        for oid in spec.deps:               # all ready (checked): held until the task ends
            objects[oid].task_refs += 1
        self.counts[S.QUEUED] += 1
        if self.transitions:
            told = self.summary.submitted(q, S.QUEUED, self.now) if self.summary is not None else 0
            if told or self.full_stream:
                self.actions.append(Transition(tid, None, S.QUEUED, "submitted", told))
        shape = form[2]
        rq = self.ready.get(shape)
        if rq is None:
            rq = self.ready[shape] = deque()
        rq.append(tid)

    def _link_child(self, parent_id: int, tid: int) -> None:
        parent = self._task(parent_id) if parent_id else None
        if parent is not None and parent.state not in TERMINAL:
            if parent.children:
                parent.children.append(tid)
            else:
                parent.children = [tid]

    def task_done(self, engine_id: int, task_id: int, attempt: int, retry: bool, objects) -> list:
        """The engine reports a result (or a retryable exception); ``objects`` = ((oid, status, blob), ...)."""
        self._task_done(engine_id, task_id, attempt, retry, objects)
        self._schedule()
        return self._take()

    def tasks_done(self, engine_id: int, records) -> list:
        """A batch of TaskDone records from one engine."""
        eng = self.engines.get(engine_id)
        for r in records:
            if eng is not None:
                eng.avg_s = r.duration if eng.avg_s < 0 else eng.avg_s + (r.duration - eng.avg_s) * 0.2
            self._task_done(engine_id, r.task_id, r.attempt, r.status == 2, r.objects)
        if eng is not None:
            eng.depth = 1 + min(self.prefetch, int(self.prefetch_s / max(eng.avg_s, 1e-6)))
        self._schedule()
        if eng is not None and eng.extra:
            self._trim_extras()
        return self._take()

    def _task_done(self, engine_id, task_id, attempt, retry, objects) -> None:
        task = self.tasks.get(task_id)
        if task is None or task.state in TERMINAL or task.attempt != attempt or task.engine != engine_id:
            return  # a late report for a cancelled or re-run task
        self._off_engine(task)
        if retry:
            task.attempt += 1
            self._move(task, S.QUEUED, f"raised a retryable exception; retry {task.attempt}")
            self._enqueue(task)
            return
        failed = any(status for _, status, _ in objects)
        self._move(task, S.FAILED if failed else S.DONE, "raised" if failed else "finished")
        for oid, status, blob in objects:
            obj = self.objects.get(oid)
            if obj is not None:
                self._resolve(oid, obj, status, blob)
        self._finish(task)

    def cancel(self, task_id: int, force: bool, recursive: bool) -> list:
        if task_id in self.actor_calls:
            self.cancel_call(task_id)
            self._schedule()
            return self._take()
        task = self._task(task_id)
        if task is not None and task.state not in TERMINAL:
            self._cancel_one(task, force, notify=True, stimulus="jpar.cancel()")
        if task is not None and recursive:
            stack = list(task.children)
            while stack:
                child = self._task(stack.pop())
                if child is not None:
                    stack.extend(child.children)
                    if child.state not in TERMINAL:
                        self._cancel_one(child, force, notify=True, stimulus="its parent task was cancelled")
        self._schedule()
        return self._take()

    def cancel_client(self, client: int, force: bool = False) -> list:
        """Cancel every unfinished task ``client`` submitted, and the tasks those submitted (as
        ``jpar.cancel`` does); the owner's ``get`` raises TaskCancelledError. How many were cancelled:
        the :class:`Transition` actions to CANCELLED. Actor calls are left alone.
        Raises LookupError, changing nothing, for a client that is not connected."""
        if client not in self.clients:
            raise LookupError(f"No client (driver) number {client} is connected to this cluster (connected: "
                              f"{sorted(self.clients)}). Pick one from the status's \"clients\" "
                              "(`jpar status --json`).")
        mine = [(t.state is S.RUNNING, tid) for tid, t in self.tasks.items() if t.owner == client
                and t.state not in TERMINAL]
        todo = deque(tid for _, tid in sorted(mine, key=lambda m: m[0]))  # unstarted first
        stimulus = f"all tasks of driver {client} were cancelled"
        while todo:
            task = self._task(todo.popleft())
            if task is not None and task.state not in TERMINAL:
                todo.extend(task.children)
                self._cancel_one(task, force, notify=True, stimulus=stimulus)
        self._schedule()
        return self._take()

    def _cancel_one(self, task: Task, force: bool, notify: bool, stimulus: str) -> None:
        if task.engine >= 0:
            self.actions.append(CancelOnEngine(task.engine, task.spec.task_id, force))
            self._off_engine(task)
        detail = (task.spec.name, stimulus)      # TaskCancelledError(name, why)
        if notify:
            self.actions.append(SendFailure(task.owner, task.spec.task_id, task.return_ids, Failure.CANCELLED,
                                            detail))
        self._move(task, S.CANCELLED, stimulus)
        for oid in task.return_ids:
            obj = self.objects.get(oid)
            if obj is not None:
                self._settle_cancelled(oid, obj, detail)
        self._finish(task)

    def _settle_cancelled(self, oid: int, obj, detail) -> None:
        """A cancelled task's (or actor call's) return object: ready as an error, answered to whoever
        asked for it, failed for whoever waits on it, freed unless still held."""
        obj.ready, obj.status, obj.failure = True, 1, (Failure.CANCELLED, detail)
        if obj.requests:
            for client, req_id in obj.requests:
                self.actions.append(ReplyObjects(client, req_id, (oid,)))
            obj.requests = []
        self._fail_waiters(obj, Failure.CANCELLED, detail)
        self._maybe_free(oid)

    def _fail(self, task: Task, kind: Failure, detail, stimulus: str) -> None:
        if task.engine >= 0:
            self._off_engine(task)
        self._move(task, S.FAILED, stimulus)
        self.actions.append(SendFailure(task.owner, task.spec.task_id, task.return_ids, kind, detail))
        for oid in task.return_ids:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.ready, obj.status = True, 1
                if isinstance(detail, bytes):
                    obj.blob = detail
                else:
                    obj.failure = (kind, detail)
                if obj.requests:
                    for client, req_id in obj.requests:
                        self.actions.append(ReplyObjects(client, req_id, (oid,)))
                    obj.requests = []
                self._fail_waiters(obj, kind, detail)
                self._maybe_free(oid)
        self._finish(task)

    def _fail_waiters(self, obj: Obj, kind: Failure, detail) -> None:
        waiters, obj.waiters = obj.waiters, ()
        for tid in waiters:
            t = self.tasks.get(tid)
            if t is not None and (t.state is S.WAITING or self._chained_behind(t)):
                if t.engine in self.engines:   # chained: its engine must not start it (it would run on the value)
                    self.actions.append(CancelOnEngine(t.engine, tid, False))
                if obj.blob:
                    self._fail(t, Failure.DEPENDENCY, obj.blob, "an argument failed")
                else:
                    self._fail(t, kind, detail, "an argument failed")

    def _finish(self, task: Task) -> None:
        """A task reached a terminal state: drop its argument references and forget it."""
        for oid in task.spec.deps:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.task_refs -= 1
                self._maybe_free(oid)
        del self.tasks[task.spec.task_id]

    # ---- read-only views
    def engine_share(self, engine_id: int) -> tuple[dict, str]:
        """What an engine adds to its node's resources, and its node's name (({}, "") if unknown)."""
        eng = self.engines.get(engine_id)
        node = self.nodes.get(eng.node) if eng is not None else None
        return (dict(node.grows), node.name) if node is not None else ({}, "")

    def node_grows(self, node: str) -> dict | None:
        """What one more engine would add to ``node`` (None: no such node yet)."""
        n = self.nodes.get(node)
        return None if n is None else dict(n.grows)

    def resources(self) -> dict:
        out: dict = {}
        for node in self.nodes.values():
            for k, v in node.total.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def available(self) -> dict:
        out: dict = {}
        for node in self.nodes.values():
            for k, v in node.total.items():
                out[k] = out.get(k, 0.0) + v - node.used.get(k, 0.0)
        return out

    def statistics(self) -> "SchedulerStatistics":
        return SchedulerStatistics(
            tasks={s.value: n for s, n in self.counts.items()}, objects=len(self.objects),
            engines=len(self.engines), nodes=len(self.nodes), clients=len(self.clients),
            ready=sum(len(q) for q in self.ready.values()), **self.actor_statistics())


@dataclass(frozen=True)
class SchedulerStatistics:
    """Counts of the scheduler's state. ``tasks`` maps each state to the tasks in it now (live states)
    or that ever reached it (done, failed, cancelled); ``actors`` likewise for actor states."""

    tasks: dict
    objects: int
    engines: int
    nodes: int
    clients: int
    ready: int
    actors: dict
    actor_calls: int
