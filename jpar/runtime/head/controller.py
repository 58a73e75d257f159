"""The head process: sockets, liveness and the event stream around the pure scheduler.

::

    clients (DEALER) --Submit/Put/Release/Cancel/Query--> ROUTER --+
          (and RemoveEngines/CancelClientTasks)                    |
    engines (DEALER) --EngineHello/TaskDone/Blocked-----> ROUTER --+--> Scheduler (pure)
    engine ctl (DEALER) --Metrics/Heartbeat-------------> ROUTER --+        |
    engine live (DEALER) --Heartbeat, then pings only---> ROUTER --+        |
                                                                         actions
    engines <--Define/DriverInfo/Dispatch/CancelTask-- ROUTER <-------------+
    clients <--Welcome/Answer/Objects/TaskFailed------ PUSH per client <----+
    dashboards, sidebar <--Events (task transitions, metrics)-- PUB <-------+

One thread, one loop: drain every queued message, feed the scheduler, then flush one
batched Dispatch per engine and one Events message per loop turn. Local engines are
children of the head; it respawns one that dies and requeues (or fails) its tasks. An
engine removed on request is drained first (the scheduler moves its unstarted tasks), then
sent Shutdown and not replaced. The head exits when the client that started it disappears,
so a crashed notebook leaves no process behind.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

from ..wire import protocol as P
from ..store import object_store
from ..wire import keys, serialization, transport
from ...config import Config, runtime_dir
from ..driver.launcher import prune_run_dirs, remove_sockets
from .controller_actors import ACTOR_ACTIONS, ACTOR_CLIENT_MESSAGES, ActorHead
from .controller_engines import EngineMembership
from .controller_liveness import Liveness
from ...errors import ActorDiedError, EngineCrashedError, ObjectLostError, ResourceError, TaskCancelledError
from .controller_events import EventStream
from .scheduler import CancelOnEngine, DispatchTask, DrainEngine, Failure, FreeObjects, ReplyObjects, RetireEngine, RevokeOnEngine, Scheduler, SendFailure, SpawnEngine, TaskState, Transition

log = logging.getLogger("jpar.head")

RETIRE_GRACE_S = 5.0   # a removed local engine that has not exited by then is killed


class Client:
    __slots__ = ("no", "identity", "push", "pid", "kind", "owns", "last", "endpoint", "host", "fd")

    def __init__(self, no, identity, push, hello: P.Hello):
        self.no, self.identity, self.push = no, identity, push
        self.pid, self.kind, self.owns, self.endpoint, self.host = (
            hello.pid, hello.kind, hello.owns_cluster, hello.endpoint, hello.host)
        self.last = time.monotonic()
        self.fd = -1                      # its connection to the router (liveness: see _connection_lost)


class EngineInfo:
    __slots__ = ("id", "identity", "pid", "host", "node", "fns", "owners", "last", "proc", "metrics",
                 "outbox", "started", "fds", "ctl_ready", "ctl_outbox", "live_since")

    def __init__(self, eid, identity, hello: P.EngineHello, proc):
        self.id, self.identity, self.pid, self.host, self.node = eid, identity, hello.pid, hello.host, hello.node
        self.fns: set = set()
        self.owners: set = set()
        self.last = time.monotonic()
        self.proc = proc
        self.metrics = None
        self.outbox: list = []
        self.started = time.time()
        self.fds: set = set()             # its connections (work, control, liveness) to the router
        self.ctl_ready = False            # its control connection has spoken: messages to it are routable
        self.ctl_outbox: list = []        # control messages waiting for that connection (never dropped)
        self.live_since = 0.0             # when its liveness connection was tracked (see controller_liveness)


class _RefCounts:
    """Refs held on an object, looked up for the few a store lists (not a dict of every object the
    scheduler holds, which a dashboard's once-a-second store figures would build anew)."""

    __slots__ = ("objects",)

    def __init__(self, objects: dict):
        self.objects = objects

    def get(self, oid: int, default: int = 0) -> int:
        o = self.objects.get(oid)
        return default if o is None else int(o.held_by_owner) + o.task_refs


class Head(ActorHead, EngineMembership, Liveness, EventStream):
    def __init__(self, setup: dict):
        self.setup = setup
        self.config = Config.from_env(**setup.get("config", {}))
        self.cluster_id = setup["cluster_id"]
        self.key = bytes.fromhex(setup["key"])
        self.signer = P.Signer(self.key)
        self.rundir = setup["rundir"]
        self.sched = Scheduler(prefetch=self.config.prefetch, prefetch_s=self.config.prefetch_s, chain=self.config.chain)
        self.sched.transitions = False           # until a dashboard or sidebar subscribes (see _update_listeners)
        self.functions: dict[int, bytes] = {}
        self.clients: dict[bytes, Client] = {}
        self.clients_by_no: dict[int, Client] = {}
        self.engines: dict[bytes, EngineInfo] = {}
        self.engines_by_id: dict[int, EngineInfo] = {}
        self.ctl_ids: dict[bytes, EngineInfo] = {}
        self.next_client = 1
        self.next_engine = 0
        self._init_events()
        self.failures: dict[int, list] = {}
        self.wait_engines: list = []            # (client_no, req_id, n)
        self.wait_gone: list = []               # (client_no, req_id, engine ids): answered once all are gone
        self.adding: list = []                  # [client_no, req_id, pids, joined ids]: AddEngines not yet answered
        self.retired: dict[int, float] = {}     # pid of a removed local engine -> when to kill it (monotonic)
        self.children: dict[int, subprocess.Popen] = {}   # pid -> engine process
        self.want_local = int(setup.get("num_engines", 0))
        self.owner_pid = int(setup.get("owner_pid", 0))
        self.stopping = False
        self.extra_pids: set = set()            # temporary engines started for blocked tasks (SpawnEngine)
        self.started = time.time()
        self.tasks_finished = 0
        self.events_published = 0    # events sent on the stream (task ones only while someone listens)
        self.done_info: dict | None = None   # while a TaskDone is applied: its tasks' finished-event info
        self._init_actor_head()
        self.store_settings = object_store.store_settings(self.config)
        self.stores = object_store.HeadStores(self.key, self.store_settings)   # segment names, not bytes

    # ------------------------------------------------------------ start
    def start(self) -> None:
        host = self.config.bind_host
        security = keys.secure_head(self.setup.get("security"), self.config)   # off loopback: CURVE, or a warning
        self.router, bound = transport.bind_router(
            [f"ipc://{self.rundir}/head", f"tcp://{host}:{self.config.head_port or 0}"], self.signer)
        self.monitor = transport.Monitor(self.router)   # connections that dropped: peers gone or stopped
        self.fd_owner: dict[int, object] = {}           # router connection fd -> EngineInfo or Client
        self.incidents = 0                               # failures seen: the run dir's logs are kept
        prune_run_dirs(runtime_dir(self.config), keep=self.rundir)
        self.head_ipc, self.head_bound = bound
        self.pub, self.pub_bound = transport.bind_pub(f"tcp://{host}:0", self.signer)
        # bound on a wildcard (0.0.0.0, ::): advertise an address other hosts can connect to. The head's
        # addresses are given plain (users type them); its public key travels beside them.
        self.head_tcp = transport.plain_endpoint(transport.advertised_endpoint(self.head_bound))
        self.pub_tcp = transport.plain_endpoint(transport.advertised_endpoint(self.pub_bound))
        self.curve_key = transport.endpoint_key(self.head_bound)   # "" on loopback or --insecure
        self.security = dict(security, server_public=self.curve_key)
        for _ in range(self.want_local):
            self._spawn_engine()
        if self.want_local:   # engines here are ours to start: extra ones too, while tasks are blocked in get()
            self.sched.spawn_nodes.add(self.sched.head_node)
        self.conn = {
            "cluster_id": self.cluster_id, "key": self.key.hex(), "head": self.head_tcp, "head_ipc": self.head_ipc,
            "events": self.pub_tcp, "bound": transport.plain_endpoint(self.head_bound), "pid": os.getpid(),
            "rundir": self.rundir, "started": self.started, "host": socket.gethostname(), "protocol": P.PROTOCOL_VERSION,
        }
        if self.curve_key:   # the PUBLIC key only: a client proves itself with its own keypair
            self.conn["curve_serverkey"] = self.curve_key
        self.conn_file = os.path.join(runtime_dir(self.config), f"cluster-{self.cluster_id}.json")
        fd = os.open(self.conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.conn, f)

    def _spawn_engine(self, actor: dict | None = None):
        """Start a local engine; with ``actor`` (id, incarnation...), an engine hosting that one actor."""
        setup = {
            "key": self.key.hex(), "head": f"ipc://{self.rundir}/head", "node": self.setup.get("node", ""),
            "resources": self.setup.get("resources", {}), "parent_pid": os.getpid(), "rundir": self.rundir,
            "log_level": self.config.log_level, "metrics_interval_s": self.config.metrics_interval_s,
            "start_timeout_s": self.config.start_timeout_s, "spin_s": self.config.spin_s,
            "heartbeat": transport.liveness_heartbeat(self.config.heartbeat_s, self.config.dead_after_s),
            "store": self.store_settings, "security": self.security,
        }
        if actor is not None:
            setup["actor"] = actor
        log_path = os.path.join(self.rundir, f"engine-{self.next_engine + len(self.children)}.log" if actor is None
                                else f"actor-{actor['id']:x}-{actor['incarnation']}.log")
        if actor is not None and self.forker is not None:
            proc = self.forker.spawn(setup, log_path)   # a fork of the warm template: no interpreter start
            if proc is not None:
                return proc
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jpar.runtime.engine.engine"], stdin=subprocess.PIPE, stdout=logf, stderr=logf,
                env=self.setup.get("env") or None, cwd=self.setup.get("cwd") or None,
            )
        proc.stdin.write((json.dumps(setup) + "\n").encode())
        proc.stdin.close()
        if actor is not None:
            return proc
        self.children[proc.pid] = proc
        return proc

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *a: self._request_stop("SIGTERM"))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(json.dumps(self.conn), flush=True)
        sys.stdout.close()
        hb = self.config.heartbeat_s
        next_check = time.monotonic() + 0.1
        next_hb = time.monotonic() + hb
        router = self.router
        spin = self.config.spin_s
        busy_until = 0.0
        try:
            while not self.stopping:
                # Bounded work per turn: at most RECV_BUDGET messages read, valid or not, so a flood of
                # junk still leaves every turn to the liveness checks, heartbeats and dispatch below.
                handled, read = router.drain_from(self._handle, transport.RECV_BUDGET)
                if handled:
                    busy_until = time.perf_counter() + spin
                elif not read and time.perf_counter() >= busy_until:
                    fd = self._forker_fd()
                    if fd is None:
                        router.sock.poll(50)   # idle: wait for input or the next check
                    else:                      # ... or for the actor template to say it is ready
                        transport.wait_input(router, fd, 50)
                if self.forker_starting:
                    self._tend_forker()
                self._flush()
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 0.1
                    self._check_liveness(now)
                    self._update_listeners()   # dashboards and sidebars come and go
                    self._summarize(now)
                    self.stores.tick(now)   # recycle freed segments once no process maps them
                    self.sched.now = now
                    self._apply(self.sched.tick())
                    router.tick_drop_log()
                    self.pub.tick_drop_log()
                if now >= next_hb:
                    next_hb = now + hb
                    for e in self.engines.values():
                        if e.ctl_ready:
                            router.send_to(e.identity + b"/ctl", P.Heartbeat())
                    for c in self.clients.values():
                        c.push.send(P.Heartbeat(), nowait=True)
        finally:
            self._shutdown()

    def _request_stop(self, why: str) -> None:
        log.info("stopping: %s", why)
        self.stopping = True

    # ------------------------------------------------------------ handling
    def _handle(self, identity: bytes, msg: P.Message) -> None:
        self.sched.now = time.monotonic()
        t = type(msg)
        client = self.clients.get(identity)
        if client is not None:
            client.last = time.monotonic()
            if t is P.Submit:
                self._apply(self.sched.submit(client.no, msg.tasks))
            elif t is P.RegisterFunction:
                self.functions[msg.fn_id] = msg.blob
            elif t is P.PutObjects:
                for rec in msg.objects:
                    self._apply(self.sched.put(client.no, (rec.object_id,), rec.status, (rec.blob,)))
                noted = self.stores.note(msg.objects, self.sched.objects)
                if noted:
                    self.stores.made_by(noted, f"a put() of client {client.no} ({client.host})")
            elif t is P.Release:
                self._apply(self.sched.release(client.no, msg.ids))
            elif t is P.GetObjects:
                self._apply(self.sched.get_objects(client.no, msg.req_id, msg.ids))
            elif t is P.Cancel:
                self._apply(self.sched.cancel(msg.task_id, msg.force, msg.recursive))
            elif t is P.Free:
                self._free(client, msg)
            elif t is P.Query:
                self._query(client, msg)
            elif t is P.RemoveEngines:
                self._remove_engines(client, msg)
            elif t is P.AddEngines:
                self._add_engines(client, msg)
            elif t is P.CancelClientTasks:
                self._cancel_client_tasks(client, msg)
            elif t is P.Goodbye:
                self._client_gone(client, "said goodbye")
                if msg.stop_cluster:
                    self._request_stop(f"client {client.no} asked to stop the cluster")
            elif t in ACTOR_CLIENT_MESSAGES:
                self._actor_client_message(client, msg)
            return
        eng = self.engines.get(identity)
        if eng is not None:
            eng.last = time.monotonic()
            if t is P.TaskDone:
                self.tasks_finished += len(msg.results)
                for r in msg.results:   # first: a value the scheduler frees on arrival (jpar.free) is known
                    if r.objects:
                        noted = self.stores.note(r.objects, self.sched.objects)
                        if noted:
                            self.stores.made_by(noted, self._maker(r.task_id))
                            if eng.node != self.sched.head_node:   # lives with that host: keep its lineage
                                self.sched.keep_lineage(r.task_id, noted)
                self.done_info = self._done_info(msg.results)
                self._apply(self.sched.tasks_done(eng.id, msg.results))
                self.done_info = None
            elif t is P.GiveBack:
                self._apply(self.sched.given_back(eng.id, msg.task_ids))
            elif t is P.Blocked:
                self._apply(self.sched.blocked(eng.id, msg.task_id, msg.blocked))
            return
        eng = self.ctl_ids.get(identity)
        if eng is not None:
            eng.last = time.monotonic()
            if not eng.ctl_ready:   # its control connection is up: what waited for it goes now
                self._track_fd(eng)
                eng.ctl_ready = True
                self._flush_ctl(eng)
            if t is P.Revoked:
                self._apply(self.sched.revoked(eng.id, msg.task_ids))
            elif t is P.ActorProcessExited:
                self._remote_actor_exited(eng, msg)
            elif t is P.Metrics:
                eng.metrics = msg
                if self.pub.listened:
                    self._event(P.Event(time.time(), "metrics", eng.id, "sample", {
                        "cpu": msg.cpu_percent, "rss": msg.rss, "shared": msg.shared, "task": msg.task_id,
                        "node": eng.node, "pid": eng.pid}))
            return
        if identity in self.actor_peers or t is P.ActorHello:
            self._actor_peer_message(identity, msg)
            return
        if self._live_message(identity):   # an engine's liveness connection (see controller_liveness)
            return
        if t is P.Hello:
            self._hello(identity, msg)
        elif t is P.EngineHello:
            self._engine_hello(identity, msg)
        else:   # counted and summarized with the invalid ones: a stream of these must not flood the log
            self.router._drop(f"{t.__name__} from a peer that is not registered", identity)

    def _hello(self, identity: bytes, msg: P.Hello) -> None:
        no = self.next_client
        self.next_client += 1
        push = transport.connect_push(msg.endpoint, self.signer)
        client = Client(no, identity, push, msg)
        self.clients[identity] = client
        self.clients_by_no[no] = client
        self._track_fd(client)
        self._apply(self.sched.client_added(no))
        # the addresses that route to this client (a head on several networks)
        plain = transport.plain_endpoint
        push.send(P.Welcome(no, self.cluster_id, {"head": plain(transport.advertised_endpoint(self.head_bound, msg.endpoint)),
                                                   "events": plain(transport.advertised_endpoint(self.pub_bound, msg.endpoint)),
                                                   "engines": len(self.engines)}))
        self._event(P.Event(time.time(), "cluster", no, "client-joined",
                                   {"kind": msg.kind, "pid": msg.pid, "host": msg.host}))

    def _engine_hello(self, identity: bytes, msg: P.EngineHello) -> None:
        eid = self.next_engine
        self.next_engine += 1
        eng = EngineInfo(eid, identity, msg, self.children.get(msg.pid))
        self.engines[identity] = eng
        self.engines_by_id[eid] = eng
        self.ctl_ids[identity + b"/ctl"] = eng
        self._track_fd(eng)
        resources = dict(msg.resources) or _default_resources()
        self.router.send_to(identity, P.EngineWelcome(eid, self.config.heartbeat_s, self.config.dead_after_s))
        self._event(P.Event(time.time(), "engine", eid, "alive", {"pid": msg.pid, "node": msg.node}))
        self._apply(self.sched.engine_added(eid, msg.node or msg.host, resources, extra=msg.pid in self.extra_pids))
        self._answer_engine_waits()
        if self.adding:
            self._answer_adds(msg.pid, eid)

    def _cancel_client_tasks(self, client: Client, msg: P.CancelClientTasks) -> None:
        try:
            before = self.sched.counts[TaskState.CANCELLED]
            actions = self.sched.cancel_client(int(msg.client_no), bool(msg.force))
        except (ValueError, TypeError, LookupError) as exc:
            self._answer(client.no, msg.req_id, exc)
            return
        n = self.sched.counts[TaskState.CANCELLED] - before
        log.info("client %d cancelled %d tasks of client %d", client.no, n, msg.client_no)
        self._apply(actions)
        self._answer(client.no, msg.req_id, n)

    def _free(self, client: Client, msg: P.Free) -> None:
        """jpar.free: the values are dropped and their segments freed now; answered once done."""
        self._apply(self.sched.free(msg.objects))
        self._answer(client.no, msg.req_id, len(msg.objects))

    def _query(self, client: Client, msg: P.Query) -> None:
        what = msg.what
        if what == "wait_engines":
            self.wait_engines.append((client.no, msg.req_id, int(msg.arg)))
            self._answer_engine_waits()
            return
        if what == "engines_gone":   # answered once none of these engine ids is in the cluster
            self.wait_gone.append((client.no, msg.req_id, [int(i) for i in msg.arg or ()]))
            self._answer_gone_waits()
            return
        if what == "resources":
            value = self.sched.resources()
        elif what == "available":
            value = self.sched.available()
        elif what == "status":
            value = self.status()
        elif what == "ping_events":   # a subscriber proves its subscription is live (PUB/SUB joins late)
            # A subscriber proves its subscription: events from here on must reach it, even if XPUB's
            # notice of it is still on its way (it may come in while this ping is being sent).
            self._update_listeners(someone=True)
            if self.summary is not None:   # where a summary reader starts counting from (its baseline)
                self.sum_events.append(self._summary_event())
            self._event(P.Event(time.time(), "cluster", 0, "ping", {"token": msg.arg}))
            value = True
        elif what == "summary_expand":   # a dashboard expanded a group: its tasks told one by one
            value = self._expand_group(msg.arg)
        elif what == "actor":
            value = self._named_actor(msg.arg)
        elif what == "object_store":   # node -> object_store.StoreStatistics (nodes on the head's host)
            value = self.stores.statistics(_RefCounts(self.sched.objects), {e.node for e in self.engines_by_id.values()})
        else:
            value = None
        self._answer(client.no, msg.req_id, value)

    def _answer(self, client_no: int, req_id: int, value) -> None:
        c = self.clients_by_no.get(client_no)
        if c is not None:
            c.push.send(P.Answer(req_id, value), nowait=True)

    def status(self) -> dict:
        # client -> its unfinished tasks (the scheduler forgets finished ones): a task's id is its
        # submitter's number << 40 + a counter, so this is one C loop over the ids, not a Python
        # attribute read per task (dashboards ask every second, with 100,000s queued)
        owned = collections.Counter(map((40).__rrshift__, self.sched.tasks))
        engines = []
        for e in self.engines_by_id.values():
            m = e.metrics
            q = self.sched.engines.get(e.id)
            engines.append({"id": e.id, "pid": e.pid, "host": e.host, "node": e.node,
                            "cpu": m.cpu_percent if m else 0.0, "rss": m.rss if m else 0,
                            "shared": m.shared if m else 0, "task": m.task_id if m else 0,
                            "queued": len(q.queue) if q else 0, "draining": bool(q and q.draining)})
        return {"cluster_id": self.cluster_id, "head": self.head_tcp, "pid": os.getpid(),
                "uptime_s": time.time() - self.started, "engines": engines,
                "clients": [{"no": c.no, "pid": c.pid, "kind": c.kind, "host": c.host, "tasks": owned.get(c.no, 0)}
                            for c in self.clients.values()],
                "resources": self.sched.resources(), "available": self.sched.available(),
                "node_resources": {n.name: dict(n.total) for n in self.sched.nodes.values()},
                "scheduler": dataclasses.asdict(self.sched.statistics()), "functions": len(self.functions),
                "events": {"published": self.events_published, "listened": self.pub.listened},
                "wire": {"dropped": self.router.dropped + self.pub.dropped, "replays_refused": self.router.guard.refused},
                "actors": self._actor_status()}

    # ------------------------------------------------------------ actions
    def _apply(self, actions: list) -> None:
        now = None
        for a in actions:
            t = type(a)
            if t is Transition:
                if not self.pub.listened:   # nobody watches: no per-task events to build and send
                    continue
                if now is None:
                    now = time.time()
                self._task_event(a, now)
            elif t is DispatchTask:
                self._dispatch(a)
            elif t is SendFailure:
                self._failure(a)
            elif t is ReplyObjects:
                self._reply_objects(a)
            elif t is RevokeOnEngine:
                e = self.engines_by_id.get(a.engine_id)
                if e is not None:
                    self._send_ctl(e, P.Revoke(list(a.task_ids)))
            elif t is CancelOnEngine:
                e = self.engines_by_id.get(a.engine_id)
                if e is not None:
                    self._send_ctl(e, P.CancelTask(a.task_id, a.force))
            elif t is FreeObjects:
                self.stores.free(a.object_ids)   # shared-memory segments of those objects, if any
            elif t is DrainEngine:
                self._event(P.Event(time.time(), "engine", a.engine_id, "draining", None))
            elif t is RetireEngine:
                e = self.engines_by_id.get(a.engine_id)
                if e is not None:
                    self._retire(e)
            elif t is SpawnEngine:
                if self.stopping:
                    self._apply(self.sched.spawn_failed(a.node))
                else:
                    self.extra_pids.add(self._spawn_engine().pid)
            elif t in ACTOR_ACTIONS:
                self._apply_actor(a)

    def _dispatch(self, a: DispatchTask) -> None:
        e = self.engines_by_id[a.engine_id]
        task = self.sched.tasks[a.task_id]
        spec = task.spec
        if spec.fn_id not in e.fns:
            blob = self.functions.get(spec.fn_id)
            if blob is None:
                log.error("task %x uses unknown function %x", spec.task_id, spec.fn_id)
            else:
                e.outbox.append(P.Define(spec.fn_id, blob))
                e.fns.add(spec.fn_id)
        if task.owner not in e.owners:
            c = self.clients_by_no.get(task.owner)
            if c is not None:
                e.outbox.append(P.DriverInfo(c.no, c.endpoint))
                e.owners.add(task.owner)
        objs = self.sched.objects
        # a dep not ready yet: the task is chained behind the one making it on this engine (LOCAL)
        deps = tuple((oid, o.status, o.blob) if (o := objs[oid]).ready else (oid, P.LOCAL, b"") for oid in spec.deps)
        e.outbox.append(P.DispatchRecord(spec.task_id, spec.fn_id, spec.name, spec.args, deps, spec.num_returns,
                                         task.owner, task.attempt, spec.max_retries, spec.retry_exceptions,
                                         a.gpu_ids, spec.actor))

    def _failure(self, a: SendFailure) -> None:
        detail = a.detail
        if isinstance(detail, bytes):
            blob = detail
        else:
            blob = serialization.dumps_error(_failure_error(a.kind, detail))
        self.failures.setdefault(a.owner, []).extend(P.ObjectRecord(oid, P.ERROR, blob) for oid in a.object_ids)

    def _reply_objects(self, a: ReplyObjects) -> None:
        c = self.clients_by_no.get(a.client)
        if c is None:
            return
        recs = []
        for oid in a.object_ids:
            obj = self.sched.objects.get(oid)
            if obj is None:
                recs.append(P.ObjectRecord(oid, P.ERROR, serialization.dumps_error(
                    ObjectLostError(f"Object {oid:#x} was released before it could be read."))))
            elif obj.status and not obj.blob:
                kind, detail = obj.failure or (Failure.OBJECT_LOST, "")
                recs.append(P.ObjectRecord(oid, P.ERROR, serialization.dumps_error(_failure_error(kind, detail))))
            else:
                recs.append(P.ObjectRecord(oid, obj.status, obj.blob))
        c.push.send(P.Objects(a.req_id, recs), nowait=True)

    def _flush(self) -> None:
        for e in self.engines_by_id.values():
            if e.outbox:
                out, e.outbox = e.outbox, []
                records = []
                for item in out:
                    if type(item) is P.DispatchRecord:
                        records.append(item)
                    else:
                        if records:
                            self.router.send_to(e.identity, P.Dispatch(records))
                            records = []
                        self.router.send_to(e.identity, item)
                if records:
                    self.router.send_to(e.identity, P.Dispatch(records))
        if self.failures:
            failures, self.failures = self.failures, {}
            for owner, recs in failures.items():
                c = self.clients_by_no.get(owner)
                if c is not None:
                    c.push.send(P.TaskFailed(recs), nowait=True)
        self._flush_events()

    # ------------------------------------------------------------ control messages
    def _send_ctl(self, eng: EngineInfo, msg: P.Message) -> None:
        """A control message (CancelTask, Revoke) for an engine's control thread: delivered, or kept
        until its control connection is up (the router refuses a send to a peer not yet connected)."""
        if eng.ctl_outbox or not eng.ctl_ready or not self.router.send_to(eng.identity + b"/ctl", msg):
            eng.ctl_outbox.append(msg)

    def _flush_ctl(self, eng: EngineInfo) -> None:
        while eng.ctl_outbox and self.router.send_to(eng.identity + b"/ctl", eng.ctl_outbox[0]):
            eng.ctl_outbox.pop(0)

    def _engine_gone(self, eng: EngineInfo, why: str, state: str = "dead") -> None:
        self._forget_fds(eng)
        eng.ctl_outbox.clear()
        self.engines.pop(eng.identity, None)
        self.engines_by_id.pop(eng.id, None)
        self.ctl_ids.pop(eng.identity + b"/ctl", None)
        self._event(P.Event(time.time(), "engine", eng.id, state, {"why": why}))
        self._apply(self.sched.engine_removed(eng.id, why))
        self._remote_actors_lost(eng)
        if eng.node not in self.sched.nodes and eng.node != self.sched.head_node:
            self._objects_lost_with(eng.node, why)
        if self.wait_gone:
            self._answer_gone_waits()

    def _retire(self, eng: EngineInfo) -> None:
        """A drained engine holds no task: stop it (its node's object store stays) and forget it.
        A local one is reaped by _check_liveness, not replaced, and killed if it lingers."""
        bye = P.Shutdown("removed on request", cluster_over=False)
        self.router.send_to(eng.identity, bye)
        self.router.send_to(eng.identity + b"/ctl", bye)
        if eng.proc is not None:
            self.retired[eng.proc.pid] = time.monotonic() + RETIRE_GRACE_S
        self._engine_gone(eng, "removed on request", "removed")

    def _client_gone(self, client: Client, why: str) -> None:
        self._forget_fds(client)
        self.clients.pop(client.identity, None)
        self.clients_by_no.pop(client.no, None)
        client.push.close()
        self._event(P.Event(time.time(), "cluster", client.no, "client-left", {"why": why}))
        self._apply(self.sched.client_removed(client.no, graceful=why == "said goodbye"))
        if client.owns and not self.stopping:
            self._request_stop(f"owning client {client.no} left ({why})")

    # ------------------------------------------------------------ stop
    def _stop_children(self, grace_s: float) -> None:
        """Wait for the engines (told to shut down) together for ``grace_s``, kill the rest, then kill
        whatever their tasks left running (this process is their subreaper, so they are ours)."""
        import psutil

        from ..engine.processes import kill_survivors, stop_descendants

        procs = []
        for proc in self.children.values():
            try:
                procs.append(psutil.Process(proc.pid))
            except psutil.Error:
                pass
        kill_survivors(procs, grace_s, 5.0)
        for proc in self.children.values():
            proc.poll()
        stop_descendants(grace_s=0)

    def _shutdown(self) -> None:
        self._shutdown_actors()
        for e in self.engines_by_id.values():
            self.router.send_to(e.identity, P.Shutdown("cluster stopping"))
            self.router.send_to(e.identity + b"/ctl", P.Shutdown("cluster stopping"))
        for c in self.clients.values():
            c.push.send(P.Shutdown("cluster stopping"), nowait=True)
        self._stop_children(grace_s=3.0)
        self.stores.close()   # every segment and spill file of this cluster on this host
        try:
            os.unlink(self.conn_file)
        except OSError:
            pass
        self.router.report_drops()
        self.pub.report_drops()
        self.monitor.close()
        for ch in [self.router, self.pub] + [c.push for c in self.clients.values()]:
            ch.close()
        failed = self.incidents or _errors_logged.count or self.router.dropped or self.pub.dropped
        if failed:   # keep the logs of a run that went wrong (bounded: see prune_run_dirs); sockets go
            log.warning("keeping the logs in %s (%d incident(s), %d error(s) logged, %d invalid message(s))",
                        self.rundir, self.incidents, _errors_logged.count, self.router.dropped + self.pub.dropped)
            remove_sockets(self.rundir)
        else:
            shutil.rmtree(self.rundir, ignore_errors=True)


def _failure_error(kind: Failure, detail) -> Exception:
    if kind is Failure.CANCELLED:
        return TaskCancelledError(*detail) if isinstance(detail, tuple) else TaskCancelledError(str(detail))
    if kind is Failure.ENGINE_CRASHED:
        text = str(detail)
        if "SIGKILL" in text:
            advice = ("Unless something killed it on purpose, the machine probably ran out of memory (the OS's "
                      "out-of-memory killer sends SIGKILL): make the task use less memory")
        elif "lost its connection" in text:
            advice = ("Its host stopped answering the head (a network cut, or the host is down or suspended): "
                      "check that host and its network")
        else:
            advice = ("A task that crashes its interpreter (a segfault in C code, os._exit(), os.abort()) ends its "
                      "engine: fix what ends the process")
        return EngineCrashedError(f"{text}. {advice}, or raise max_retries in .options().")
    if kind is Failure.INFEASIBLE:
        return ResourceError(str(detail))
    if kind is Failure.ACTOR_DIED:
        return ActorDiedError(str(detail))
    return ObjectLostError(str(detail))


def _default_resources() -> dict:
    return {"CPU": float(os.cpu_count() or 1)}


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:10]


class _ErrorCount(logging.Handler):
    """Counts records at ERROR and above: a run that logged one keeps its run directory's logs."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record) -> None:
        self.count += 1


_errors_logged = _ErrorCount()


def main() -> None:
    setup = json.loads(sys.stdin.readline())
    sys.stdin.close()
    logging.basicConfig(level=setup.get("config", {}).get("log_level", "WARNING"),
                        format=f"%(asctime)s head[{os.getpid()}] %(levelname)s %(message)s")
    logging.getLogger().addHandler(_errors_logged)
    from ..engine.processes import become_subreaper

    become_subreaper()   # what engines' tasks leave behind outlives them as our descendants: swept at shutdown
    head = Head(setup)
    head.start()
    head.run()


if __name__ == "__main__":
    main()

