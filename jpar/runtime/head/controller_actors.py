"""The head's actor duties: start and stop actor processes, answer lookups, publish actor events.

Mixed into :class:`jpar.runtime.head.controller.Head`. The scheduler decides (:mod:`jpar.runtime.head.scheduler_actors`);
this carries its actions out::

    owner  --RegisterFunction, CreateActor-->  head --SpawnActor--> engine process in actor mode
    actor  --ActorHello-->  head  --ActorSetup (class, args)-->  actor runs __init__, binds its socket
    actor  --ActorReady(endpoints)-->  head --ActorInfo--> every subscribed caller (state changes too)
    caller --Calls--> actor --Results--> caller           (no head on the call path)
    caller --Submit(call notices)--> head <--ActorCallsDone-- actor   (objects + event stream)

An actor process is a child of the head like an engine, but it is never respawned blindly:
its exit is an event for the scheduler, which restarts it (a new *incarnation*) or lets it die.
At most :func:`starting_limit` actor processes start at once (the rest wait in line): hundreds
of Python processes importing at the same time on a few cores would starve the head itself,
which must stay responsive (to stop the cluster, among others). At shutdown every actor
process is killed at once and waited for together.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections import deque

from ..wire import protocol as P
from ..wire import serialization
from ...errors import ActorDiedError
from .scheduler_actors import ActorState, ActorTransition, CallEvent, CancelCall, NotifyActor, ReplyActor, SpawnActor, StopActor

log = logging.getLogger("jpar.head")

ACTOR_ACTIONS = (ActorTransition, CallEvent, CancelCall, NotifyActor, ReplyActor, SpawnActor, StopActor)
ACTOR_CLIENT_MESSAGES = (P.CreateActor, P.ActorLookup, P.KillActor, P.ReleaseActor, P.ActorCallsDone)


class ActorHead:
    """Actor processes and actor messages of the head (uses Head's router, scheduler, events)."""

    def _init_actor_head(self) -> None:
        self.actor_peers: dict[bytes, tuple[int, int]] = {}      # identity -> (actor id, incarnation)
        self.actor_procs: dict[tuple[int, int], subprocess.Popen] = {}
        self.actor_pids: dict[tuple[int, int], int] = {}
        self.actor_spawns: deque = deque()                       # SpawnActor waiting for a start slot
        self.actor_starting: set = set()                         # (id, incarnation) started, not ready yet
        self.sched.head_node = self.setup.get("node") or socket.gethostname()

    # ------------------------------------------------------------ messages
    def _actor_client_message(self, client, msg) -> None:
        t = type(msg)
        if t is P.CreateActor:
            self._apply(self.sched.create_actor(client.no, msg.req_id, P.ActorSpec(*msg.spec), msg.get_if_exists))
        elif t is P.ActorLookup:
            self._apply(self.sched.lookup_actor(client.no, msg.actor_id))
        elif t is P.KillActor:
            self._apply(self.sched.kill_actor(msg.actor_id, msg.no_restart))
        elif t is P.ReleaseActor:
            self._apply(self.sched.release_actor(client.no, msg.actor_id))
        elif t is P.ActorCallsDone:
            self._apply(self.sched.actor_calls_done(msg.actor_id, msg.records, from_actor=False))

    def _actor_peer_message(self, identity: bytes, msg) -> None:
        t = type(msg)
        if t is P.ActorCallsDone:
            self._apply(self.sched.actor_calls_done(msg.actor_id, msg.records))
        elif t is P.ActorHello:
            key = (msg.actor_id, msg.incarnation)
            actor = self.sched.actors.get(msg.actor_id)
            if actor is None or actor.incarnation != msg.incarnation or actor.state is ActorState.DEAD:
                self.router.send_to(identity, P.Shutdown("this actor is no longer wanted"))
                return
            self.actor_peers[identity] = key
            self.actor_pids[key] = msg.pid
            spec = actor.spec
            self.router.send_to(identity, P.ActorSetup(spec, msg.incarnation, self.functions.get(spec.fn_id, b"")))
            for tid in [t for t, a in self.sched.cancelled_calls.items() if a == msg.actor_id]:
                self.router.send_to(identity, P.CancelTask(tid, False))   # a resent call must not run again
        elif t is P.ActorReady:
            self._actor_started((msg.actor_id, msg.incarnation))
            actor = self.sched.actors.get(msg.actor_id)
            host = socket.gethostname()
            self._apply(self.sched.actor_ready(msg.actor_id, msg.incarnation, msg.status == P.OK, msg.endpoints,
                                               host, msg.blob))
            if actor is not None:
                self.events.append(P.Event(time.time(), "actor", msg.actor_id, "process", {
                    "pid": self.actor_pids.get((msg.actor_id, msg.incarnation), 0),
                    "incarnation": msg.incarnation, "endpoints": list(msg.endpoints)}))

    # ------------------------------------------------------------ actions
    def _apply_actor(self, a) -> None:
        t = type(a)
        if t is CallEvent:
            self.events.append(P.Event(a.time or time.time(), "task", a.task_id, a.state, a.info))
        elif t is NotifyActor:
            info = self._actor_info(a.actor_id)
            for no in a.clients:
                c = self.clients_by_no.get(no)
                if c is not None:
                    c.push.send(info, nowait=True)
        elif t is ActorTransition:
            actor = self.sched.actors.get(a.actor_id)
            info = {"stimulus": a.stimulus}
            if actor is not None:
                if a.old is None:
                    opts = actor.spec.options
                    info.update({"class": actor.spec.class_name, "name": actor.spec.name, "owner": actor.owner,
                                 "resources": dict(actor.spec.resources), "max_restarts": actor.max_restarts,
                                 "max_concurrency": opts.get("max_concurrency"), "is_async": opts.get("is_async")})
                info["incarnation"] = actor.incarnation
                if a.new is ActorState.DEAD:
                    info["why"] = actor.detail if isinstance(actor.detail, str) else "__init__ raised"
            self.events.append(P.Event(time.time(), "actor", a.actor_id, a.new.value, info))
        elif t is SpawnActor:
            if not self.stopping:
                self._spawn_actor(a)
        elif t is StopActor:
            self._stop_actor(a.actor_id, a.incarnation)
        elif t is ReplyActor:
            self._answer(a.client, a.req_id, {"actor_id": a.actor_id, "error": a.error})
        elif t is CancelCall:
            actor = self.sched.actors.get(a.actor_id)
            key = (a.actor_id, actor.incarnation) if actor is not None else None
            for ident, k in self.actor_peers.items():
                if k == key:
                    self.router.send_to(ident, P.CancelTask(a.task_id, False))

    def _actor_info(self, actor_id: int) -> P.ActorInfo:
        actor = self.sched.actors.get(actor_id)
        if actor is None:
            return P.ActorInfo(actor_id, "dead", 0, [], "", serialization.dumps_error(ActorDiedError(
                f"No actor {actor_id:#x} exists on this cluster: its creator disconnected before creating it, "
                "or the handle belongs to another cluster. Create a new actor.")))
        detail = b""
        if actor.state is ActorState.DEAD:
            detail = actor.detail if isinstance(actor.detail, bytes) and actor.detail else \
                serialization.dumps_error(ActorDiedError(
                    f"The actor {actor.spec.class_name} ({actor_id:#x}) is dead: {actor.detail}. Its calls fail; "
                    "create a new actor (or give it max_restarts= to survive crashes)."))
        return P.ActorInfo(actor_id, actor.state.value, actor.incarnation, list(actor.endpoints), actor.host, detail)

    def _spawn_actor(self, a: SpawnActor) -> None:
        if len(self.actor_starting) >= starting_limit():
            self.actor_spawns.append(a)
            return
        proc = self._spawn_engine(actor={"id": a.actor_id, "incarnation": a.incarnation,
                                         "gpu_ids": list(a.gpu_ids), "bind_host": self.config.bind_host})
        self.actor_procs[(a.actor_id, a.incarnation)] = proc
        self.actor_starting.add((a.actor_id, a.incarnation))

    def _actor_started(self, key: tuple) -> None:
        """An actor process finished starting (ready, failed or gone): the next in line may start."""
        self.actor_starting.discard(key)
        while self.actor_spawns and len(self.actor_starting) < starting_limit() and not self.stopping:
            self._spawn_actor(self.actor_spawns.popleft())

    def _stop_actor(self, actor_id: int, incarnation: int) -> None:
        proc = self.actor_procs.get((actor_id, incarnation))
        if proc is not None and proc.poll() is None:
            proc.kill()
            return
        waiting = next((a for a in self.actor_spawns if (a.actor_id, a.incarnation) == (actor_id, incarnation)), None)
        if waiting is not None:   # never started: its "death" is news to the scheduler all the same
            self.actor_spawns.remove(waiting)
            self._apply(self.sched.actor_process_died(actor_id, incarnation, "was stopped before it started"))

    def _named_actor(self, name) -> dict | None:
        actor = self.sched.named_actor(str(name))
        if actor is None:
            return None
        return {"actor_id": actor.spec.actor_id, "class_name": actor.spec.class_name,
                "methods": actor.spec.options.get("methods", {}), "owner": actor.owner,
                "max_task_retries": actor.spec.options.get("max_task_retries", 0)}

    def _actor_status(self) -> list:
        out = []
        for key, proc in self.actor_procs.items():
            actor = self.sched.actors.get(key[0])
            out.append({"id": key[0], "incarnation": key[1], "pid": proc.pid,
                        "class": actor.spec.class_name if actor else "?", "name": actor.spec.name if actor else "",
                        "state": actor.state.value if actor and actor.incarnation == key[1] else "dead"})
        return out

    # ------------------------------------------------------------ liveness and stop
    def _check_actor_procs(self) -> None:
        for key, proc in list(self.actor_procs.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.actor_procs[key]
            self.actor_pids.pop(key, None)
            self._actor_started(key)
            for ident in [i for i, k in self.actor_peers.items() if k == key]:
                del self.actor_peers[ident]
            self._unlink_actor_files(*key)
            why = "was killed (SIGKILL)" if rc == -9 else f"exited with code {rc}"
            self._apply(self.sched.actor_process_died(key[0], key[1], why))

    def _unlink_actor_files(self, actor_id: int, incarnation: int) -> None:
        try:
            os.unlink(os.path.join(self.rundir, f"a-{actor_id:x}-{incarnation}"))
        except OSError:
            pass

    def _shutdown_actors(self) -> None:
        """Kill every actor process at once and wait for them together (an actor holds no state
        worth a graceful stop when the cluster ends; what its calls started the head sweeps)."""
        import psutil

        self.actor_spawns.clear()
        procs = []
        for proc in self.actor_procs.values():
            if proc.poll() is None:
                try:
                    procs.append(psutil.Process(proc.pid))
                    proc.kill()
                except (psutil.Error, OSError):
                    pass
        _, alive = psutil.wait_procs(procs, timeout=10.0)
        if alive:
            log.warning("%d actor processes did not exit after SIGKILL", len(alive))
        for key, proc in self.actor_procs.items():
            proc.poll()
            self._unlink_actor_files(*key)
        self.actor_procs.clear()
        for name in os.listdir(self.rundir):
            if name.startswith("actor-") and name.endswith(".log"):
                try:
                    os.unlink(os.path.join(self.rundir, name))
                except OSError:
                    pass


def starting_limit() -> int:
    """How many actor processes may be starting at once: a few per core."""
    return max(8, 4 * (os.cpu_count() or 1))
