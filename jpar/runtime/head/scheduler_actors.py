"""The actor half of the scheduler: actor states, their transition table, and actor calls' objects.

Pure like :mod:`jpar.runtime.head.scheduler` (which mixes this in): events in, actions out, no sockets,
threads or clocks. An actor is one process, on the head's host when its resources fit there (or it
asks for none), else on the first other node where they fit; while it lives it holds its resources
(``num_cpus=0`` by default, so it blocks no task)::

    (new) --> PENDING --process up, __init__ ok--> ALIVE --process died, restarts left--> RESTARTING
                 |                                   |                                       |
                 +--> DEAD <--killed, owner gone, ---+---- __init__ ok again --> ALIVE <-----+
                      last handle dropped, died with no restarts left, __init__ raised

Method calls do not pass through here on their way: the caller sends them straight to the
actor process. The caller also queues a :class:`~jpar.runtime.wire.protocol.TaskSpec` with ``actor`` set
(a *call notice*, no arguments) on its head connection, so the head knows the call's return
objects (other tasks may take them as arguments) and can show the call in the event stream;
the actor process reports each finished call (:meth:`actor_calls_done`). A report may
overtake its notice (two different sockets): it then waits in ``early_done``.

Who decides a call's fate when its actor dies: the caller (it holds the arguments and knows
which process it sent the call to). It resends calls that ``max_task_retries`` allows to the
restarted process and reports the others as failed. The head only fails what is left when
an actor is dead for good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

from ..wire.protocol import ActorSpec, TaskSpec

__all__ = ["ActorState", "ACTOR_TRANSITIONS", "ActorScheduling", "SpawnActor", "StopActor", "ActorTransition",
           "NotifyActor", "ReplyActor", "CallEvent", "CancelCall"]


_COUNTER = (1 << 40) - 1          # the per-client counter part of task/object ids


class ActorState(str, enum.Enum):
    PENDING = "pending"          # created, waiting for resources or for its process to run __init__
    ALIVE = "alive"              # takes calls
    RESTARTING = "restarting"    # its process died; a new one is running __init__ again
    DEAD = "dead"                # for good: calls fail with ActorDiedError


A = ActorState

ACTOR_TRANSITIONS: dict[tuple[ActorState | None, ActorState], str] = {
    (None, A.PENDING): "created by its owner",
    (A.PENDING, A.ALIVE): "its process started and __init__ returned",
    (A.PENDING, A.RESTARTING): "its process died while starting; restarts left",
    (A.PENDING, A.DEAD): "__init__ raised, no node can hold it, it was killed, or its owner left",
    (A.ALIVE, A.RESTARTING): "its process died (or jpar.kill(no_restart=False)); restarts left",
    (A.ALIVE, A.DEAD): "killed, its owner's last handle was dropped, its owner left, or it died with no restarts left",
    (A.RESTARTING, A.ALIVE): "the new process ran __init__ again",
    (A.RESTARTING, A.RESTARTING): "the new process died too; restarts left",
    (A.RESTARTING, A.DEAD): "killed, its owner left, __init__ raised, or no restarts left",
}


# ---------------------------------------------------------------- actions
class SpawnActor(NamedTuple):
    """Start the actor's process (incarnation 0 first, then one per restart)."""

    actor_id: int
    incarnation: int
    gpu_ids: tuple
    node: str = ""       # where: the head's node starts it itself, another node through one of its engines


class StopActor(NamedTuple):
    """Kill the actor's process of this incarnation, if it still runs."""

    actor_id: int
    incarnation: int


class ActorTransition(NamedTuple):
    actor_id: int
    old: ActorState | None
    new: ActorState
    stimulus: str


class NotifyActor(NamedTuple):
    """Send these clients the actor's current state (ActorInfo)."""

    clients: tuple
    actor_id: int


class ReplyActor(NamedTuple):
    """Answer a named creation: the actor id it resolved to, or an error message."""

    client: int
    req_id: int
    actor_id: int
    error: str


class CancelCall(NamedTuple):
    """Tell the actor's process (this one and any later incarnation) that a call is cancelled: dropped
    if it has not started, its asyncio task cancelled if it runs in an async actor; a running sync
    call runs to its end (Ray's rule: actor state is not interrupted)."""

    actor_id: int
    task_id: int


class CallEvent(NamedTuple):
    """An actor call for the event stream; ``time`` None means now."""

    task_id: int
    state: str          # "queued" (the head heard of it), "running", "done", "failed"
    time: float | None
    info: dict | None


# ---------------------------------------------------------------- records
@dataclass(slots=True)
class Actor:
    spec: ActorSpec
    owner: int
    demand: dict
    detached: bool
    max_restarts: int
    state: ActorState | None = None
    node: str = ""
    placed: bool = False           # its resources are reserved on ``node``
    gpu_ids: tuple = ()
    restarts: int = 0
    incarnation: int = 0
    endpoints: tuple = ()
    host: str = ""
    detail: object = ""            # why it is dead: text, or an error blob made by the actor process
    subscribers: set = field(default_factory=set)
    released: bool = False         # the owner dropped its last handle: end once its calls finished


class ActorScheduling:
    """Mixed into :class:`~jpar.runtime.head.scheduler.Scheduler`: actor events. Uses its objects, nodes and actions."""

    def _init_actors(self, obj_cls) -> None:
        self._new_obj = obj_cls
        self.actors: dict[int, Actor] = {}
        self.actor_names: dict[str, int] = {}
        self.actor_queue: list[int] = []                 # pending actors waiting for resources, oldest first
        self.actor_calls: dict[int, TaskSpec] = {}       # call task id -> its notice
        self.calls_by_actor: dict[int, set] = {}
        self.early_done: dict[int, tuple] = {}           # call task id -> (actor id, CallDoneRecord)
        self.actor_waiters: dict[int, set] = {}          # unknown actor id -> clients waiting to hear of it
        self.head_node = ""                              # the head's own node: actors start here when they fit
        self.actor_counts: dict[ActorState, int] = {s: 0 for s in ActorState}
        self.seen: dict[int, int] = {}                   # client -> highest object counter registered
        self.parked: dict[int, list] = {}                # object id -> (client, req_id) asked before it existed
        self.cancelled_calls: dict[int, int] = {}        # call task id -> actor id: cancelled, report not in yet
        self.cancel_acks: dict[int, tuple] = {}          # call task id -> (actor id, SendFailure): told once
                                                         # the actor's process has the cancel (cancel_acked)

    # ---- objects asked for before their owner registered them
    # A caller sends a call straight to an actor and the call's notice (or a task's Submit) to the
    # head; a ref nested in the call's arguments can reach the head (the actor asks for it) before
    # the notice does. Ids are a per-client counter, so an id above the highest one seen from a live
    # owner has not arrived yet: its request waits instead of failing as lost.
    def _saw(self, client: int, oid: int, obj) -> None:
        n = oid & _COUNTER
        if n > self.seen.get(client, 0):
            self.seen[client] = n
        if self.parked:
            reqs = self.parked.pop(oid, None)
            if reqs:
                obj.requests = [*obj.requests, *reqs]

    def _not_arrived(self, oid: int) -> bool:
        owner = oid >> 40
        return owner in self.clients and (oid & _COUNTER) > self.seen.get(owner, 0)

    def _unpark_owner_left(self, client: int) -> None:
        from .scheduler import Failure, SendFailure

        self.seen.pop(client, None)
        for oid in [o for o in self.parked if o >> 40 == client]:
            for c, req_id in self.parked.pop(oid):
                self.actions.append(SendFailure(c, req_id, (oid,), Failure.OBJECT_LOST,
                                                "its owner left before creating it"))

    def _move_actor(self, actor: Actor, new: ActorState, stimulus: str) -> None:
        old = actor.state
        if (old, new) not in ACTOR_TRANSITIONS:
            raise AssertionError(f"illegal actor transition {old} -> {new} for {actor.spec.actor_id} ({stimulus})")
        actor.state = new
        if old is not None:
            self.actor_counts[old] -= 1
        self.actor_counts[new] += 1
        self.actions.append(ActorTransition(actor.spec.actor_id, old, new, stimulus))
        if actor.subscribers:
            self.actions.append(NotifyActor(tuple(actor.subscribers), actor.spec.actor_id))

    # ---- creation and lookup
    def create_actor(self, client: int, req_id: int, spec: ActorSpec, get_if_exists: bool = False) -> list:
        name = spec.name
        if name:
            existing = self.actors.get(self.actor_names.get(name, 0))
            if existing is not None and existing.state is not A.DEAD:
                if get_if_exists:
                    existing.subscribers.add(client)
                    self.actions.append(ReplyActor(client, req_id, existing.spec.actor_id, ""))
                    self.actions.append(NotifyActor((client,), existing.spec.actor_id))
                else:
                    self.actions.append(ReplyActor(client, req_id, 0, (
                        f"An actor named {name!r} already exists ({existing.spec.class_name}). Pick another name, "
                        f"use jpar.get_actor({name!r}), or pass .options(name={name!r}, get_if_exists=True).")))
                return self._take()
        if spec.actor_id in self.actors:
            return self._take()
        opts = spec.options
        demand = {k: float(v) for k, v in spec.resources if v}
        actor = Actor(spec, client, demand, bool(opts.get("detached")), int(opts.get("max_restarts", 0)))
        actor.subscribers.add(client)
        self.actors[spec.actor_id] = actor
        if name:
            self.actor_names[name] = spec.actor_id
        actor.subscribers.update(self.actor_waiters.pop(spec.actor_id, ()))
        if req_id:
            self.actions.append(ReplyActor(client, req_id, spec.actor_id, ""))
        self._move_actor(actor, A.PENDING, "created")
        if demand and self.nodes and not self._actor_feasible(actor):
            have = "; ".join(f"{n.name}: {n.total}" for n in self.nodes.values())
            self._end_actor(actor, (
                f"{spec.class_name} asks for {demand}, which no node of the cluster can ever provide (nodes: {have}). "
                "Lower num_cpus/num_gpus/resources in .options(), or join a host that has them "
                "(jpar start --address ... --resources '{...}')."),
                "no node can ever hold it")
        else:
            self.actor_queue.append(spec.actor_id)
            self._schedule()
        return self._take()

    def lookup_actor(self, client: int, actor_id: int) -> list:
        """A client will call this actor: tell it the state now and on every change."""
        actor = self.actors.get(actor_id)
        if actor is None and (actor_id >> 40) in self.clients:
            self.actor_waiters.setdefault(actor_id, set()).add(client)  # its creator has not sent it yet
            return self._take()
        if actor is not None and actor.state is not A.DEAD:
            actor.subscribers.add(client)
        self.actions.append(NotifyActor((client,), actor_id))
        return self._take()

    def named_actor(self, name: str) -> Actor | None:
        actor = self.actors.get(self.actor_names.get(name, 0))
        return actor if actor is not None and actor.state is not A.DEAD else None

    # ---- the actor's process
    def actor_ready(self, actor_id: int, incarnation: int, ok: bool, endpoints, host: str, error: bytes = b"") -> list:
        actor = self.actors.get(actor_id)
        if actor is None or actor.incarnation != incarnation or actor.state is A.DEAD:
            self.actions.append(StopActor(actor_id, incarnation))
            return self._take()
        if ok:
            actor.endpoints, actor.host = tuple(endpoints), host
            self._move_actor(actor, A.ALIVE, "__init__ returned" if not actor.restarts
                             else f"restarted ({actor.restarts} of {self._restarts_text(actor)})")
            self._maybe_end_released(actor)
        else:
            self._end_actor(actor, error or b"", "__init__ raised")
        self._schedule()
        return self._take()

    def actor_process_died(self, actor_id: int, incarnation: int, why: str) -> list:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state is A.DEAD or actor.incarnation != incarnation:
            return self._take()
        if actor.released or not self._restarts_left(actor):
            self._end_actor(actor, f"its process {why}" + (
                "" if actor.released else f" and its restarts are spent (max_restarts={actor.max_restarts})"),
                "process died, no restarts left", stop=False)
        else:
            actor.restarts += 1
            actor.incarnation += 1
            actor.endpoints = ()
            self._move_actor(actor, A.RESTARTING, f"process {why}; restart {actor.restarts}")
            self._drop_orphan_calls(actor)
            self._release_cancel_acks(actor_id)
            node = self.nodes.get(actor.node)
            if actor.node != self.head_node and (node is None or not node.engines):
                self._unplace_actor(actor)      # its host is gone: it starts wherever it fits now
                self.actor_queue.append(actor_id)
            else:
                self.actions.append(SpawnActor(actor_id, actor.incarnation, actor.gpu_ids, actor.node))
        self._schedule()
        return self._take()

    def kill_actor(self, actor_id: int, no_restart: bool) -> list:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state is A.DEAD:
            return self._take()
        if no_restart or not self._restarts_left(actor) or not actor.placed and actor.state in (A.PENDING, A.RESTARTING):
            self._end_actor(actor, "it was killed with jpar.kill()", "jpar.kill()")
            self._schedule()
        else:
            self.actions.append(StopActor(actor_id, actor.incarnation))  # its death restarts it
        return self._take()

    def release_actor(self, client: int, actor_id: int) -> list:
        """The owner's last handle is gone: the actor ends once the calls already made finish."""
        actor = self.actors.get(actor_id)
        if actor is not None and actor.owner == client and not actor.detached and actor.state is not A.DEAD:
            actor.released = True
            self._maybe_end_released(actor)
            self._schedule()
        return self._take()

    def _maybe_end_released(self, actor: Actor) -> None:
        if actor.released and actor.state is A.ALIVE and not self.calls_by_actor.get(actor.spec.actor_id):
            self._end_actor(actor, "its owner dropped its last handle", "out of scope")
        elif actor.released and actor.state is A.PENDING and not actor.placed \
                and not self.calls_by_actor.get(actor.spec.actor_id):
            self._end_actor(actor, "its owner dropped its last handle", "out of scope")

    def _actors_owner_left(self, client: int) -> None:
        self._unpark_owner_left(client)
        for actor in list(self.actors.values()):
            actor.subscribers.discard(client)
            if actor.owner == client and not actor.detached and actor.state is not A.DEAD:
                self._end_actor(actor, "its owner (the driver that created it) disconnected", "owner left")
        for waiters in self.actor_waiters.values():
            waiters.discard(client)
        for actor_id in [a for a in self.actor_waiters if a >> 40 == client]:
            clients = tuple(self.actor_waiters.pop(actor_id))
            if clients:
                self.actions.append(NotifyActor(clients, actor_id))   # unknown: reported dead

    def _restarts_left(self, actor: Actor) -> bool:
        return actor.max_restarts < 0 or actor.restarts < actor.max_restarts

    @staticmethod
    def _restarts_text(actor: Actor) -> str:
        return "unlimited" if actor.max_restarts < 0 else str(actor.max_restarts)

    def _end_actor(self, actor: Actor, detail, stimulus: str, stop: bool = True) -> None:
        """DEAD for good: stop its process, free its resources and name, fail the calls left."""
        actor_id = actor.spec.actor_id
        actor.detail = detail
        had_process = actor.placed or actor.state in (A.ALIVE, A.RESTARTING)
        self._move_actor(actor, A.DEAD, stimulus)
        actor.subscribers.clear()
        actor.endpoints = ()
        if stop and had_process:
            self.actions.append(StopActor(actor_id, actor.incarnation))
        self._unplace_actor(actor)
        try:
            self.actor_queue.remove(actor_id)
        except ValueError:
            pass
        if actor.spec.name and self.actor_names.get(actor.spec.name) == actor_id:
            del self.actor_names[actor.spec.name]
        for tid in list(self.calls_by_actor.pop(actor_id, ())):
            spec = self.actor_calls.pop(tid, None)
            if spec is not None:
                self._fail_call(spec, detail)
        for tid in [t for t, (a, _) in self.early_done.items() if a == actor_id]:
            del self.early_done[tid]
        for tid in [t for t, a in self.cancelled_calls.items() if a == actor_id]:
            del self.cancelled_calls[tid]
        self._release_cancel_acks(actor_id)

    def cancel_call(self, task_id: int) -> bool:
        """``jpar.cancel`` of an actor call (False: not an unfinished call). Its owner's get() raises
        TaskCancelledError at once; the actor's process is told (:class:`CancelCall`)."""
        from .scheduler import Failure, SendFailure

        spec = self.actor_calls.pop(task_id, None)
        if spec is None:
            return False
        self._forget_call(spec.actor, task_id)
        self.cancelled_calls[task_id] = spec.actor
        detail = (spec.name, "jpar.cancel()")
        ids = tuple(range(task_id, task_id + max(1, spec.num_returns)))
        owner = self.objects[task_id].owner if task_id in self.objects else -1
        # the actor's process has the cancel before the owner hears: a call it has not started is
        # then dropped before the owner's get() raises and the owner's program goes on (and frees
        # the actor up). A threaded or async actor takes calls on other threads while its main
        # thread reads the head, so its owner hears only once that process acknowledged the cancel
        # (a CancelTask sent back); a sync actor reads the head before each call, in order.
        self.actions.append(CancelCall(spec.actor, task_id))
        failure = SendFailure(owner, task_id, ids, Failure.CANCELLED, detail)
        actor = self.actors.get(spec.actor)
        opts = actor.spec.options if actor is not None else {}
        concurrent = (opts.get("max_concurrency") or 1) > 1 or bool(opts.get("is_async"))
        if actor is not None and concurrent and actor.state is A.ALIVE:
            self.cancel_acks[task_id] = (spec.actor, failure)
        else:
            self.actions.append(failure)
        self._call_event(task_id, "cancelled", None, {"why": "jpar.cancel()"})
        for oid in ids:
            obj = self.objects.get(oid)
            if obj is not None and not obj.ready:
                self._settle_cancelled(oid, obj, detail)
        self._call_deps_done(spec)
        actor = self.actors.get(spec.actor)
        if actor is not None and actor.released:
            self._maybe_end_released(actor)
        return True

    def cancel_acked(self, task_id: int) -> list:
        """The actor's process has the cancel of ``task_id``: its owner hears now."""
        waiting = self.cancel_acks.pop(task_id, None)
        if waiting is not None:
            self.actions.append(waiting[1])
        return self._take()

    def _release_cancel_acks(self, actor_id: int) -> None:
        """The actor's process is gone (restarting or dead): no acknowledgement will come from it,
        and no call of it can start, so the owners waiting for one hear now."""
        for tid in [t for t, (a, _) in self.cancel_acks.items() if a == actor_id]:
            self.actions.append(self.cancel_acks.pop(tid)[1])

    def _drop_orphan_calls(self, actor: Actor) -> None:
        """Calls whose caller is gone have nobody to resend them: fail them at a restart."""
        for tid in list(self.calls_by_actor.get(actor.spec.actor_id, ())):
            spec = self.actor_calls.get(tid)
            owner = self.objects.get(tid)
            if spec is not None and owner is not None and owner.owner not in self.clients:
                self._forget_call(actor.spec.actor_id, tid)
                self._fail_call(spec, "its actor's process died")

    # ---- placement
    def _actor_nodes(self) -> list:
        """Where an actor may start, in order of preference: the head's node (the head starts its
        processes there, from warm spares), then every other node that has an engine to start them."""
        head = self.nodes.get(self.head_node)
        return ([head] if head is not None else []) + [
            n for name, n in sorted(self.nodes.items()) if name != self.head_node and n.engines]

    def _actor_feasible(self, actor: Actor) -> bool:
        return any(all(n.total.get(k, 0.0) >= v for k, v in actor.demand.items()) for n in self._actor_nodes())

    def _place_actors(self) -> None:
        """Reserve resources for pending actors (oldest first) and start their processes."""
        still = []
        for actor_id in self.actor_queue:
            actor = self.actors.get(actor_id)
            if actor is None or actor.state not in (A.PENDING, A.RESTARTING) or actor.placed:
                continue   # (RESTARTING and not placed: its node was lost, see actor_process_died)
            if actor.demand:
                node = self._actor_node(actor)
                if node is None:
                    still.append(actor_id)
                    continue
                for k, v in actor.demand.items():
                    node.used[k] = node.used.get(k, 0.0) + v
                if "GPU" in actor.demand:
                    actor.gpu_ids = self._gpus_for(node, actor.demand["GPU"])
                    share = actor.demand["GPU"] if actor.demand["GPU"] < 1 else 1.0
                    for g in actor.gpu_ids:
                        node.gpu_free[g] -= share
                actor.node = node.name
            else:
                actor.node = self.head_node
            actor.placed = True
            self.actions.append(SpawnActor(actor_id, actor.incarnation, actor.gpu_ids, actor.node))
        self.actor_queue = still

    def _actor_node(self, actor: Actor):
        for node in self._actor_nodes():
            if all(node.total.get(k, 0.0) - node.used.get(k, 0.0) >= v - 1e-9 for k, v in actor.demand.items()):
                if "GPU" in actor.demand and not self._gpus_for(node, actor.demand["GPU"]):
                    continue
                return node
        return None

    def _unplace_actor(self, actor: Actor) -> None:
        if not actor.placed:
            return
        actor.placed = False
        node = self.nodes.get(actor.node)
        if node is not None and actor.demand:
            for k, v in actor.demand.items():
                node.used[k] = node.used.get(k, 0.0) - v
            if actor.gpu_ids:
                share = actor.demand["GPU"] if actor.demand["GPU"] < 1 else 1.0
                for g in actor.gpu_ids:
                    node.gpu_free[g] = min(1.0, node.gpu_free.get(g, 0.0) + share)
        actor.gpu_ids = ()

    # ---- calls
    def _call_event(self, task_id: int, state: str, when, info) -> None:
        """An actor call's event for the stream, made only while someone listens (``transitions``,
        the same switch as tasks' Transition records)."""
        if self.transitions:
            self.actions.append(CallEvent(task_id, state, when, info))

    def _actor_call_submitted(self, client: int, spec: TaskSpec) -> None:
        """A call notice (a TaskSpec with ``actor`` set): register its return objects."""
        tid = spec.task_id
        objects = self.objects
        for i in range(max(1, spec.num_returns)):
            if tid + i not in objects:
                obj = objects[tid + i] = self._new_obj(client)
                self._saw(client, tid + i, obj)
        for oid in spec.deps:
            obj = self._obj(oid)
            if obj is not None:
                obj.task_refs += 1
        if self.transitions:   # (the details are built only then)
            self._call_event(tid, "queued", None, {
                "name": spec.name, "deps": spec.deps, "parent": spec.parent, "owner": client, "actor": spec.actor})
        actor = self.actors.get(spec.actor)
        if actor is not None and actor.state is A.DEAD:
            self._fail_call(spec, actor.detail)
            return
        self.actor_calls[tid] = spec
        self.calls_by_actor.setdefault(spec.actor, set()).add(tid)
        early = self.early_done.pop(tid, None)
        if early is not None:
            self._call_done(early[0], early[1])

    def actor_calls_done(self, actor_id: int, records, from_actor: bool = True) -> list:
        """Finished calls reported by the actor process (or failures reported by their caller)."""
        for r in records:
            if r.task_id not in self.actor_calls:
                if self.cancelled_calls.pop(r.task_id, None) is not None:
                    continue   # settled when it was cancelled
                if from_actor and r.task_id not in self.objects:
                    self.early_done[r.task_id] = (actor_id, r)   # overtook its notice
                continue
            self._call_done(actor_id, r)
        actor = self.actors.get(actor_id)
        if actor is not None and actor.released:
            self._maybe_end_released(actor)
        self._schedule()
        return self._take()

    def _call_done(self, actor_id: int, r) -> None:
        spec = self.actor_calls.pop(r.task_id, None)
        if spec is None:
            return
        self._forget_call(actor_id, r.task_id)
        failed = bool(r.status) or any(status for _, status, _ in r.objects)
        if r.start:
            self._call_event(r.task_id, "running", r.start, {"actor": actor_id})
        self._call_event(r.task_id, "failed" if failed else "done", r.end or None, None)
        for oid, status, blob in r.objects:
            obj = self.objects.get(oid)
            if obj is not None:
                self._resolve(oid, obj, status, blob)
        self._call_deps_done(spec)

    def _forget_call(self, actor_id: int, task_id: int) -> None:
        calls = self.calls_by_actor.get(actor_id)
        if calls is not None:
            calls.discard(task_id)
            if not calls:
                del self.calls_by_actor[actor_id]

    def _call_deps_done(self, spec: TaskSpec) -> None:
        for oid in spec.deps:
            obj = self.objects.get(oid)
            if obj is not None:
                obj.task_refs -= 1
                self._maybe_free(oid)

    def _fail_call(self, spec: TaskSpec, detail) -> None:
        """The head fails a call (its actor is dead): tell its owner and settle its objects."""
        from .scheduler import Failure, SendFailure

        tid = spec.task_id
        ids = tuple(range(tid, tid + max(1, spec.num_returns)))
        owner = self.objects[tid].owner if tid in self.objects else -1
        self.actions.append(SendFailure(owner, tid, ids, Failure.ACTOR_DIED, self._death_text(spec.actor, detail)))
        self._call_event(tid, "failed", None, {"why": "actor died"})
        for oid in ids:
            obj = self.objects.get(oid)
            if obj is not None and not obj.ready:
                obj.ready, obj.status = True, 1
                if isinstance(detail, bytes) and detail:
                    obj.blob = detail
                else:
                    obj.failure = (Failure.ACTOR_DIED, self._death_text(spec.actor, detail))
                if obj.requests:
                    from .scheduler import ReplyObjects

                    for client, req_id in obj.requests:
                        self.actions.append(ReplyObjects(client, req_id, (oid,)))
                    obj.requests = []
                self._fail_waiters(obj, Failure.ACTOR_DIED, self._death_text(spec.actor, detail))
                self._maybe_free(oid)
        self._call_deps_done(spec)

    def _death_text(self, actor_id: int, detail):
        if isinstance(detail, bytes) and detail:
            return detail
        actor = self.actors.get(actor_id)
        name = actor.spec.class_name if actor is not None else "the actor"
        return f"{name} (actor {actor_id:#x}) is dead: {detail or 'unknown actor'}"

    # ---- read-only views
    def actor_statistics(self) -> dict:
        return {"actors": {s.value: n for s, n in self.actor_counts.items()}, "actor_calls": len(self.actor_calls)}
