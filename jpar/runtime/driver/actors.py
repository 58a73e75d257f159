"""The caller's side of actors on the native runtime: connections to actor processes, calls in flight.

::

    Cls.remote(*args) --RegisterFunction + CreateActor--> head --spawns--> actor process
    handle.m.remote() --(driver lock)--> conn.ready --flush--> PUSH --Calls--> actor process
                      \\--> call notice (TaskSpec, actor set) --> head (objects, event stream)
    actor process --Results--> this driver's PULL --> results table (like task results)
    head --ActorInfo (alive at endpoints / restarting / dead)--> receiver thread --> conn state

Each process talks to an actor over one PUSH socket, so its calls arrive in the order it
made them. Calls made before the actor is alive wait in ``conn.waiting`` (in order) and are
sent when the head says it is alive. Top-level ObjectRef arguments are resolved here, by the
caller, before the call leaves (a call waits behind any earlier call whose refs are not
ready): the actor process then never asks the head for anything on the call path. Sends
are batched like task submissions: the first queued call wakes the receiver thread, which
sends everything queued by then in one message per actor (blocking calls flush first).

The caller owns the fate of its calls when the actor's process dies: calls that
``max_task_retries`` allows are resent to the restarted process, in order; the others fail
with ActorDiedError here and are reported to the head.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

from ..wire import protocol as P
from ..wire import serialization, transport
from .args import split_refs, top_refs
from .driver import Driver
from ...errors import ActorDiedError, GetTimeoutError
from ...refs import ObjectRef

__all__ = ["ActorClient", "actor_client"]


class _Call:
    __slots__ = ("task_id", "method", "args", "deps", "num_returns", "attempt", "dep_refs", "incarnation", "conn")

    def __init__(self, task_id, method, args, deps, num_returns, dep_refs, conn):
        self.task_id = task_id
        self.method = method
        self.args = args
        self.deps = deps
        self.num_returns = num_returns
        self.attempt = 0
        self.dep_refs = dep_refs          # refs not resolved yet (None once deps holds their values)
        self.incarnation = -1             # which process of the actor it was sent to
        self.conn = conn


class _Conn:
    """This process's connection to one actor."""

    __slots__ = ("actor_id", "state", "incarnation", "chan", "waiting", "ready", "dirty", "retries", "names",
                 "class_name", "dead_blob")

    def __init__(self, actor_id: int, meta: dict):
        self.actor_id = actor_id
        self.state = "unknown"
        self.incarnation = -1
        self.chan = None
        self.waiting: collections.deque = collections.deque()   # not sendable yet (actor not alive / refs)
        self.ready: list = []                                     # sendable, goes out at the next flush
        self.dirty = False
        self.retries = int(meta.get("max_task_retries", 0))
        self.class_name = meta["class_name"]
        self.names: dict = {}
        self.dead_blob = b""


class ActorClient:
    """Per-driver actor state: connections, calls in flight, handle counts. Guarded by the driver's lock."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.conns: dict[int, _Conn] = {}
        self.inflight: dict[int, _Call] = {}     # task id -> call sent and not answered
        self.dirty: list = []
        self.blocked: set = set()                # alive conns whose waiting calls wait for refs
        self.released: collections.deque = collections.deque()
        self._tick_lock = threading.Lock()
        self.handles: dict[int, int] = {}
        self.escaped: set = set()
        self.local_host = socket.gethostname()

    # ---- connections
    def open(self, actor_id: int, meta: dict, subscribe: bool = True) -> _Conn:
        conn = self.conns.get(actor_id)
        if conn is not None:
            return conn
        conn = self.conns.setdefault(actor_id, _Conn(actor_id, meta))
        if subscribe and conn.state == "unknown":
            conn.state = "pending"
            self.driver._send(P.ActorLookup(actor_id))
        elif not subscribe:
            conn.state = "pending"
        return conn

    def forget(self, actor_id: int) -> None:
        self.conns.pop(actor_id, None)

    def handle_made(self, actor_id: int) -> None:
        self.handles[actor_id] = self.handles.get(actor_id, 0) + 1

    def ask(self, make_msg, timeout: float) -> Any:
        """Send a request carrying a fresh req_id and wait for the head's Answer."""
        d = self.driver
        req = next(d._req)
        d._send(make_msg(req))
        deadline = time.monotonic() + timeout
        with d.cond:
            while req not in d._answers:
                d._check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GetTimeoutError(f"The head did not answer within {timeout} s.")
                d.cond.wait(min(left, 0.2))
            return d._answers.pop(req)

    # ---- calls
    def call(self, actor_id: int, meta: dict, method: str, n: int, args: tuple, kwargs: dict) -> Any:
        d = self.driver
        conn = self.conns.get(actor_id) or self.open(actor_id, meta)
        name = conn.names.get(method)
        if name is None:
            name = conn.names[method] = f"{conn.class_name}.{method}"
        dep_refs = None
        deps = ()
        if args and any(type(a) is ObjectRef for a in args) or kwargs and any(
                type(v) is ObjectRef for v in kwargs.values()):
            dep_refs = top_refs(args, kwargs)
            args, kwargs, deps = split_refs(args, kwargs, d.cluster_id)
            d._request_missing(dep_refs)
        payload = serialization.dumps_args(name, args, kwargs)
        tid = d.new_ids(n)
        if d.submit_context is not None:
            d.task_context[tid] = d.submit_context(tid)
        call = _Call(tid, method, payload, deps, n, dep_refs, conn)
        notice = P.TaskSpec(tid, 0, name, b"", deps, n, (), conn.retries, False, d.current_task, conn.actor_id, -1)
        dead = None
        with d.lock:
            if conn.state == "dead":
                dead = conn.dead_blob
            elif conn.state == "alive" and dep_refs is None and not conn.waiting:
                conn.ready.append(call)
                if not conn.dirty:
                    conn.dirty = True
                    self.dirty.append(conn)
            else:
                conn.waiting.append(call)
                if dep_refs is not None and conn.state == "alive":
                    self.blocked.add(conn)
                    self._advance(conn)
            d._enqueue_locked(notice)
        if dead is not None:
            self._fail([call], dead, report=False)
        if n == 1:
            return ObjectRef(tid, d.client_no, d)
        return [ObjectRef(tid + i, d.client_no, d) for i in range(n)]

    def _advance(self, conn: _Conn) -> None:
        """(lock held) Move waiting calls to ready, in order, while the actor is alive and refs are ready."""
        if conn.state != "alive":
            return
        w = conn.waiting
        moved = False
        while w:
            c = w[0]
            if c.dep_refs is not None and not self._resolve(c):
                break
            w.popleft()
            conn.ready.append(c)
            moved = True
        if not w:
            self.blocked.discard(conn)
        else:
            self.blocked.add(conn)
        if moved and not conn.dirty:
            conn.dirty = True
            self.dirty.append(conn)

    def _resolve(self, c: _Call) -> bool:
        d = self.driver
        results, requested = d.results, d._requested
        for r in c.dep_refs:
            if r.id not in results or r.id in requested:
                return False
        c.deps = tuple((oid, *results[oid]) for oid in c.deps)
        c.dep_refs = None
        return True

    def flush_locked(self) -> None:
        """(lock held) Send every connection's ready calls, one Calls message per actor."""
        dirty, self.dirty = self.dirty, []
        d = self.driver
        inflight = self.inflight
        for conn in dirty:
            conn.dirty = False
            calls, conn.ready = conn.ready, []
            if not calls:
                continue
            if conn.chan is None:     # not alive any more: back in line
                conn.waiting.extendleft(reversed(calls))
                continue
            inc = conn.incarnation
            recs = []
            for c in calls:
                c.incarnation = inc
                inflight[c.task_id] = c
                recs.append((c.task_id, c.method, c.args, c.deps, c.num_returns, c.attempt))
            conn.chan.send(P.Calls(d.client_no, d.endpoint, recs))

    def withdraw(self, task_ids) -> dict:
        """(no lock) Take calls among ``task_ids`` that have not left this process out of line, for
        ``jpar.cancel``: they never reach their actor. The head tells an actor's process about a cancel
        before the caller hears only once that process is up; a call cancelled while its actor is
        still starting would otherwise be sent once it is alive, race the cancel there, and could run
        after ``get()`` had raised. Returns {actor id: [records to report as cancelled]}."""
        if not self.conns:
            return {}
        wanted = set(task_ids)
        out: dict[int, list] = {}
        with self.driver.lock:
            for conn in self.conns.values():
                for queue in (conn.waiting, conn.ready):
                    gone = [c for c in queue if c.task_id in wanted]
                    for c in gone:
                        queue.remove(c)
                        out.setdefault(conn.actor_id, []).append(c)
                if not conn.waiting:
                    self.blocked.discard(conn)
        return out

    # ---- events from the receiver thread
    def on_results(self, records) -> None:
        inflight = self.inflight
        if inflight:
            for r in records:
                inflight.pop(r[0], None)
        if self.blocked:
            with self.driver.lock:
                for conn in list(self.blocked):
                    self._advance(conn)
                self.flush_locked()

    def on_info(self, msg: P.ActorInfo) -> None:
        conn = self.conns.get(msg.actor_id)
        if conn is None:
            return
        d = self.driver
        failed, retry_fail = [], []
        with d.lock:
            state = msg.state
            if state == "alive":
                if conn.incarnation != msg.incarnation or conn.chan is None:
                    self._reconnect(conn, msg)
                    stale = self._stale(conn, msg.incarnation)
                    again = []
                    for c in stale:
                        if conn.retries < 0 or c.attempt < conn.retries:
                            c.attempt += 1
                            again.append(c)
                        else:
                            retry_fail.append(c)
                    if again:
                        conn.waiting.extendleft(reversed(again))
                conn.state = "alive"
                self._advance(conn)
                self.flush_locked()
            elif state == "restarting":
                conn.state = "restarting"
                if conn.chan is not None:
                    conn.chan.close()
                    conn.chan = None
                again = []
                for c in self._stale(conn, msg.incarnation):
                    if conn.retries < 0 or c.attempt < conn.retries:
                        c.attempt += 1
                        again.append(c)
                    else:
                        retry_fail.append(c)
                pending = again + conn.ready + list(conn.waiting)
                conn.ready = []
                conn.waiting = collections.deque(sorted(pending, key=lambda c: c.task_id))
                self.blocked.discard(conn)
            elif state == "dead":
                failed = self._mark_dead(conn, msg.detail)
            else:
                conn.state = state
        if retry_fail:
            self._fail(retry_fail, serialization.dumps_error(ActorDiedError(
                f"The actor {conn.class_name} ({conn.actor_id:#x}) died while this call was in flight, and "
                f"max_task_retries={conn.retries} allows no retry. It is restarting; call it again, or create it "
                "with .options(max_task_retries=N) to retry such calls.")), report=True)
        if failed:
            self._fail(failed, conn.dead_blob, report=True)

    def _mark_dead(self, conn: _Conn, blob: bytes) -> list:
        """(lock held) The actor is dead for good: every call not answered fails."""
        conn.state = "dead"
        conn.dead_blob = blob or serialization.dumps_error(ActorDiedError(
            f"The actor {conn.class_name} ({conn.actor_id:#x}) is dead. Create a new actor."))
        if conn.chan is not None:
            conn.chan.close()
            conn.chan = None
        failed = self._stale(conn, 1 << 62) + list(conn.waiting) + conn.ready
        conn.waiting.clear()
        conn.ready = []
        self.blocked.discard(conn)
        return failed

    def _stale(self, conn: _Conn, incarnation: int) -> list:
        """(lock held) Calls in flight to processes of this actor older than ``incarnation``, in order."""
        out = [c for c in self.inflight.values() if c.conn is conn and c.incarnation < incarnation]
        for c in out:
            self.inflight.pop(c.task_id, None)
        out.sort(key=lambda c: c.task_id)
        return out

    def _reconnect(self, conn: _Conn, msg: P.ActorInfo) -> None:
        if conn.chan is not None:
            conn.chan.close()
        eps = list(msg.endpoints)
        local = self.driver.conn.get("local", True) and msg.host == self.local_host
        ep = next((e for e in eps if e.startswith("ipc://")), None) if local else None
        ep = ep or next((e for e in eps if e.startswith("tcp://")), eps[0])
        conn.chan = transport.connect_push(ep, self.driver.signer)
        conn.incarnation = msg.incarnation

    def _fail(self, calls: list, blob: bytes, report: bool) -> None:
        """(no lock) Fail calls here with ``blob``; tell the head so their objects settle."""
        d = self.driver
        by_actor: dict[int, list] = {}
        records = []
        for c in calls:
            objs = tuple((c.task_id + i, P.ERROR, blob) for i in range(c.num_returns))
            records.extend(objs)
            by_actor.setdefault(c.conn.actor_id, []).append(
                P.CallDoneRecord(c.task_id, c.attempt, P.ERROR, objs, 0.0, 0.0))
        d._store(records)
        if report and not d.closed:
            for actor_id, done in by_actor.items():
                try:
                    d._send(P.ActorCallsDone(actor_id, done))
                except Exception:  # closing
                    pass

    # ---- handles and kill
    def tick(self) -> None:
        """Handles collected since last time: release actors no handle holds. The receiver thread
        calls this; so may any thread that needs the releases sent now (one at a time)."""
        rel = self.released
        with self._tick_lock:
            while True:
                try:
                    actor_id = rel.popleft()
                except IndexError:
                    break
                n = self.handles.get(actor_id, 0) - 1
                if n > 0:
                    self.handles[actor_id] = n
                    continue
                self.handles.pop(actor_id, None)
                if actor_id not in self.escaped:
                    self.driver._send(P.ReleaseActor(actor_id))

    def kill(self, actor_id: int, meta: dict, no_restart: bool) -> None:
        d = self.driver
        d._send(P.KillActor(actor_id, no_restart))
        if not no_restart:
            return
        conn = self.conns.get(actor_id)
        if conn is None:
            return
        with d.lock:
            failed = self._mark_dead(conn, serialization.dumps_error(ActorDiedError(
                f"The actor {conn.class_name} ({actor_id:#x}) was killed with jpar.kill(). Create a new actor.")))
        if failed:
            self._fail(failed, conn.dead_blob, report=True)

    def close(self) -> None:
        for conn in self.conns.values():
            if conn.chan is not None:
                conn.chan.close()
                conn.chan = None


def actor_client(d: Driver) -> ActorClient:
    c = d._actor_client
    if c is None:
        with d.lock:
            c = d._actor_client
            if c is None:
                c = d._actor_client = ActorClient(d)
    return c

