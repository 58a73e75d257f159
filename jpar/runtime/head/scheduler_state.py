"""The scheduler's vocabulary: task states and the table of legal moves between them, why the head
fails a task, the actions the scheduler emits, and the records it keeps per task, object, engine and
node. Plain data, no behaviour: :mod:`jpar.runtime.head.scheduler` is the state machine that uses them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from ..wire.protocol import TaskSpec

__all__ = ["TaskState", "Failure", "DispatchTask", "SendFailure", "CancelOnEngine", "RevokeOnEngine", "DrainEngine", "RetireEngine", "SpawnEngine", "ReplyObjects", "Transition", "FreeObjects", "Task", "Obj", "Queued", "Engine", "Node", "S", "TERMINAL", "TRANSITIONS", "PER_ENGINE"]


class TaskState(str, enum.Enum):
    WAITING = "waiting"      # some top-level ref argument is not ready yet
    QUEUED = "queued"        # ready, waiting for an engine with the resources free
    ASSIGNED = "assigned"    # sent to an engine, behind another task in its queue
    RUNNING = "running"      # the engine is running it (or it is blocked in a nested get)
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = TaskState
TERMINAL = frozenset({S.DONE, S.FAILED, S.CANCELLED})

TRANSITIONS: dict[tuple[TaskState | None, TaskState], str] = {
    (None, S.WAITING): "submitted; some arguments are refs not ready yet",
    (None, S.QUEUED): "submitted with all arguments ready",
    (None, S.FAILED): "rejected at submit (no engine can ever satisfy it, or an argument failed or is lost)",
    (S.WAITING, S.QUEUED): "the last argument became ready",
    (S.WAITING, S.FAILED): "an argument failed, or its owner left",
    (S.WAITING, S.CANCELLED): "cancelled before it could run",
    (S.WAITING, S.ASSIGNED): "chained: sent to the engine making its last missing argument, behind that task",
    (S.QUEUED, S.ASSIGNED): "placed behind another task on an engine (prefetch)",
    (S.QUEUED, S.RUNNING): "placed on an idle engine",
    (S.QUEUED, S.WAITING): "an argument was lost with its host and is being rebuilt by its task (lineage)",
    (S.QUEUED, S.FAILED): "the last node able to run it left",
    (S.QUEUED, S.CANCELLED): "cancelled before it could run",
    (S.ASSIGNED, S.RUNNING): "the engine finished the task ahead of it",
    (S.ASSIGNED, S.QUEUED): "taken back unstarted: its engine died, is being removed, or was busy far longer "
                            "than usual",
    (S.ASSIGNED, S.WAITING): "chained, and taken back unstarted before its argument was ready (its engine gave "
                             "it back, died, or is being removed); or an argument it was sent was lost with its "
                             "host and is being rebuilt",
    (S.ASSIGNED, S.CANCELLED): "cancelled while prefetched",
    (S.ASSIGNED, S.DONE): "finished (run while the task ahead was blocked)",
    (S.ASSIGNED, S.FAILED): "raised (run while the task ahead was blocked)",
    (S.RUNNING, S.DONE): "finished",
    (S.RUNNING, S.FAILED): "raised, or its engine died with no retries left",
    (S.RUNNING, S.QUEUED): "retried: its engine died, or it raised an exception retry_exceptions allows; "
                           "or its engine gave it back unstarted (revoked as the task ahead finished)",
    (S.RUNNING, S.CANCELLED): "cancelled while running",
    (S.RUNNING, S.WAITING): "chained, and given back by its engine: the task ahead of it, which the head took it "
                            "to follow, did not make its argument there (it raised, was retried or cancelled); or "
                            "an argument it was sent was lost with its host: stopped, it waits for the rebuilt value",
}


class Failure(str, enum.Enum):
    """Why the head (not the task) failed a task; the controller turns these into errors."""

    CANCELLED = "cancelled"
    ENGINE_CRASHED = "engine_crashed"
    INFEASIBLE = "infeasible"
    ACTOR_DIED = "actor_died"      # an actor call whose actor is dead for good
    DEPENDENCY = "dependency"      # an argument failed: its error blob is propagated
    OBJECT_LOST = "object_lost"
    OBJECT_FREED = "object_freed"  # jpar.free: marks an object whose value was dropped (its blob: the error)


# ---------------------------------------------------------------- actions
class DispatchTask(NamedTuple):
    engine_id: int
    task_id: int
    gpu_ids: tuple


class SendFailure(NamedTuple):
    """Tell a task's owner that its returns failed: ``kind`` plus a detail or an error blob."""

    owner: int
    task_id: int
    object_ids: tuple
    kind: Failure
    detail: object       # str message, or bytes (the failed dependency's error blob)


class CancelOnEngine(NamedTuple):
    engine_id: int
    task_id: int
    force: bool


class RevokeOnEngine(NamedTuple):
    """Ask an engine to give back prefetched tasks it has not started (an idle engine can take them)."""

    engine_id: int
    task_ids: tuple


class DrainEngine(NamedTuple):
    """This engine takes no new tasks from now on (it is being removed); one per engine of a drain."""

    engine_id: int


class RetireEngine(NamedTuple):
    """A draining engine holds no task any more: stop its process (``engine_removed`` follows)."""

    engine_id: int


class SpawnEngine(NamedTuple):
    """Start a temporary extra engine on ``node``: tasks there are blocked in get() (their CPUs are lent)
    and ready work has no engine to run on. It adds no resources and is retired once not needed."""

    node: str


class ReplyObjects(NamedTuple):
    client: int
    req_id: int
    object_ids: tuple


class Transition(NamedTuple):
    task_id: int
    old: TaskState | None
    new: TaskState
    stimulus: str
    told: int = 0        # on the summary stream: 0 not told, else task_summary.DETAILED / FAILED_UNTOLD


class FreeObjects(NamedTuple):
    object_ids: tuple


# ---------------------------------------------------------------- state records
@dataclass(slots=True)
class Task:
    """One live task (a task waiting ready in its queue is a :class:`Queued` until it needs this). Many
    may be live at once, so the record is small: its demand is one tuple shared by every task of the
    same shape, and the containers it rarely needs are an empty tuple until first used."""

    spec: TaskSpec
    owner: int
    form: tuple                                      # (demand, dshape, shape), shared (Scheduler._form)
    state: TaskState | None = None
    missing: int = 0
    engine: int = -1
    attempt: int = 0
    gpu_ids: tuple = ()
    started: bool = False
    blocked: bool = False
    revoking: bool = False
    chained: int = 0                                 # the argument it waits for on its engine (scheduler_chaining)
    children: list | tuple = ()                      # ids of the tasks it submitted (a list once it has any)

    @property
    def demand(self) -> dict:                        # resource -> amount (never mutated: shared)
        return self.form[0]

    @property
    def dshape(self) -> tuple:                       # the demand alone, as sorted items
        return self.form[1]

    @property
    def shape(self) -> tuple:                        # (placement, *dshape): one ready FIFO per shape
        return self.form[2]

    @property
    def return_ids(self) -> tuple:
        tid, n = self.spec.task_id, self.spec.num_returns
        return (tid,) if n <= 1 else tuple(range(tid, tid + n))    # (tid,): the objects map shares its int


@dataclass(slots=True)
class Obj:
    """One object the head knows of; like :class:`Task`, lean, with lazy containers."""

    owner: int
    ready: bool = False
    status: int = 0
    blob: bytes = b""
    failure: tuple = ()                              # (Failure, detail) when the head failed it
    held_by_owner: bool = True
    task_refs: int = 0
    waiters: list | tuple = ()                       # task ids waiting for it (a list once it has any)
    requests: list | tuple = ()                      # (client, req_id) waiting for it (a list once it has any)


class Queued:
    """A task waiting in a ready queue in its compact form: it stands for the task in ``Scheduler.tasks``
    and for its single return object in ``Scheduler.objects`` (one object, both entries), until anything
    needs more than to read it (placement, cancel, a request for its result, a task depending on it, a
    release...), when :meth:`Scheduler._promote` puts a :class:`Task` and an :class:`Obj` in its place.

    A fresh task with every argument ready, one return value and no pin is submitted in this form: a
    million of them may wait at once, and all they need until then is their arguments and a link to
    what they share with the tasks of the same call site (``proto``, one tuple per function, options,
    owner and parent). Read-only: it answers every attribute the scheduler reads from a queued Task or
    its pending Obj, with the values those would hold (class attributes, free); setting one raises."""

    __slots__ = ("task_id", "args", "deps", "proto")

    # proto: (fn_id, name, num_returns, resources, max_retries, retry_exceptions, parent, placement, owner, form, site)
    def __init__(self, task_id: int, args: bytes, deps: tuple, proto: tuple):
        self.task_id, self.args, self.deps, self.proto = task_id, args, deps, proto

    # as a Task
    state = TaskState.QUEUED
    missing = 0
    engine = -1
    attempt = 0
    gpu_ids = ()
    started = False
    blocked = False
    revoking = False
    chained = 0
    children = ()
    # as its return object (an Obj not ready yet, held by its owner, asked for by no one)
    ready = False
    status = 0
    blob = b""
    failure = ()
    held_by_owner = True
    task_refs = 0
    waiters = ()
    requests = ()

    @property
    def spec(self) -> TaskSpec:
        fn_id, name, nret, resources, max_retries, retry_exceptions, parent, placement, _, _, site = self.proto
        return TaskSpec(self.task_id, fn_id, name, self.args, self.deps, nret, resources, max_retries,
                        retry_exceptions, parent, 0, placement, site)

    @property
    def owner(self) -> int:
        return self.proto[8]

    @property
    def form(self) -> tuple:
        return self.proto[9]

    @property
    def demand(self) -> dict:
        return self.proto[9][0]

    @property
    def dshape(self) -> tuple:
        return self.proto[9][1]

    @property
    def shape(self) -> tuple:
        return self.proto[9][2]

    @property
    def return_ids(self) -> tuple:
        return (self.task_id,)

    def __repr__(self) -> str:
        return f"Queued(task_id={self.task_id:#x}, {self.proto[1]})"


@dataclass(slots=True)
class Engine:
    engine_id: int
    node: str
    queue: dict = field(default_factory=dict)        # task ids (keys, in the order the engine runs them)
    shapes: dict = field(default_factory=dict)       # demand shape -> count of its unblocked queued tasks
    active: int = 0                                  # unblocked tasks in the queue
    reserved: dict = field(default_factory=dict)
    avg_s: float = -1.0                              # moving average of its tasks' run time (-1: none yet)
    running_since: float = 0.0                       # scheduler clock when its current task started
    depth: int = 1                                   # how many tasks it may hold (1 + prefetch)
    draining: bool = False                           # being removed: no new tasks, retired once empty
    retired: bool = False                            # RetireEngine sent
    blocked: list = field(default_factory=list)      # stack of its tasks blocked in get() (last: the top)
    blocked_since: float = 0.0                       # scheduler clock when its stack last became non-empty
    extra: bool = False                              # a temporary engine started for blocked ones (SpawnEngine)


PER_ENGINE = "per_engine"   # key of the resources an engine advertises: what each engine of its node adds


@dataclass(slots=True)
class Node:
    name: str
    total: dict                                      # fixed part + grows x engines (see Scheduler.engine_added)
    grows: dict = field(default_factory=dict)        # what each engine adds (CPU 1 unless num_cpus was declared)
    used: dict = field(default_factory=dict)         # sum of engines' reservations
    gpu_free: dict = field(default_factory=dict)     # gpu id -> free fraction
    engines: list = field(default_factory=list)
    spawning: int = 0                                # extra engines asked for (SpawnEngine), not joined yet
