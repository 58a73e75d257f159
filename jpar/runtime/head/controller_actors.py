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

Warm spares: once the cluster has started its first actor, the head keeps ``config.actor_spares``
actor processes started and idle (``actor`` id 0 in their setup). A spare says ActorHello(0) and waits;
the next actor to start without GPUs takes it (ActorSetup names the actor), so starting an actor
(or a ``jpar.multiprocessing.Process``) costs a message instead of an interpreter start, and a
new spare starts in the background. Spares count against the starting limit while they start::

    head --spawn(spare)--> process --ActorHello(0)--> head      (ready, idle)
    CreateActor -> SpawnActor -> head --ActorSetup(spec)--> spare -> ActorReady    (+ a new spare)

An actor placed on another node (its resources fit only there) is started by one of that node's
engines, which is its parent, reports its exit and takes it along when it dies; from its ActorHello
on it is like any other actor process (:class:`RemoteActorProcess` stands for it here)::

    SpawnActor(node) -> head --StartActorProcess--> engine there --spawn--> process --ActorHello--> head
    engine --ActorProcessExited--> head;  engine lost -> its actor processes count as dead
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
from ..engine.forked import Forker
from .scheduler_actors import ActorState, ActorTransition, CallEvent, CancelCall, NotifyActor, ReplyActor, SpawnActor, StopActor

log = logging.getLogger("jpar.head")

ACTOR_ACTIONS = (ActorTransition, CallEvent, CancelCall, NotifyActor, ReplyActor, SpawnActor, StopActor)
ACTOR_CLIENT_MESSAGES = (P.CreateActor, P.ActorLookup, P.KillActor, P.ReleaseActor, P.ActorCallsDone)


class RemoteActorProcess:
    """An actor process on another host, started by engine ``engine_id`` there: what the head keeps of
    a local actor process (a Popen) for one it cannot see, fed by that engine's reports."""

    def __init__(self, head, engine_id: int, key: tuple):
        self.head, self.engine_id, self.key = head, engine_id, key
        self.pid = 0                  # known from its ActorHello
        self.returncode = None
        self.why = ""                 # set when its engine was lost: why it counts as dead

    def poll(self):
        return self.returncode

    def kill(self) -> None:
        eng = self.head.engines_by_id.get(self.engine_id)
        if eng is not None:
            self.head._send_ctl(eng, P.StopActorProcess(*self.key))
        elif self.returncode is None:
            self.returncode, self.why = -9, "was stopped, its engine being gone"


class ActorHead:
    """Actor processes and actor messages of the head (uses Head's router, scheduler, events)."""

    def _init_actor_head(self) -> None:
        self.actor_peers: dict[bytes, tuple[int, int]] = {}      # identity -> (actor id, incarnation)
        self.actor_procs: dict[tuple[int, int], subprocess.Popen] = {}
        self.actor_pids: dict[tuple[int, int], int] = {}
        self.actor_spawns: deque = deque()                       # SpawnActor waiting for a start slot
        self.actor_starting: set = set()                         # (id, incarnation) started, not ready yet
        self.spares: dict[int, subprocess.Popen] = {}           # pid -> idle spare process (no actor yet)
        self.spare_ready: dict[int, bytes] = {}                  # pid -> identity of a spare that said hello
        self.spare_failures = 0                                  # spares that died idle: stop after a few
        self.spares_wanted = False                               # set by the first actor: clusters without
                                                                 # actors keep no idle process
        self.forker: Forker | None = None                        # the actor-process template (see engine/forked.py)
        self.forker_starting = False                             # started, not ready yet: actors wait for it
        self.forker_failed = False                               # it could not start or serve: interpreters
        self.forker_deadline = 0.0
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
        elif t is P.CancelTask:   # the actor's process has this cancel (see Scheduler.cancel_call)
            self._apply(self.sched.cancel_acked(msg.task_id))
        elif t is P.ActorHello:
            if msg.actor_id == 0:   # a spare is ready
                if msg.pid not in self.spares or self.stopping:
                    self.router.send_to(identity, P.Shutdown("this spare is not wanted"))
                    return
                self.spare_ready[msg.pid] = identity
                self._drain_spawns()   # an actor waiting in line takes it
                return
            key = (msg.actor_id, msg.incarnation)
            actor = self.sched.actors.get(msg.actor_id)
            if actor is None or actor.incarnation != msg.incarnation or actor.state is ActorState.DEAD:
                self.router.send_to(identity, P.Shutdown("this actor is no longer wanted"))
                return
            self._setup_actor(identity, key, msg.pid)
        elif t is P.ActorReady:
            self._actor_started((msg.actor_id, msg.incarnation))
            actor = self.sched.actors.get(msg.actor_id)
            host = socket.gethostname()
            self._apply(self.sched.actor_ready(msg.actor_id, msg.incarnation, msg.status == P.OK, msg.endpoints,
                                               host, msg.blob))
            if actor is not None:
                self._event(P.Event(time.time(), "actor", msg.actor_id, "process", {
                    "pid": self.actor_pids.get((msg.actor_id, msg.incarnation), 0),
                    "incarnation": msg.incarnation, "endpoints": list(msg.endpoints)}))

    # ------------------------------------------------------------ actions
    def _apply_actor(self, a) -> None:
        t = type(a)
        if t is CallEvent:
            self._event(P.Event(a.time or time.time(), "task", a.task_id, a.state, a.info))
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
            self._event(P.Event(time.time(), "actor", a.actor_id, a.new.value, info))
        elif t is SpawnActor:
            if self.stopping:
                pass
            elif not a.gpu_ids and not self.spare_ready and self._spares_starting() > len(self.actor_spawns):
                self.actor_spawns.append(a)   # a spare about to be ready starts it sooner than a new process
            else:
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

    def _setup_actor(self, identity: bytes, key: tuple, pid: int) -> None:
        """Send an actor process (started for it, or a spare) its actor: class, arguments, cancels."""
        actor = self.sched.actors.get(key[0])
        if actor is None or actor.incarnation != key[1] or actor.state is ActorState.DEAD:
            self.router.send_to(identity, P.Shutdown("this actor is no longer wanted"))
            return
        self.actor_peers[identity] = key
        self.actor_pids[key] = pid
        proc = self.actor_procs.get(key)
        if isinstance(proc, RemoteActorProcess):
            proc.pid = pid
        spec = actor.spec
        self.router.send_to(identity, P.ActorSetup(spec, key[1], self.functions.get(spec.fn_id, b"")))
        for tid in [t for t, a in self.sched.cancelled_calls.items() if a == key[0]]:
            self.router.send_to(identity, P.CancelTask(tid, False))   # a resent call must not run again

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
        key = (a.actor_id, a.incarnation)
        if a.node and a.node != self.sched.head_node:
            self._spawn_remote_actor(a)
            return
        self.spares_wanted = True
        self._start_forker()
        if self.forker_starting:       # a fork in a moment beats an interpreter competing with its imports
            self.actor_spawns.append(a)
            return
        if not a.gpu_ids and self.spare_ready:   # a warm spare: the actor starts with one message
            pid, identity = self.spare_ready.popitem()
            self.actor_procs[key] = self.spares.pop(pid)
            self.actor_starting.add(key)
            self._setup_actor(identity, key, pid)
            self._keep_spares()
            return
        if self._starting_count() >= starting_limit():
            self.actor_spawns.append(a)
            return
        proc = self._spawn_engine(actor={"id": a.actor_id, "incarnation": a.incarnation,
                                         "gpu_ids": list(a.gpu_ids), "bind_host": self.config.bind_host})
        self.actor_procs[key] = proc
        self.actor_starting.add(key)

    def _spawn_remote_actor(self, a: SpawnActor) -> None:
        """Ask an engine of the actor's node to start its process (the one with the fewest such)."""
        key = (a.actor_id, a.incarnation)
        engines = [e for e in self.engines_by_id.values() if e.node == a.node]
        if not engines:
            self._apply(self.sched.actor_process_died(
                a.actor_id, a.incarnation, f"could not start: node {a.node!r} has no engine left to start it"))
            return
        load = {e.id: 0 for e in engines}
        for proc in self.actor_procs.values():
            if isinstance(proc, RemoteActorProcess) and proc.engine_id in load:
                load[proc.engine_id] += 1
        eng = min(engines, key=lambda e: (load[e.id], e.id))
        self.actor_procs[key] = RemoteActorProcess(self, eng.id, key)
        self.actor_starting.add(key)
        self._send_ctl(eng, P.StartActorProcess({"id": a.actor_id, "incarnation": a.incarnation,
                                                 "gpu_ids": list(a.gpu_ids)}))

    def _remote_actor_exited(self, eng, msg: P.ActorProcessExited) -> None:
        proc = self.actor_procs.get((msg.actor_id, msg.incarnation))
        if isinstance(proc, RemoteActorProcess) and proc.engine_id == eng.id:
            proc.returncode = msg.returncode
            self._check_actor_procs()

    def _remote_actors_lost(self, eng) -> None:
        """Engine ``eng`` is gone: the actor processes it started went with it (or cannot be seen)."""
        lost = False
        for proc in self.actor_procs.values():
            if isinstance(proc, RemoteActorProcess) and proc.engine_id == eng.id and proc.returncode is None:
                proc.returncode, proc.why = -1, f"was lost with the engine that started it on node {eng.node!r}"
                lost = True
        if lost:
            self._check_actor_procs()

    def _start_forker(self) -> None:
        """Start the actor-process template with the cluster's first actor (``config.actor_fork``):
        actors wait for it to be ready (they would compete with its imports on the CPUs), then
        they and the spares are forks of it."""
        if self.forker is None and self.config.actor_fork and not self.forker_failed and not self.stopping:
            try:
                self.forker = Forker(self.setup.get("env") or None, self.setup.get("cwd") or None,
                                     os.path.join(self.rundir, "actor-template.log"))
            except OSError as exc:
                log.warning("could not start the actor-process template (%s); actor processes start as "
                            "interpreters", exc)
                self.forker_failed = True
                return
            self.forker_starting = True
            self.forker_deadline = time.monotonic() + FORKER_READY_S

    def _forker_fd(self) -> int | None:
        """The template's reply pipe while the head waits for it to be ready (its loop wakes on it)."""
        return self.forker.reply_fd() if self.forker_starting and self.forker is not None else None

    def _tend_forker(self) -> None:
        """The template said it is ready, died, or took too long: the actors waiting for it start
        (forks, or interpreters from now on)."""
        f = self.forker
        f.collect()
        if not f.ready:
            if f.alive() and time.monotonic() < self.forker_deadline:
                return
            log.warning("the actor-process template %s; actor processes start as interpreters",
                        f"exited with {f.proc.returncode}" if not f.alive() else f"was not ready in {FORKER_READY_S:g} s")
            f.close()
            self.forker, self.forker_failed = None, True
        self.forker_starting = False
        self._keep_spares()
        self._drain_spawns()

    def _spares_starting(self) -> int:
        return len(self.spares) - len(self.spare_ready)

    def _drain_spawns(self) -> None:
        """Start actors waiting in line: on a ready spare, or as new processes within the starting
        limit (except as many as the spares now starting will take); none while the template starts."""
        while self.actor_spawns and not self.stopping and not self.forker_starting and (
                self.spare_ready and not self.actor_spawns[0].gpu_ids
                or self._starting_count() < starting_limit() and len(self.actor_spawns) > self._spares_starting()):
            self._spawn_actor(self.actor_spawns.popleft())

    def _starting_count(self) -> int:
        """Actor processes starting now: for actors, and spares that have not said hello yet."""
        return len(self.actor_starting) + len(self.spares) - len(self.spare_ready)

    def _keep_spares(self) -> None:
        """Reap spares that died idle; start new ones up to ``config.actor_spares`` once an actor
        was started (clusters that start none keep none), within the starting limit."""
        for pid, proc in list(self.spares.items()):
            if proc.poll() is not None:
                del self.spares[pid]
                self.spare_ready.pop(pid, None)
                self.spare_failures += 1
                log.warning("an idle spare actor process (pid %d) exited with %s", pid, proc.returncode)
        if self.stopping:
            return
        if self.spares_wanted and self.spare_failures < 3 and not self.forker_starting:
            while len(self.spares) < self.config.actor_spares and self._starting_count() < starting_limit():
                proc = self._spawn_engine(actor={"id": 0, "incarnation": 0, "gpu_ids": [], "spare": True,
                                                 "bind_host": self.config.bind_host})
                self.spares[proc.pid] = proc
        if self.actor_spawns:
            self._drain_spawns()   # spares that died leave their waiting actors to new processes

    def _actor_started(self, key: tuple) -> None:
        """An actor process finished starting (ready, failed or gone): the next in line may start."""
        self.actor_starting.discard(key)
        self._drain_spawns()

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
            out.append({"id": key[0], "incarnation": key[1], "pid": proc.pid, "node": actor.node if actor else "",
                        "class": actor.spec.class_name if actor else "?", "name": actor.spec.name if actor else "",
                        "state": actor.state.value if actor and actor.incarnation == key[1] else "dead"})
        return out

    # ------------------------------------------------------------ liveness and stop
    def _check_actor_procs(self) -> None:
        self._keep_spares()
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
            why = getattr(proc, "why", "") or ("was killed (SIGKILL)" if rc == -9 else f"exited with code {rc}")
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
        for proc in list(self.actor_procs.values()) + list(self.spares.values()):
            if isinstance(proc, RemoteActorProcess):
                proc.kill()    # its engine also stops it when the cluster's Shutdown reaches it
            elif proc.poll() is None:
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
        for proc in self.spares.values():
            proc.poll()
        self.spares.clear()
        self.spare_ready.clear()
        self.forker_starting = False
        if self.forker is not None:
            self.forker.close()
        for name in os.listdir(self.rundir):
            if name.startswith("actor-") and name.endswith(".log"):
                try:
                    os.unlink(os.path.join(self.rundir, name))
                except OSError:
                    pass


FORKER_READY_S = 10.0   # a template not ready by then is given up: actor processes start as interpreters


def starting_limit() -> int:
    """How many actor processes may be starting at once: a few per core."""
    return max(8, 4 * (os.cpu_count() or 1))
