"""An engine in actor mode: one process hosting one actor instance, taking calls straight from callers.

::

    head ROUTER --ActorSetup/Shutdown--> head DEALER --+
         ^                                            |
         +--ActorHello/ActorReady/ActorCallsDone------+      main thread: run calls in arrival order
                                                             (or hand them to a thread pool / event loop)
    callers' PUSH --Calls--> PULL (ipc + tcp) --> main --+--> PUSH to each caller's PULL: Results, Output
                                                         +--> head: ActorCallsDone (batched, after the results)

Calls from one caller arrive in the order it made them (one PUSH socket per caller and
actor). A plain actor runs them one at a time in that order on the main thread; with
``max_concurrency > 1`` a thread pool runs them; an actor with ``async def`` methods runs
them as tasks on an asyncio loop (``await ref`` works there, ``jpar.get`` warns). Results
are batched per caller when calls queue up and sent as soon as the queue runs dry, so one
call at a time costs one message each way. The process exits when the head says so, kills
it, or disappears (it is the head's child).

A *spare* (``actor`` id 0 in its setup) is started by the head ahead of need: it imports and
connects, says ActorHello(0), and waits, for as long as the head lives, for the ActorSetup that
names its actor; from then on it is that actor's process like any other.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import pickle
import socket
import sys
import threading
import time
import warnings
from collections import deque

from ..wire import protocol as P
from ..wire import serialization, transport
from .engine import TaskStream
from .processes import exit_if_forked, reap_children, stop_descendants
from ... import context
from ...errors import ActorDiedError, TaskCancelledError

log = logging.getLogger("jpar.actor")

_current_call: contextvars.ContextVar = contextvars.ContextVar("jpar_actor_call", default=None)
LAST_WORD_S = 5.0   # how long a process whose __init__ raised waits for the head to stop it


class ActorHost:
    def __init__(self, setup: dict):
        self.setup = setup
        a = setup["actor"]
        self.actor_id = int(a["id"])
        self.incarnation = int(a["incarnation"])
        self.spare = bool(a.get("spare"))       # started ahead of need: the actor comes with ActorSetup
        self.gpu_ids = a.get("gpu_ids") or []
        self.bind_host = transport.callback_host(setup["head"], a.get("bind_host") or transport.LOOPBACK)
        self.signer = P.Signer(bytes.fromhex(setup["key"]))
        self.head = transport.connect_dealer(setup["head"], self.signer, identity=os.urandom(8).hex().encode())
        self.pid = os.getpid()
        self.parent_pid = setup.get("parent_pid") or 0
        self.lock = threading.Lock()             # guards results/done/output lists and the waker
        self.push_lock = threading.Lock()        # guards the PUSH sockets (main and control thread)
        self.push: dict[int, transport.Channel] = {}
        self.endpoints: dict[int, str] = {}
        self.results: dict[int, list] = {}       # caller -> ObjectRecords not sent yet
        self.done: list = []                     # CallDoneRecords not sent yet
        self.output: list = []                   # (caller, OutputRecord)
        self.queue: deque = deque()              # (caller, CallRecord) for the main-thread runner
        self.cancelled: set = set()              # call ids cancelled: dropped unstarted, or their result replaced
        self.calls: dict = {}                    # call id -> (caller, rec, asyncio.Task or Future): async/threaded
        self.stop = False
        self.client = None
        self.instance = None
        self.name = "actor"
        self.owner = (0, "")
        self.mode = "sync"
        self.loop = None
        self.loop_thread = None
        self.pool = None
        self.waker = None

    # ------------------------------------------------------------ life cycle
    def run(self) -> None:
        self.head.send(P.ActorHello(self.actor_id, self.incarnation, self.pid, socket.gethostname()))
        setup = None
        deadline = time.monotonic() + float(self.setup.get("start_timeout_s", 30))
        while setup is None and (self.spare or time.monotonic() < deadline):
            msg = self.head.recv(timeout_ms=200)
            if isinstance(msg, P.ActorSetup):
                setup = msg
            elif isinstance(msg, P.Shutdown) or self._orphaned():
                return
        if setup is None:
            log.error("no setup from the head for actor %x; exiting", self.actor_id)
            return
        if self.spare:   # the actor this spare was given
            self.actor_id = int(P.ActorSpec(*setup.spec).actor_id)
            self.incarnation = int(setup.incarnation)
        try:
            self._start(setup)
        finally:
            self.stop = True
            self._close()
            stop_descendants()

    def _start(self, setup: P.ActorSetup) -> None:
        spec = P.ActorSpec(*setup.spec)
        opts = spec.options
        self.name = spec.class_name
        self.owner = (int(opts.get("owner", 0)), str(opts.get("owner_endpoint", "")))
        if self.owner[1]:
            self.endpoints[self.owner[0]] = self.owner[1]
        if self.gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.gpu_ids)
        sys.stdout = TaskStream(self, "stdout")
        sys.stderr = TaskStream(self, "stderr")
        from ... import backends

        backends.set_engine_client(self._make_client)
        backends.set_blocking_check(self._blocking_check)
        context.set_current(actor_id=self.actor_id, node=self.setup.get("node") or socket.gethostname())
        threading.Thread(target=self._control_loop, name="jpar-actor-ctl", daemon=True).start()
        token = _current_call.set((self.owner[0], self.actor_id, f"{self.name}.__init__"))
        try:
            cls = pickle.loads(setup.class_blob)
            args, kwargs = _arguments(spec.args, spec.deps)
            self.instance = cls(*args, **kwargs)
        except BaseException as exc:  # __init__ raised: the actor is dead, callers get this error
            tb = serialization.remote_traceback(exc, skip_frames=1)
            err = ActorDiedError(
                f"The actor {self.name} ({self.actor_id:#x}) died because its __init__ raised:\n{tb}"
                "Fix the constructor (or its arguments) and create the actor again.")
            self.flush_output()
            self.head.send(P.ActorReady(self.actor_id, self.incarnation, P.ERROR, [], serialization.dumps_error(err)))
            self._await_end(LAST_WORD_S)
            return
        finally:
            _current_call.reset(token)
        is_async = bool(opts.get("is_async"))
        conc = opts.get("max_concurrency") or (1000 if is_async else 1)
        ipc = f"ipc://{self.setup.get('rundir') or '/tmp'}/a-{self.actor_id:x}-{self.incarnation}"
        self.pull, bound = transport.bind_pull([ipc, f"tcp://{self.bind_host}:0"], self.signer)
        bound = [transport.advertised_endpoint(e, self.setup["head"]) for e in bound]
        self.waker = transport.Waker()
        if is_async:
            self.mode = "async"
            self.loop = asyncio.new_event_loop()
            self.sem = asyncio.Semaphore(conc)
            self.loop_thread = threading.Thread(target=self.loop.run_forever, name="jpar-actor-loop", daemon=True)
            self.loop_thread.start()
        elif conc > 1:
            import concurrent.futures

            self.mode = "threaded"
            self.pool = concurrent.futures.ThreadPoolExecutor(conc, thread_name_prefix="jpar-actor")
        self.flush_output()
        self.head.send(P.ActorReady(self.actor_id, self.incarnation, P.OK, bound, b""))
        self._serve()

    def _await_end(self, timeout: float) -> None:
        """Stay until the head, having read this process's last message, stops it (SIGKILL, or a
        Shutdown), at most ``timeout`` s. Exiting at once dropped a message not yet sent (sockets
        close without lingering) or let the head see the exit first: callers then read "exited with
        code 0" instead of the error the message carried."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._orphaned():
            if isinstance(self.head.recv(timeout_ms=100), P.Shutdown):
                return

    def _close(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self.client.close()
        self.head.close()
        if getattr(self, "pull", None) is not None:
            self.pull.close()
        with self.push_lock:
            for ch in self.push.values():
                ch.close()
        if self.waker is not None:
            self.waker.close()

    def _orphaned(self) -> bool:
        return bool(self.parent_pid) and os.getppid() != self.parent_pid

    # ------------------------------------------------------------ the serving loop
    def _serve(self) -> None:
        poller = transport.Poller(self.pull, self.head, self.waker)
        pull, head, queue = self.pull, self.head, self.queue
        sync = self.mode == "sync"
        while not self.stop:
            ready = poller.poll(200 if not queue else 0)
            if self.waker in ready:
                with self.lock:
                    self.waker.drain()
            if head in ready:   # first: a cancel that came with the setup is known before its call comes
                self._from_head()
            msg = pull.recv_nowait()
            while msg is not None:
                if type(msg) is P.Calls:
                    self._take(msg)
                msg = pull.recv_nowait()
            if sync:
                if not queue:
                    reap_children()   # no call runs: what calls started and left exited can be collected
                while queue and not self.stop:
                    self._from_head()   # a cancel that came while the last call ran drops its successors
                    if not queue:
                        break
                    caller, rec = queue.popleft()
                    self._run(caller, rec)
                    if not queue:
                        msg = pull.recv_nowait()   # more calls arrived while this one ran?
                        while msg is not None:
                            if type(msg) is P.Calls:
                                self._take(msg)
                            msg = pull.recv_nowait()
                    if len(self.done) >= len(queue) or len(self.done) >= 256:
                        self._flush()   # eager when the queue runs low, batched when it is deep
            self._flush()

    def _from_head(self) -> None:
        msg = self.head.recv_nowait()
        while msg is not None:
            t = type(msg)
            if t is P.Shutdown:
                self.stop = True
            elif t is P.CancelTask:
                self._cancel(msg.task_id)
                self.head.send(P.CancelTask(msg.task_id, False))   # acknowledged: the call cannot start now
            msg = self.head.recv_nowait()

    def _take(self, msg: P.Calls) -> None:
        caller = msg.caller
        if caller not in self.endpoints:
            self.endpoints[caller] = msg.endpoint
        calls = msg.calls
        if self.cancelled:
            dropped = [r for r in calls if r.task_id in self.cancelled]   # cancelled before it came
            if dropped:
                calls = [r for r in calls if r.task_id not in self.cancelled]
                for rec in dropped:
                    self._finish(caller, rec, P.ERROR, (), time.time())
        if self.mode == "sync":
            self.queue.extend((caller, rec) for rec in calls)
        elif self.mode == "async":
            self.loop.call_soon_threadsafe(self._start_async, caller, calls)
        else:
            with self.lock:
                for rec in calls:
                    self.calls[rec.task_id] = (caller, rec, self.pool.submit(self._run, caller, rec))

    # ------------------------------------------------------------ cancelling calls
    # Ray's rule for actor tasks: one that has not started is dropped; a running one of an async
    # actor gets asyncio.CancelledError (its asyncio task is cancelled); a running one of a sync or
    # threaded actor is not interrupted (the actor's state stays whole) and runs to its end. Each
    # way its result is TaskCancelledError (the head already told its caller so).
    def _cancel(self, task_id: int) -> None:
        self.cancelled.add(task_id)
        if self.mode == "sync":
            item = next((it for it in self.queue if it[1].task_id == task_id), None)
            if item is not None:
                self.queue.remove(item)
                self._finish(item[0], item[1], P.ERROR, (), time.time())
        elif self.mode == "async":
            self.loop.call_soon_threadsafe(self._cancel_async, task_id)
        else:
            with self.lock:
                entry = self.calls.get(task_id)
            if entry is not None and entry[2].cancel():   # not started: never will
                self._finish(entry[0], entry[1], P.ERROR, (), time.time())

    def _cancel_async(self, task_id: int) -> None:
        entry = self.calls.get(task_id)
        if entry is not None:
            entry[2].cancel()

    def _cancelled_objects(self, rec: P.CallRecord) -> tuple:
        blob = serialization.dumps_error(TaskCancelledError(f"{self.name}.{rec.method}", "jpar.cancel()"))
        return tuple((rec.task_id + i, P.ERROR, blob) for i in range(rec.num_returns))

    # ------------------------------------------------------------ running calls
    def _run(self, caller: int, rec: P.CallRecord) -> None:
        if rec.task_id in self.cancelled:   # cancelled after it was queued here, before a thread took it
            self._finish(caller, rec, P.ERROR, (), time.time())
            return
        token = _current_call.set((caller, rec.task_id, f"{self.name}.{rec.method}"))
        start = time.time()
        returned = False
        try:
            method = getattr(self.instance, rec.method)
            args, kwargs = _arguments(rec.args, rec.deps)
            value = method(*args, **kwargs)
            returned = True
            exit_if_forked(True)
            objects = self._returns(rec, value)
            status = P.OK
        except _DependencyFailed as exc:  # a ref argument failed: its error is the call's result
            status, objects = P.ERROR, tuple((rec.task_id + i, P.ERROR, exc.blob) for i in range(rec.num_returns))
        except BaseException as exc:  # the user's exception is the call's result
            status, objects = P.ERROR, self._error(rec, exc)
        finally:
            exit_if_forked(returned)
            _current_call.reset(token)
        self._finish(caller, rec, status, objects, start)

    def _start_async(self, caller: int, calls: list) -> None:
        for rec in calls:
            task = self.loop.create_task(self._run_async(caller, rec))
            task.add_done_callback(lambda t, c=caller, r=rec: t.cancelled() and self._finish(c, r, P.ERROR, (), 0.0))
            self.calls[rec.task_id] = (caller, rec, task)   # (a task cancelled before it started ends there)

    async def _run_async(self, caller: int, rec: P.CallRecord) -> None:
        try:
            await self._run_async_call(caller, rec)
        except asyncio.CancelledError:   # cancelled while waiting for a slot (max_concurrency)
            self._finish(caller, rec, P.ERROR, (), time.time())

    async def _run_async_call(self, caller: int, rec: P.CallRecord) -> None:
        async with self.sem:
            _current_call.set((caller, rec.task_id, f"{self.name}.{rec.method}"))
            start = time.time()
            try:
                method = getattr(self.instance, rec.method)
                args, kwargs = _arguments(rec.args, rec.deps)
                value = method(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
                objects = self._returns(rec, value)
                status = P.OK
            except _DependencyFailed as exc:
                status = P.ERROR
                objects = tuple((rec.task_id + i, P.ERROR, exc.blob) for i in range(rec.num_returns))
            except BaseException as exc:  # noqa: BLE001  (also CancelledError: reported, not swallowed)
                status, objects = P.ERROR, self._error(rec, exc)
            self._finish(caller, rec, status, objects, start)

    def _finish(self, caller: int, rec: P.CallRecord, status: int, objects: tuple, start: float) -> None:
        if self.cancelled and rec.task_id in self.cancelled:
            self.cancelled.discard(rec.task_id)
            status, objects = P.ERROR, self._cancelled_objects(rec)
        done = P.CallDoneRecord(rec.task_id, rec.attempt, status, objects, start, time.time())
        with self.lock:
            if self.calls:
                self.calls.pop(rec.task_id, None)
            self.results.setdefault(caller, []).extend(P.ObjectRecord(*o) for o in objects)
            self.done.append(done)
            if self.mode != "sync":
                self.waker.wake()

    def _returns(self, rec: P.CallRecord, value) -> tuple:
        n = rec.num_returns
        if n == 1:
            return ((rec.task_id, P.OK, serialization.dumps(value)),)
        values = list(value)
        if len(values) != n:
            raise ValueError(f"{self.name}.{rec.method} declared num_returns={n} but returned {len(values)} values")
        return tuple((rec.task_id + i, P.OK, serialization.dumps(v)) for i, v in enumerate(values))

    def _error(self, rec: P.CallRecord, exc: BaseException) -> tuple:
        blob = serialization.dumps_exception(exc, f"{self.name}.{rec.method}", skip_frames=1)
        return tuple((rec.task_id + i, P.ERROR, blob) for i in range(rec.num_returns))

    def _flush(self) -> None:
        """Results to their callers first, then the batch of done notices to the head.

        Callers first: once the head hears a released actor's last call is done it ends the actor
        and tells its callers it is dead, so the results must already be on their way. (The
        report is asynchronous: a jpar.kill() right after get() can beat it to the head.)"""
        if self.output:
            self.flush_output()
        if not self.done:
            return
        with self.lock:
            results, self.results = self.results, {}
            done, self.done = self.done, []
        with self.push_lock:
            for caller, objects in results.items():
                ch = self._channel(caller)
                if ch is not None:
                    ch.send(P.Results(objects, -1), nowait=True)
        self.head.send(P.ActorCallsDone(self.actor_id, done))

    def _channel(self, caller: int):
        ch = self.push.get(caller)
        if ch is None:
            ep = self.endpoints.get(caller)
            if not ep:
                return None
            ch = self.push[caller] = transport.connect_push(ep, self.signer)
        return ch

    # ------------------------------------------------------------ output
    def add_output(self, stream: str, text: str) -> None:
        cur = _current_call.get()
        caller, task_id, name = cur if cur is not None else (self.owner[0], self.actor_id, self.name)
        chunk = P.OutputRecord(task_id, -1, self.pid, name, stream, text)
        with self.lock:
            self.output.append((caller, chunk))

    def flush_output(self) -> None:
        with self.lock:
            pending, self.output = self.output, []
        if not pending:
            return
        by_caller: dict[int, list] = {}
        for caller, chunk in pending:
            by_caller.setdefault(caller, []).append(chunk)
        with self.push_lock:
            for caller, chunks in by_caller.items():
                ch = self._channel(caller)
                if ch is not None:
                    ch.send(P.Output(chunks), nowait=True)

    def _control_loop(self) -> None:
        while not self.stop:
            time.sleep(0.05)
            if self.output:
                try:
                    self.flush_output()
                except Exception:  # sockets closed at exit
                    return
            if self._orphaned():
                os._exit(3)

    # ------------------------------------------------------------ nested API use inside methods
    def _make_client(self):
        """The backend methods use for nested submissions, over this process's own client."""
        if self.client is None:
            from ...backends.native import NativeBackend
            from ...config import Config
            from ..driver.driver import Driver

            conn = {"key": self.setup["key"], "head": self.setup["head"], "head_ipc": self.setup["head"],
                    "rundir": self.setup.get("rundir", ""), "local": self.setup.get("head", "").startswith("ipc://")}
            self.client = Driver(conn, Config.from_env(), kind="engine-client")
            NativeBackend(self.client)
        cur = _current_call.get()
        if cur is not None:
            self.client.current_task = cur[1]
        return self.client.backend

    def _blocking_check(self) -> None:
        if self.loop_thread is not None and threading.current_thread() is self.loop_thread:
            warnings.warn(
                f"jpar.get() inside an async method of {self.name} blocks its event loop, so no other call on "
                "this actor runs meanwhile. Use `await ref` (or `await asyncio.gather(*refs)`) instead.",
                RuntimeWarning, stacklevel=3)


class _DependencyFailed(Exception):
    def __init__(self, blob: bytes):
        self.blob = blob


def _arguments(blob: bytes, deps: tuple):
    args, kwargs = pickle.loads(blob)
    if deps:
        from ...refs import ArgRef

        for _, status, b in deps:
            if status:
                raise _DependencyFailed(b)

        values = {oid: serialization.load_result(status, b) for oid, status, b in deps}
        args = tuple(values[a.id] if type(a) is ArgRef else a for a in args)
        if kwargs:
            kwargs = {k: (values[v.id] if type(v) is ArgRef else v) for k, v in kwargs.items()}
    return args, kwargs


def main(setup: dict) -> None:
    import socket

    from ..store import object_store   # large arguments arrive as locations in the host's shared-memory store

    object_store.attach(bytes.fromhex(setup["key"]), setup.get("node") or socket.gethostname(),
                        setup.get("store") or {})
    ActorHost(setup).run()
