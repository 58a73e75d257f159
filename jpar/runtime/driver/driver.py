"""The client side of a cluster: submit tasks, put values, receive results, wait for them.

::

    user threads --(lock)--> DEALER ---------------------> head ROUTER
                                                              |
    receiver thread <-- PULL <-- results, output (engines) ---+-- answers, failures (head)
         |
         +--> results table, futures, output handler; wakes get()/wait() via one Condition

One ``Driver`` per process talks to one cluster: the notebook kernel's driver, or the
engine-side client that tasks use to submit nested tasks. All sends go through one
DEALER guarded by a lock; everything inbound lands on one PULL socket read by one
receiver thread, which also sends heartbeats and batched releases of collected refs.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable

from ..wire import protocol as P
from ..wire import keys, serialization, transport
from ...config import Config, key_dir
from ...errors import ClusterError, GetTimeoutError, HeadDiedError, ObjectLostError, TaskCancelledError
from ...refs import ObjectRef, check_cluster

__all__ = ["Driver", "default_output_handler"]

log = logging.getLogger("jpar.driver")
LONE_S = 0.0002   # a submission this long after the last Submit is sent at once, not batched

_mid_line: set = set()   # (task_id, stream) whose last chunk did not end a line


def default_output_handler(chunk: P.OutputRecord, context: Any) -> None:
    """Print a task's output on this process's stdout/stderr, each line prefixed like Ray does."""
    stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
    prefix = f"({chunk.name} pid={chunk.pid}, engine={chunk.engine_id}) "
    key = (chunk.task_id, chunk.stream)
    parts = []
    for line in chunk.text.splitlines(keepends=True):
        parts.append(line if key in _mid_line else prefix + line)
        if line.endswith("\n"):
            _mid_line.discard(key)
        else:
            _mid_line.add(key)
    try:
        stream.write("".join(parts))
        stream.flush()
    except (ValueError, OSError):
        pass


class Driver:
    """A connection to one cluster's head, with the results that came back."""

    def __init__(self, conn: dict, config: Config, *, owns_cluster: bool = False, kind: str = "driver",
                 process=None):
        self.config = config
        self.conn = conn
        self.kind = kind
        self.process = process                    # the head's Popen when this driver started it
        self.signer = P.Signer(bytes.fromhex(conn["key"]))
        self.closed = False
        self._sockets_closed = False
        self.lock = threading.Lock()               # guards the DEALER
        self.cond = threading.Condition()
        self.results: dict[int, tuple[int, bytes]] = {}
        self.released: collections.deque = collections.deque()
        self.errors_seen = 0
        self._futures: dict[int, list] = {}
        self._fn_sent: set = set()
        self._req = itertools.count(1)
        self._answers: dict[int, Any] = {}
        self._requested: set = set()              # object ids asked of the head (not ours)
        self.output_handler: Callable[[P.OutputRecord, Any], None] = default_output_handler
        self.submit_context: Callable[[int], Any] | None = None   # notebook layer: which cell submits
        self.task_context: dict[int, Any] = {}
        self.current_task: int = 0                 # set by the engine while a task runs (parent id)
        self.wait_hook: Callable[[Callable[[], bool], float | None], None] | None = None
        self.last_heard = time.monotonic()
        self._outbox: list = []                     # TaskSpecs not yet sent (batched)
        self._last_send = 0.0                       # perf_counter of the last Submit sent
        self.origin: dict = {}                      # task id -> name, then (name, engine): for reprs
        self._actor_client = None                   # runtime.driver.actors.ActorClient, made on first actor use
        self.backend = None                         # the NativeBackend over this driver (set by it)
        self._waker = transport.Waker()

        if kind != "engine-client":
            # off loopback: CURVE with this host's client keys (an engine's own client keeps the engine's)
            keys.secure_process(key_dir(config), server_public=conn.get("curve_serverkey", ""),
                                insecure=config.insecure)
        rundir = conn.get("rundir", "")
        ident = uuid.uuid4().hex[:12]
        if conn.get("local", True) and rundir:
            ep = f"ipc://{rundir}/c-{ident}"
        else:   # a head on another host connects back to an address that routes to it (so does the store)
            config = self.config = config.replace(bind_host=transport.callback_host(conn["head"], config.bind_host))
            ep = f"tcp://{config.bind_host}:0"
        self.pull, bound = transport.bind_pull([ep], self.signer)
        self.endpoint = transport.advertised_endpoint(bound[0], conn["head"])   # not 0.0.0.0
        head = conn["head_ipc"] if conn.get("local", True) and conn.get("head_ipc") else conn["head"]
        self.dealer = transport.connect_dealer(head, self.signer, identity=ident.encode())
        self._send(P.Hello(kind, os.getpid(), socket.gethostname(), self.endpoint, owns_cluster))
        welcome = self.pull.recv(timeout_ms=int(config.start_timeout_s * 1000))
        if not isinstance(welcome, P.Welcome):
            self._close_sockets()
            raise ClusterError(
                f"The head at {head} did not answer within {config.start_timeout_s} s. "
                "Check that the cluster is running (`jpar status`) and that the key matches its connection file."
                + (" The connection is encrypted (CURVE): the head admits only the public keys in its key directory, "
                   "so this host's client keys must be the ones `jpar keys` made there (or be added to it)."
                   if transport.needs_curve(head) else "")
                + (f" The head answers by connecting back to {self.endpoint}: if its host cannot reach that, set "
                   "JPAR_BIND_HOST to an address of this host that it can reach." if ep.startswith("tcp://") else "")
            )
        self.client_no = welcome.client_no
        self.cluster_id = welcome.cluster_id
        self.info = welcome.info
        self._ids = itertools.count(1)
        from ..store import object_store   # large values: the host's shared-memory store (an engine's own, in tasks)

        self.store = object_store.attach(bytes.fromhex(conn["key"]), conn.get("node"),
                                         dict(object_store.store_settings(config), peer=conn["head"]))
        self._thread = threading.Thread(target=self._receive_loop, name="jpar-driver-recv", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ sending
    def _send(self, msg: P.Message) -> None:
        with self.lock:
            if self._outbox:
                self._flush_locked()
            self.dealer.send(msg)

    def flush(self) -> None:
        """Send submissions still in the outbox (every blocking call does this first)."""
        if self._outbox:
            with self.lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if self._actor_client is not None and self._actor_client.dirty:
            self._actor_client.flush_locked()      # actor calls first: their notices below are not urgent
        out, self._outbox = self._outbox, []
        if out:
            self.dealer.send(P.Submit(out))
            self._last_send = time.perf_counter()

    def new_ids(self, n: int = 1) -> int:
        """A fresh task/object id (n consecutive ids for n returns); no round trip."""
        first = next(self._ids)
        for _ in range(n - 1):
            next(self._ids)
        return (self.client_no << 40) | first

    def ensure_function(self, fn_id: int, name: str, blob_factory: Callable[[], bytes]) -> None:
        if fn_id not in self._fn_sent:
            self._send(P.RegisterFunction(fn_id, name, blob_factory()))
            self._fn_sent.add(fn_id)

    def submit(self, spec: P.TaskSpec) -> None:
        """Queue a task; the receiver thread (or the next blocking call) sends queued ones in one batch."""
        if self.submit_context is not None:
            self.task_context[spec.task_id] = self.submit_context(spec.task_id)
        self.origin[spec.task_id] = spec.name     # for reprs: which task makes this ref's value
        with self.lock:
            self._enqueue_locked(spec)

    def _enqueue_locked(self, spec) -> None:
        """Queue a submission (task or actor-call notice); the caller holds ``self.lock``.

        A lone submission (nothing sent for a while) goes at once from this thread: handing it to
        the receiver thread would cost a thread wake-up on the latency path. In a burst, the first
        one after it wakes the receiver thread, which sends the batch; a full batch goes at once."""
        out = self._outbox
        out.append(spec)
        n = len(out)
        if n == 1:
            if time.perf_counter() - self._last_send > LONE_S:
                self._flush_locked()
            else:
                self._waker.wake()
        elif n >= 512:
            self._flush_locked()

    def put(self, value: Any) -> ObjectRef:
        oid = self.new_ids()
        p = self.store.prepare(value)
        blob = p.inline
        if blob is None:  # large: into shared memory once; segments freed meanwhile are reused
            if self.released and not self.closed:
                self._flush_released()
                self.query("sync", timeout=10)   # the head has freed (and pooled) those segments
            blob = self.store.write(oid, p)
        self._send(P.PutObjects([P.ObjectRecord(oid, P.OK, blob)]))
        self.results[oid] = (P.OK, blob)
        return ObjectRef(oid, self.client_no, self)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        check_cluster([ref], self.cluster_id)
        self.cancel_ids([ref.id], force, recursive)

    def cancel_ids(self, task_ids, force: bool = False, recursive: bool = True) -> None:
        withdrawn = self._actor_client.withdraw(task_ids) if self._actor_client is not None else {}
        for tid in task_ids:
            self._send(P.Cancel(tid, force, recursive))
        for actor_id, calls in withdrawn.items():   # after the Cancel: the head settled them as cancelled
            records = []
            for c in calls:
                blob = serialization.dumps_error(TaskCancelledError(f"{c.conn.class_name}.{c.method}", "jpar.cancel()"))
                objs = tuple((c.task_id + i, P.ERROR, blob) for i in range(c.num_returns))
                records.append(P.CallDoneRecord(c.task_id, c.attempt, P.ERROR, objs, 0.0, 0.0))
            self._send(P.ActorCallsDone(actor_id, records))

    def free(self, refs: list, timeout: float = 30.0) -> None:
        """jpar.free: each ref's value becomes an ObjectFreedError here at once (a result that arrives
        later loses: first arrival wins, see _store), then the head drops the values everywhere and
        answers once their segments are freed, so the store's figures show it when this returns."""
        check_cluster(refs, self.cluster_id)
        from ...errors import ObjectFreedError

        records = {r.id: P.ObjectRecord(r.id, P.ERROR, serialization.dumps_error(ObjectFreedError(repr(r))))
                   for r in refs}
        self._overwrite(records.values())
        self.request(P.Free, list(records.values()), timeout=timeout)

    def _overwrite(self, records) -> None:
        """Error records that replace what this process holds for those objects (unlike _store, where
        the first arrival wins): freed here, or lost with their node (the head's ObjectsLost)."""
        callbacks = []
        with self.cond:
            for oid, status, blob in records:
                self.results[oid] = (status, blob)
                self._requested.discard(oid)
                cbs = self._futures.pop(oid, None)
                if cbs:
                    callbacks.append((cbs, status, blob))
            self.errors_seen += 1
            self.cond.notify_all()
        for cbs, status, blob in callbacks:
            for fut in cbs:
                _complete(fut, status, blob)

    def _node_lost(self, node: str, lost, rebuilding) -> None:
        """Any process: ``node`` left the cluster (the owners heard first). Locations held there for
        values this process reads without owning them are dropped: a lost value's error replaces its
        location, a rebuilt one is asked of the head again (it answers once the value is made anew),
        so a get() neither pulls from a dead node nor waits out a pull's timeout."""
        from ..store.transfer import node_lost

        node_lost(node)
        results = self.results
        with self.cond:
            errors = [rec for rec in lost if _held_on(results.get(rec.object_id), node)]
            again = [oid for oid in rebuilding if _held_on(results.get(oid), node)]
            for oid in again:
                del results[oid]
            self._requested.update(again)
            self.errors_seen += 1          # wakes a get() waiting on other refs, to look again
            self.cond.notify_all()
        if errors:
            self._overwrite(errors)
        if again:
            self._send(P.GetObjects(next(self._req), again))

    def _forget_lost(self, object_ids, node: str) -> None:
        """The head rebuilds these values, lost with ``node``, by running their tasks again: forget the
        locations held for them there, so get() and wait() wait for the new results (one that came
        first, stored elsewhere, is kept)."""
        from ..store.transfer import node_lost

        node_lost(node)                    # a pull from it under way gives up at once
        with self.cond:
            for oid in object_ids:
                if _held_on(self.results.get(oid), node):
                    del self.results[oid]
            self.errors_seen += 1          # wakes a get() waiting on other refs, to look again
            self.cond.notify_all()

    def query(self, what: str, arg: Any = None, timeout: float | None = None) -> Any:
        """Ask the head something and wait for the answer."""
        req = next(self._req)
        self._send(P.Query(req, what, arg))
        return self._await_answer(req, repr(what), timeout)

    def request(self, msg_type: type, *fields: Any, timeout: float | None = None) -> Any:
        """Send a typed request (a message whose first field is ``req_id``, e.g. ``P.RemoveEngines``)
        made of ``fields`` and wait for the head's Answer; an answer that is an exception is raised."""
        req = next(self._req)
        self._send(msg_type(req, *fields))
        value = self._await_answer(req, msg_type.__name__, timeout)
        if isinstance(value, BaseException):
            raise value
        return value

    def _await_answer(self, req: int, what: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while req not in self._answers:
                self._check_alive()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise GetTimeoutError(f"The head did not answer {what} within {timeout} s.")
                self.cond.wait(0.2 if left is None else min(left, 0.2))
            return self._answers.pop(req)

    # ------------------------------------------------------------ receiving
    def _receive_loop(self) -> None:
        hb = self.config.heartbeat_s
        next_hb = time.monotonic() + hb
        pull = self.pull
        waker = self._waker
        poller = transport.Poller(pull, waker)
        try:
            while not self.closed:
                ready = poller.poll(int(hb * 1000 / 2))
                if waker in ready:   # always drain it: a wake-up left pending would make poll() spin
                    with self.lock:
                        waker.drain()
                        if self._outbox:
                            self._flush_locked()
                msg = pull.recv_nowait() if pull in ready else None
                while msg is not None:
                    self._handle(msg)
                    msg = pull.recv_nowait()
                if self._actor_client is not None and self._actor_client.released:
                    self._actor_client.tick()
                now = time.monotonic()
                if now >= next_hb or len(self.released) > 1000:
                    self._flush_released()
                    if now >= next_hb:
                        self._send(P.Heartbeat())
                        next_hb = now + hb
                        head_exited = self.process is not None and self.process.poll() is not None
                        if head_exited or now - self.last_heard > self.config.dead_after_s:
                            self._head_lost()
        except Exception:  # sockets closed under us at shutdown
            if not self.closed:
                log.exception("driver receiver stopped")

    def _head_lost(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _blame_a_dead_head(self, exc: Exception) -> None:
        """A value's segment is gone: if that is because the cluster died (the head swept it, or this
        driver has not yet noticed the death), raise HeadDiedError, which says what to do."""
        if not self.closed:
            try:
                self.query("sync", timeout=min(5.0, self.config.dead_after_s))
                return                 # the head answers: the object itself was lost
            except (GetTimeoutError, HeadDiedError):
                pass
        raise HeadDiedError(
            "The cluster's head stopped answering (it was shut down or crashed), and this value went with it. "
            "Call jpar.init() again to start a new cluster.") from exc

    def _check_alive(self) -> None:
        if self.closed:
            raise HeadDiedError(
                "The cluster's head stopped answering (it was shut down or crashed). "
                "Call jpar.init() again to start a new cluster."
            )

    def flush_released(self) -> None:
        """Tell the head now about refs garbage collected since the last heartbeat."""
        self._flush_released()

    def _flush_released(self) -> None:
        """Send the ids in ``released``. put() (user thread) and the receiver thread both call this,
        so each id is taken with one atomic popleft: checking ``while rel`` first would race."""
        ids = []
        rel = self.released
        pop = rel.popleft
        while True:
            try:
                ids.append(pop())
            except IndexError:
                break
        if ids:
            for oid in ids:
                self.results.pop(oid, None)
                self.origin.pop(oid, None)
            self._send(P.Release(ids))

    def _handle(self, msg: P.Message) -> None:
        self.last_heard = time.monotonic()
        t = type(msg)
        if t is P.Results:
            self._store(msg.objects)
            if msg.engine >= 0:
                origin = self.origin
                for rec in msg.objects:
                    name = origin.get(rec.object_id)
                    if name is not None:
                        origin[rec.object_id] = (name, msg.engine)
        elif t is P.TaskFailed or t is P.Objects:
            self._store(msg.objects)
        elif t is P.ObjectsLost:
            self._overwrite(msg.objects)
        elif t is P.ObjectsRebuilding:
            self._forget_lost(msg.object_ids, msg.node)
        elif t is P.NodeLost:
            self._node_lost(msg.node, msg.lost, msg.rebuilding)
        elif t is P.Output:
            for chunk in msg.chunks:
                try:
                    self.output_handler(chunk, self.task_context.get(chunk.task_id))
                except Exception:
                    log.exception("output handler failed")
        elif t is P.Answer:
            with self.cond:
                self._answers[msg.req_id] = msg.value
                self.cond.notify_all()
        elif t is P.Heartbeat:
            pass
        elif t is P.ActorInfo:
            if self._actor_client is not None:
                self._actor_client.on_info(msg)
        elif t is P.Shutdown:
            self._head_lost()

    def _store(self, records) -> None:
        callbacks = []
        with self.cond:
            results = self.results
            for oid, status, blob in records:
                if oid in results and oid not in self._requested:
                    continue  # first arrival wins (e.g. a result racing its cancellation)
                self._requested.discard(oid)
                results[oid] = (status, blob)
                if self.task_context:
                    self.task_context.pop(oid, None)   # output for a task always precedes its result
                if status:
                    self.errors_seen += 1
                if self._futures:
                    cbs = self._futures.pop(oid, None)
                    if cbs:
                        callbacks.append((cbs, status, blob))
            self.cond.notify_all()
        for cbs, status, blob in callbacks:
            for fut in cbs:
                _complete(fut, status, blob)
        if self._actor_client is not None:
            self._actor_client.on_results(records)

    # ------------------------------------------------------------ waiting
    def _request_missing(self, refs) -> None:
        """Ask the head for refs owned by someone else that we have not got yet."""
        ids = [r.id for r in refs if r.owner != self.client_no and r.id not in self.results
               and r.id not in self._requested]
        if ids:
            self._requested.update(ids)
            self._send(P.GetObjects(next(self._req), ids))

    def get(self, refs: list, timeout: float | None) -> list:
        """Values of ``refs`` in order; raises the first error as soon as it is known."""
        check_cluster(refs, self.cluster_id)
        self.flush()
        self._request_missing(refs)
        results = self.results
        deadline = None if timeout is None else time.monotonic() + timeout
        i, n = 0, len(refs)
        seen_errors = -1
        while True:
            while i < n and refs[i].id in results and refs[i].id not in self._requested:
                if results[refs[i].id][0]:
                    break
                i += 1
            if i < n and refs[i].id in results and results[refs[i].id][0]:
                break  # an error: raise it now
            if i == n:
                break
            if seen_errors != self.errors_seen:
                seen_errors = self.errors_seen
                bad = next((r for r in refs[i:] if results.get(r.id, (0,))[0]), None)
                if bad is not None:
                    break
            self._wait_for(lambda: refs[i].id in results or self.errors_seen != seen_errors, deadline, timeout)
        out = []
        asked_again: set = set()
        for r in refs:
            while True:
                entry = results.get(r.id)
                if entry is None or r.id in self._requested:
                    if any(results.get(x.id, (0,))[0] for x in refs):
                        break      # not ready, and another ref failed: that error is raised below
                    # its value was lost with its node and is being made again (ObjectsRebuilding)
                    self._wait_for(lambda: r.id in results and r.id not in self._requested, deadline, timeout)
                    continue
                try:
                    out.append(serialization.load_result(*entry))
                    break
                except ObjectLostError as exc:
                    if results.get(r.id) is not entry:
                        continue   # the owner heard meanwhile that it is being rebuilt: wait for that
                    if r.owner != self.client_no and not entry[0] and r.id not in asked_again:
                        asked_again.add(r.id)   # not ours: the owner was told; ask the head where it is now
                        with self.cond:
                            if results.get(r.id) is entry:
                                del results[r.id]
                        self._request_missing([r])
                        continue
                    self._blame_a_dead_head(exc)
                    raise
        return out

    def _wait_for(self, pred: Callable[[], bool], deadline: float | None, timeout: float | None) -> None:
        if self.wait_hook is not None:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.wait_hook(pred, left)
        else:
            with self.cond:
                while not pred():
                    self._check_alive()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self.cond.wait(1.0 if left is None else min(left, 1.0))
        self._check_alive()
        if deadline is not None and not pred() and time.monotonic() >= deadline:
            raise GetTimeoutError(
                f"get() timed out after {timeout} s; the tasks keep running. "
                "Call get() again later, wait() for some of them, or cancel() them."
            )

    def wait(self, refs: list, num_returns: int, timeout: float | None, fetch_local: bool = True):
        check_cluster(refs, self.cluster_id)
        self.flush()
        self._request_missing(refs)
        results = self.results
        deadline = None if timeout is None else time.monotonic() + timeout

        def enough() -> bool:
            return sum(1 for r in refs if r.id in results and r.id not in self._requested) >= num_returns

        if not enough():
            try:
                self._wait_for(enough, deadline, timeout)
            except GetTimeoutError:
                pass
        ready, not_ready = [], []
        for r in refs:
            (ready if len(ready) < num_returns and r.id in results and r.id not in self._requested
             else not_ready).append(r)
        return ready, not_ready

    def future(self, ref: ObjectRef) -> concurrent.futures.Future:
        check_cluster([ref], self.cluster_id)
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        with self.cond:
            entry = self.results.get(ref.id)
            if entry is None or ref.id in self._requested:
                self._futures.setdefault(ref.id, []).append(fut)
                fut._jpar_ref = ref  # keeps the value alive until the future completes
        if entry is not None and ref.id not in self._requested:
            _complete(fut, *entry)
        else:
            self._request_missing([ref])
        return fut

    def statistics(self) -> "DriverStatistics":
        return DriverStatistics(client_no=self.client_no, cluster_id=self.cluster_id, closed=self.closed,
                                results_held=len(self.results), futures_waiting=len(self._futures),
                                unsent_submissions=len(self._outbox), releases_pending=len(self.released),
                                dropped_messages=self.pull.dropped)

    def ref_state(self, ref: ObjectRef) -> str:
        entry = self.results.get(ref.id)
        if entry is None:
            return "pending"
        if entry[0]:
            return "failed"
        if entry[1][:4] == b"\x00JPL":
            from ..store.object_store import decode_location

            return f"ready, {decode_location(entry[1]).size} bytes in the object store"
        return f"ready, {len(entry[1])} bytes"

    def describe_ref(self, ref: ObjectRef) -> dict:
        """What a notebook shows for a ref: state and size, the task that makes it, its engine.
        Reads only what this process already has; holds nothing of the value."""
        origin = self.origin.get(ref.id)
        name, engine = (origin if isinstance(origin, tuple) else (origin, None))
        return {"state": self.ref_state(ref), "task": name, "engine": engine,
                "owned": ref.owner == self.client_no}

    # ------------------------------------------------------------ closing
    def close(self, stop_cluster: bool = False) -> None:
        """Say goodbye (stopping the cluster if asked) and close this driver's sockets. Also after the
        receiver thread found the head gone and marked the driver closed: its sockets are still open."""
        if self._sockets_closed and not stop_cluster:
            return
        if not self.closed:
            try:
                self._flush_released()
                self._send(P.Goodbye(stop_cluster))
            except Exception:
                pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self._thread.join(timeout=2.0)
        self._close_sockets()
        if self.process is not None:
            try:
                self.process.wait(timeout=self.config.start_timeout_s)
            except Exception:
                self.process.kill()
                self.process.wait()
            for f in (self.process.stdin, self.process.stdout):
                if f is not None:
                    f.close()
            self.process = None
            self._sweep()                      # the head sweeps too, unless it was killed
        elif self.kind != "engine-client" and self._head_gone_here():
            self._sweep()                      # a killed head of this host swept nothing: its cluster is over
        if self.kind != "engine-client":
            self.store.close()

    def _head_gone_here(self) -> bool:
        """The cluster's head ran on this host and its process is gone."""
        import psutil

        pid = self.conn.get("pid", 0)
        return bool(self.conn.get("local", True) and pid and not psutil.pid_exists(pid))

    def _sweep(self) -> None:
        from ..store.object_store import sweep_cluster

        sweep_cluster(bytes.fromhex(self.conn["key"]), self.store.dir, os.path.dirname(self.store.spill_root))

    def _close_sockets(self) -> None:
        if self._sockets_closed:
            return
        self._sockets_closed = True
        if getattr(self, "_actor_client", None) is not None:
            self._actor_client.close()
        self.pull.close()
        self.dealer.close()
        if hasattr(self, "_waker"):
            self._waker.close()
        if self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://"):])
            except OSError:
                pass


@dataclasses.dataclass(frozen=True)
class DriverStatistics:
    client_no: int
    cluster_id: str
    closed: bool
    results_held: int          # values (or errors) received and still referenced
    futures_waiting: int
    unsent_submissions: int
    releases_pending: int
    dropped_messages: int      # unsigned or malformed messages dropped on the receiving socket


def _held_on(entry, node: str) -> bool:
    """Whether a results entry is a location of a value stored on ``node``."""
    from ..store.segments import LOCATION_MAGIC, decode_location

    return entry is not None and entry[1][:4] == LOCATION_MAGIC and decode_location(entry[1]).node == node


def _complete(fut: concurrent.futures.Future, status: int, blob: bytes) -> None:
    if fut.done():
        return
    try:
        fut.set_result(serialization.load_result(status, blob))
    except BaseException as exc:  # the task's error, delivered through the future
        fut.set_exception(exc)


