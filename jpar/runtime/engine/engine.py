"""The engine process: receive tasks from the head, run them, send results to their owners.

::

    head ROUTER --Dispatch/Define/DriverInfo--> work DEALER --> main thread: run task
         ^                                                        |        |
         +---------------- TaskDone (batched) <-------------------+        +--> PUSH to the owner
         |                                                                      (Results, Output)
    ctl DEALER <--CancelTask/Heartbeat--  control thread: cancels, metrics, output flushes
    live DEALER ---one Heartbeat, then ZMTP pings only (libzmq's I/O thread): how the head
                   finds this engine gone when its host or link is lost (controller_liveness)

The main thread runs one task at a time, in the order the head queued them. A task that
calls ``jpar.get`` on something not ready tells the head it is blocked and, while it
waits, runs inline only the tasks it submitted itself (they cannot wait for it); the head
gives other work to other engines, starting an extra one if all are blocked, so nested
tasks never deadlock. Processes tasks start are the engine's to reap and to stop when it
exits (it is their subreaper); a forked copy of the engine exits when the task returns.
Output printed by a task is captured (never written to inherited file descriptors) and
sent to the task's owner, tagged with the task id. The engine exits when its head goes
silent or its parent process (the head, for local engines) disappears, and on the head's
Shutdown: the cluster stops, or this engine was removed (then its node's store stays).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections import deque

from ..wire import protocol as P
from ... import context
from ..wire import keys, serialization, transport
from ...errors import JparError, SerializationError
from .processes import (_PR_SET_PDEATHSIG, ActorProcesses, _prctl, exit_if_forked, guard_process, reap_children,
                        stop_descendants)

log = logging.getLogger("jpar.engine")

# Frames of the engine itself above the user's function in a traceback.
_ENGINE_FRAMES = 1
RECENT_VALUES = 64   # values of the last tasks run here, kept for chained tasks whose Dispatch comes late


class _Cancel(BaseException):
    """Raised in the main thread by the control thread's SIGINT to stop a cancelled task."""


class GiveBacks:
    """Which queued copies of a task this engine gave back to the head, and which tasks it started.

    The head may take a task back (Revoke), queue it again and, being free to, dispatch it to this
    same engine before the first copy was reached: the queue then holds it twice, and a second
    revoke of the second copy may come too. Each revoke this engine grants skips exactly one copy,
    so grants are counted per task, not remembered as a set: with a set, two grants for two copies
    skipped one, the other ran here while the head ran the task elsewhere (a fan-out of nested
    tasks then ran parents twice and, about one round in a thousand, hung). Granting and starting
    are atomic with each other (the control thread grants, the main thread starts)."""

    RECENT = 4096   # started task ids remembered (a revoke names tasks dispatched moments ago)

    def __init__(self):
        self.lock = threading.Lock()
        self.granted: dict[int, int] = {}     # task id -> copies given back, not yet reached
        self.started: dict[int, None] = {}    # recently started task ids, oldest first

    def grant(self, task_ids) -> list:
        """The head asks for these back: the ids not started here, each now skipped once."""
        with self.lock:
            given = [t for t in task_ids if t not in self.started]
            for t in given:
                self.granted[t] = self.granted.get(t, 0) + 1
            return given

    def start(self, task_id: int) -> bool:
        """The main thread reaches a queued copy: False when that copy was given back (skip it)."""
        with self.lock:
            n = self.granted.get(task_id)
            if n:
                if n == 1:
                    del self.granted[task_id]
                else:
                    self.granted[task_id] = n - 1
                return False
            started = self.started
            started[task_id] = None
            if len(started) > self.RECENT:
                del started[next(iter(started))]
            return True


class TaskStream:
    """sys.stdout/sys.stderr of an engine: text goes to the running task's owner."""

    def __init__(self, engine: "Engine", name: str):
        self._engine = engine
        self.name = name
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text: str) -> int:
        if text:
            self._engine.add_output(self.name, text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError("jpar engine streams have no file descriptor")

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class Engine:
    def __init__(self, setup: dict):
        self.setup = setup
        self.signer = P.Signer(bytes.fromhex(setup["key"]))
        self.identity = os.urandom(8).hex().encode()
        self.work = transport.connect_dealer(setup["head"], self.signer, identity=self.identity,
                                             immediate=bool(setup.get("rejoin_until")))
        self.engine_id = -1
        self.functions: dict[int, object] = {}
        self.blobs: dict[int, bytes] = {}
        self.owners: dict[int, str] = {}
        self.push: dict[int, transport.Channel] = {}
        self.push_lock = threading.Lock()
        self.queue: deque = deque()
        self.cancelled: set = set()
        self.give_backs = GiveBacks()            # revokes granted vs. tasks started (both threads)
        self.running: list = []                  # stack of DispatchRecords (nested runs)
        self.done: list = []                     # TaskDone records not yet sent
        self.done_first = False                  # send TaskDone ahead of results (see _flush)
        self.results: dict[int, list] = {}       # owner -> ObjectRecords not yet sent
        # chaining (see scheduler_chaining): a queued task may wait for a value made here by the task
        # ahead; wanted counts such tasks per object, produced keeps those values until they ran
        self.wanted: dict[int, int] = {}
        self.produced: dict[int, tuple] = {}     # object id -> (status, blob)
        # ... and the last few values made here, wanted or not: a chained task's Dispatch is read only
        # between tasks, so it may arrive after the producer (busy in its run) has returned
        self.recent: dict[int, tuple] = {}
        self.given_back: list = []               # chained task ids whose value was not made here
        self.output: list = []                   # (owner, OutputRecord) not yet sent
        self.output_lock = threading.Lock()
        self.stop = False
        self.sweep_on_exit = True                # False when removed from a cluster that goes on
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.parent_pid = setup.get("parent_pid") or 0
        self.last_from_head = time.monotonic()
        self.client = None
        self.actor_procs = ActorProcesses(setup)      # actors of the head started on this host (control thread)

    # ------------------------------------------------------------ life cycle
    def _report(self, line: str) -> None:
        """Tell whoever started this engine and waits (``jpar start --address``: launcher.start_engines)
        whether it joined, on the pipe it passed; once, then the pipe is closed."""
        fd = self.setup.pop("status_fd", None)
        if fd is None:
            return
        try:
            os.write(fd, (line + "\n").encode())
        except OSError:   # nobody reads any more
            pass
        finally:
            os.close(fd)

    def run(self) -> None:
        res = self.setup.get("resources", {})
        hello = P.EngineHello(self.pid, self.hostname, self.setup.get("node") or self.hostname, res)
        until = float(self.setup.get("rejoin_until", 0))
        if until:
            welcome = self._hello_again(hello, until)
        else:
            self.work.send(hello)
            welcome = self._welcome(time.monotonic() + float(self.setup.get("start_timeout_s", 30)))
        if welcome is None:
            if self._orphaned():
                return
            log.error("no welcome from the head at %s; exiting", self.setup["head"])
            self._report(f"no welcome from the head at {self.setup['head']} within "
                         f"{float(self.setup.get('start_timeout_s', 30)):g} s")
            return
        self.engine_id = welcome.engine_id
        self._report(f"joined as engine {self.engine_id}")
        self.store = self._attach_store()
        context.set_current(engine_id=self.engine_id, node=self.setup.get("node") or self.hostname)
        context.set_cancel_check(lambda task_id: task_id in self.cancelled)
        self.heartbeat_s = welcome.heartbeat_s
        self.dead_after_s = welcome.dead_after_s
        # Pings with a TTL of dead_after_s - heartbeat_s and no data after one message: the head drops
        # this connection that long after our pings stop (a cut link, a lost host), GIL or not.
        self.live = transport.connect_dealer(
            self.setup["head"], self.signer, identity=self.identity + b"/live",
            heartbeat=transport.liveness_heartbeat(self.heartbeat_s, self.dead_after_s))
        self.live.send(P.Heartbeat())
        sys.stdout = TaskStream(self, "stdout")
        sys.stderr = TaskStream(self, "stderr")
        signal.signal(signal.SIGINT, self._on_sigint)
        from ... import backends
        backends.set_engine_client(self._make_client)
        ctl = threading.Thread(target=self._control_loop, name="jpar-engine-ctl", daemon=True)
        ctl.start()
        spin = float(self.setup.get("spin_s", 0.0))
        busy_until = 0.0
        try:
            while not self.stop:
                # keep polling briefly after work: waking a sleeping process is the slowest part of a hop
                idle_wait = 0 if self.queue or time.perf_counter() < busy_until else 200
                self._pump(timeout_ms=idle_wait)
                if not self.queue:
                    reap_children()
                if self.queue:
                    busy_until = time.perf_counter() + spin
                while self.queue and not self.stop:
                    self._run_next()
                    self._pump(timeout_ms=0)
                    if len(self.done) >= len(self.queue) or len(self.done) >= 256:
                        self._flush()  # geometric batching: eager when the queue runs low
                self._flush()
        finally:
            self.stop = True
            if self.sweep_on_exit:
                self.store.sweep_node()   # Shutdown: the cluster is over (the head sweeps too, on its host)
            self.store.close()
            if self.client is not None:
                self.client.close()
            self.work.close()
            self.live.close()
            for ch in self.push.values():
                ch.close()
            stop_descendants()

    def _orphaned(self) -> bool:
        return bool(self.parent_pid) and os.getppid() != self.parent_pid

    # ------------------------------------------------------------ rejoining after a lost link
    # An engine of another host (started by `jpar start --address`, no parent to follow, its head off
    # loopback) whose head went silent was declared dead there, its work moved elsewhere. It becomes a new engine in the
    # same process (exec: whoever started it still knows its pid) that joins again once the head
    # answers, for up to rejoin_s; nothing of the old engine's state survives, so nothing runs twice.
    def _rejoin(self) -> None:
        setup = {k: v for k, v in self.setup.items() if k != "status_fd"}
        setup["rejoin_until"] = time.time() + float(setup["rejoin_s"])
        try:
            r, w = os.pipe()
            os.write(w, (json.dumps(setup) + "\n").encode())
            os.close(w)
            os.dup2(r, 0)
            log.warning("engine %d lost its head; trying to join it again for %g s", self.engine_id, setup["rejoin_s"])
            os.execv(sys.executable, [sys.executable, "-m", "jpar.runtime.engine.engine"])
        except OSError as exc:
            log.error("cannot rejoin (%s); engine exits", exc)

    def _hello_again(self, hello: P.EngineHello, until: float):
        """A rejoining engine's hello, sent only onto a live connection (the socket queues nothing
        while the link is down, so the head gets one hello, not a backlog), repeated until a welcome."""
        while time.time() < until:
            if not self.work.send(hello, nowait=True):
                time.sleep(0.2)
                continue
            welcome = self._welcome(time.monotonic() + float(self.setup.get("start_timeout_s", 30)))
            if welcome is not None:
                return welcome
        return None

    def _welcome(self, deadline: float) -> P.EngineWelcome | None:
        """The head's answer to our hello, or None by ``deadline`` (or once this engine is orphaned)."""
        while time.monotonic() < deadline:
            msg = self.work.recv(timeout_ms=200)
            if self._orphaned():
                return None
            if isinstance(msg, P.EngineWelcome):
                return msg
        return None

    def _attach_store(self):
        """This node's object store; mappings stay cached, so tasks reusing a ref pay no page faults."""
        from ..store import object_store

        settings = self.setup.get("store")
        if settings is None:
            from ...config import Config

            settings = object_store.store_settings(Config.from_env())
        # an engine joining a head on another host serves its objects on an address that routes there
        settings = dict(settings, bind_host=transport.callback_host(self.setup["head"],
                                                                     settings.get("bind_host", transport.LOOPBACK)),
                        peer=self.setup["head"])
        store = object_store.attach(bytes.fromhex(self.setup["key"]), self.setup.get("node") or self.hostname,
                                    settings)
        store.cache_bytes = store.capacity
        return store

    # ------------------------------------------------------------ messages from the head
    def _pump(self, timeout_ms: int) -> None:
        msg = self.work.recv(timeout_ms=timeout_ms)
        while msg is not None:
            self._handle(msg)
            msg = self.work.recv_nowait()

    def _handle(self, msg: P.Message) -> None:
        self.last_from_head = time.monotonic()
        t = type(msg)
        if t is P.Dispatch:
            self.queue.extend(msg.tasks)
            wanted = self.wanted
            for rec in msg.tasks:
                if rec.deps:
                    for d in rec.deps:
                        if d[1] == P.LOCAL:
                            wanted[d[0]] = wanted.get(d[0], 0) + 1
        elif t is P.Define:
            self.blobs[msg.fn_id] = msg.blob
        elif t is P.DriverInfo:
            self.owners[msg.client_no] = msg.endpoint
        elif t is P.Shutdown:
            self.sweep_on_exit = msg.cluster_over
            self.stop = True

    # ------------------------------------------------------------ running tasks
    def _run_next(self) -> None:
        self._run(self.queue.popleft())

    def _run(self, rec: P.DispatchRecord) -> None:
        if rec.task_id in self.cancelled:
            self.cancelled.discard(rec.task_id)
            if rec.deps and self.wanted:
                self._chained_values(rec)   # what it waited for here is wanted by one task fewer
            return
        if rec.deps and self.wanted and any(d[1] == P.LOCAL for d in rec.deps):
            rec = self._chained_values(rec)
            if rec is None:
                return
        if not self.give_backs.start(rec.task_id):
            return
        self.running.append(rec)
        context.set_current(task_id=rec.task_id)
        gpu_env = None
        if rec.gpu_ids:
            gpu_env = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in rec.gpu_ids)
        status, objects = P.OK, ()
        t0 = time.perf_counter()
        returned = False
        fetch = 0.0
        try:
            fn = self._function(rec.fn_id)
            args, kwargs, fetch = self._arguments(rec)
            value = fn(*args, **kwargs)
            returned = True
            exit_if_forked(True)
            objects = self._split_returns(rec, value)
        except _Cancel:
            status = -1
        except KeyboardInterrupt:
            status = -1 if rec.task_id in self.cancelled else P.ERROR
            if status == P.ERROR:
                objects = self._error(rec, sys.exc_info()[1])
        except BaseException as exc:  # the user's exception is the task's result
            if self._retryable(rec, exc):
                status = P.RETRY
            else:
                status = P.ERROR
                objects = self._error(rec, exc)
        finally:
            exit_if_forked(returned)
            self.running.pop()
            context.set_current(task_id=self.running[-1].task_id if self.running else None)
            if self.client is not None and self.running:
                self.client.current_task = self.running[-1].task_id
            if gpu_env is not None or rec.gpu_ids:
                if gpu_env is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = gpu_env
        took = time.perf_counter() - t0
        if status == -1:  # cancelled: the head already told the owner
            self.cancelled.discard(rec.task_id)
            self.done.append(P.DoneRecord(rec.task_id, rec.attempt, P.ERROR, (), took, fetch))
            return
        if status != P.RETRY:
            self.results.setdefault(rec.owner, []).extend(P.ObjectRecord(*o) for o in objects)
            recent, wanted = self.recent, self.wanted
            for o in objects:
                recent[o[0]] = (o[1], o[2])
                if wanted and o[0] in wanted:
                    self.produced[o[0]] = (o[1], o[2])
            while len(recent) > RECENT_VALUES:
                del recent[next(iter(recent))]
        self.done.append(P.DoneRecord(rec.task_id, rec.attempt, status, objects, took, fetch))

    def _chained_values(self, rec: P.DispatchRecord):
        """A chained task reached (or skipped): its LOCAL arguments from the values made here, each
        kept only until the last task wanting it has it. None, and the task given back to the head,
        where a value was not made here or failed (the head then does what it would have)."""
        deps, here = [], True
        for d in rec.deps:
            if d[1] != P.LOCAL:
                deps.append(d)
                continue
            oid = d[0]
            got = self.produced.get(oid) or self.recent.get(oid)
            left = self.wanted.get(oid, 0) - 1
            if left > 0:
                self.wanted[oid] = left
            else:
                self.wanted.pop(oid, None)
                self.produced.pop(oid, None)
            if got is None or got[0] != P.OK:
                here = False
            else:
                deps.append((oid, got[0], got[1]))
        if not here:
            self.given_back.append(rec.task_id)
            return None
        return rec._replace(deps=tuple(deps))

    def _function(self, fn_id: int):
        fn = self.functions.get(fn_id)
        if fn is None:
            fn = self.functions[fn_id] = pickle.loads(self.blobs.pop(fn_id))
        return fn

    def _arguments(self, rec: P.DispatchRecord):
        """``(args, kwargs, fetch)``: ``fetch`` is the seconds spent resolving ref arguments (mapping
        them from this host's store, pulling them from another host's, unpickling inline copies),
        reported to the head for the dashboard's transfer phase; tasks without refs read no clock."""
        args, kwargs = pickle.loads(rec.args)
        fetch = 0.0
        if rec.deps:
            from ...refs import ArgRef

            self.store.trim_cache()
            t0 = time.perf_counter()
            values = {}
            for oid, status, blob in rec.deps:
                values[oid] = serialization.load_result(status, blob)
            fetch = time.perf_counter() - t0
            once = [a.id for a in args if type(a) is ArgRef and a.once]
            args = tuple(values[a.id] if type(a) is ArgRef else a for a in args)
            if kwargs:
                once += [v.id for v in kwargs.values() if type(v) is ArgRef and v.once]
                kwargs = {k: (values[v.id] if type(v) is ArgRef else v) for k, v in kwargs.items()}
            if once:   # by-value arguments: no later task maps them, so do not keep their mappings
                self.store.uncache(blob for oid, _, blob in rec.deps if oid in once)
                self.done_first = True
        return args, kwargs, fetch

    def _split_returns(self, rec: P.DispatchRecord, value) -> tuple:
        n = rec.num_returns
        if n == 1:
            return ((rec.task_id, P.OK, self._dump_result(rec, value, 0)),)   # large: a location
        try:
            values = list(value)
        except TypeError:
            raise ValueError(f"Task {rec.name} returned one value (of type {type(value).__name__}), but "
                             f"num_returns={n} expected {n}: return a tuple or list of {n} values, or drop "
                             "num_returns.") from None
        if len(values) != n:
            raise ValueError(f"Task {rec.name} returned {len(values)} values, but num_returns={n} expected {n}: "
                             f"return a tuple or list of {n} values.")
        return tuple((rec.task_id + i, P.OK, self._dump_result(rec, v, i)) for i, v in enumerate(values))

    def _dump_result(self, rec: P.DispatchRecord, value, i: int) -> bytes:
        """One return value for its slot; one that cannot be pickled says whose return value it is."""
        try:
            return self.store.dumps(value, rec.task_id + i)
        except JparError:   # the store's own errors (full store) say what they are
            raise
        except Exception as exc:
            what = "return value" if rec.num_returns == 1 else f"return value {i}"
            raise SerializationError(
                f"The {what} of task {rec.name} (of type {type(value).__name__}) could not be pickled to travel back: "
                f"{type(exc).__name__}: {exc}. Return plain data (numbers, strings, lists, dicts, arrays), not "
                "locks, sockets, open files or generators; keep such objects inside the task.") from None

    def _error(self, rec: P.DispatchRecord, exc: BaseException) -> tuple:
        blob = serialization.dumps_exception(exc, rec.name, skip_frames=_ENGINE_FRAMES)
        return tuple((rec.task_id + i, P.ERROR, blob) for i in range(rec.num_returns))

    def _retryable(self, rec: P.DispatchRecord, exc: BaseException) -> bool:
        r = rec.retry_exceptions
        if not r or rec.attempt >= rec.max_retries or not isinstance(exc, Exception):
            return False
        if r is True:
            return True
        return isinstance(exc, pickle.loads(r))

    def _flush(self) -> None:
        """Send finished tasks' output, results (to owners) and done notices (to the head)."""
        if self.output:
            self.flush_output()
        if self.done_first and self.done:
            # a task here read a value passed by value: the head frees (recycles) its segment on
            # this notice, which then reaches it before the owner's next large write asks for one
            self.done_first = False
            done, self.done = self.done, []
            self.work.send(P.TaskDone(done))
        if self.results:
            results, self.results = self.results, {}
            with self.push_lock:
                for owner, objects in results.items():
                    ch = self._owner_channel(owner)
                    if ch is not None:
                        ch.send(P.Results(objects, self.engine_id), nowait=True)
        if self.done:
            done, self.done = self.done, []
            self.work.send(P.TaskDone(done))
        if self.given_back:              # after the TaskDone of the task ahead: the head knows its end first
            back, self.given_back = self.given_back, []
            self.work.send(P.GiveBack(back))

    def _owner_channel(self, owner: int):
        ch = self.push.get(owner)
        if ch is None:
            ep = self.owners.get(owner)
            if ep is None:
                return None
            ch = self.push[owner] = transport.connect_push(ep, self.signer)
        return ch

    # ------------------------------------------------------------ output
    def add_output(self, stream: str, text: str) -> None:
        rec = self.running[-1] if self.running else None
        if rec is None:
            return
        with self.output_lock:
            out = self.output
            if out:
                owner, last = out[-1]
                if last.task_id == rec.task_id and last.stream == stream:
                    out[-1] = (owner, last._replace(text=last.text + text))  # print() writes text, then "\n"
                    return
            out.append((rec.owner, P.OutputRecord(rec.task_id, self.engine_id, self.pid, rec.name, stream, text)))

    def flush_output(self) -> None:
        # push_lock spans taking the chunks and sending them, so the main thread cannot send a
        # task's result between the two: a task's output always reaches its owner first.
        with self.push_lock:
            with self.output_lock:
                pending, self.output = self.output, []
            if not pending:
                return
            by_owner: dict[int, list] = {}
            for owner, chunk in pending:
                by_owner.setdefault(owner, []).append(chunk)
            for owner, chunks in by_owner.items():
                ch = self._owner_channel(owner)
                if ch is not None:
                    ch.send(P.Output(chunks), nowait=True)

    # ------------------------------------------------------------ control thread
    def _control_loop(self) -> None:
        from . import metrics

        ctl = transport.connect_dealer(self.setup["head"], self.signer, identity=self.identity + b"/ctl")
        sampler = metrics.Sampler()
        interval = float(self.setup.get("metrics_interval_s", 1.0))
        busy = min(interval, 0.25)      # while a task runs: 4 samples a second, so CPU views are live
        last_sample = -interval
        turn = time.monotonic()         # when this loop last ran (see the silence check below)
        self.last_from_head = max(self.last_from_head, turn)   # silence counts from when it can listen
        try:
            while not self.stop:
                msg = ctl.recv(timeout_ms=50)
                if msg is not None:
                    self.last_from_head = time.monotonic()
                    if isinstance(msg, P.CancelTask):
                        self._cancel(msg.task_id, msg.force)
                    elif isinstance(msg, P.Revoke):
                        ctl.send(P.Revoked(self.give_backs.grant(msg.task_ids)))
                    elif isinstance(msg, P.StartActorProcess):
                        self.actor_procs.start(msg.actor, ctl)
                    elif isinstance(msg, P.StopActorProcess):
                        self.actor_procs.stop(msg.actor_id, msg.incarnation)
                    elif isinstance(msg, P.Shutdown):
                        self.sweep_on_exit = msg.cluster_over
                        self.stop = True
                        break
                if self.actor_procs.procs:
                    self.actor_procs.report_exits(ctl)
                if self.output:
                    self.flush_output()
                now = time.monotonic()
                if now - last_sample >= (busy if self.running else interval):
                    last_sample = now
                    cur = self.running[-1].task_id if self.running else 0
                    s = sampler.sample()
                    ctl.send(P.Metrics(s.cpu_percent, s.rss, s.shared, cur))
                    self.store.trim_cache()   # let go of freed segments so they can be recycled
                if now - turn > self.heartbeat_s:
                    # this thread could not run (a task held the GIL): the head's silence meanwhile
                    # proves nothing, so it gets a full dead_after_s from now
                    self.last_from_head = max(self.last_from_head, now)
                turn = now
                if self._orphaned() or now - self.last_from_head > self.dead_after_s:
                    log.error("head gone (silent %.1fs); engine exits", now - self.last_from_head)
                    self.store.sweep_node()
                    stop_descendants(grace_s=0)
                    if not self.parent_pid and float(self.setup.get("rejoin_s", 0)) > 0 \
                            and transport.needs_curve(self.setup["head"]):   # a network between them
                        self._rejoin()
                    os._exit(3)
        finally:
            ctl.close()

    def _cancel(self, task_id: int, force: bool) -> None:
        running = [r.task_id for r in self.running]
        if task_id in running:
            if force:
                stop_descendants(grace_s=0)   # what the task started goes with it
                os._exit(4)  # the head requeues what this engine held, except the cancelled task
            self.cancelled.add(task_id)
            os.kill(self.pid, signal.SIGINT)
        else:
            self.cancelled.add(task_id)

    def _on_sigint(self, signum, frame) -> None:
        if self.running and self.running[-1].task_id in self.cancelled:
            raise _Cancel()

    # ------------------------------------------------------------ nested API use inside tasks
    def _make_client(self):
        """The backend tasks use for nested submissions (over this engine's own client, whose
        waits run other tasks inline)."""
        if self.client is None:
            from ...backends.native import NativeBackend
            from ...config import Config
            from ..driver.driver import Driver

            conn = {"key": self.setup["key"], "head": self.setup["head"], "head_ipc": self.setup["head"],
                    "rundir": self.setup.get("rundir", ""), "local": self.setup.get("head", "").startswith("ipc://")}
            self.client = Driver(conn, Config.from_env(), kind="engine-client")
            self.client.wait_hook = self._nested_wait
            # which running task submitted each task (until its result arrives): see _nested_wait
            self.client.submit_context = lambda tid: self.client.current_task
            NativeBackend(self.client)
        if self.running:
            self.client.current_task = self.running[-1].task_id
        return self.client.backend

    def _nested_wait(self, pred, timeout: float | None) -> None:
        """Wait inside a task for other results, running the tasks it submitted meanwhile.

        Only its own children run here, on top of it: they cannot wait for it (its result's ref
        belongs to its caller). Any other task could, and would then wait forever for the task
        beneath it on this stack, so the head runs those on other engines (see Scheduler.blocked).
        A cancelled task is stopped here too, even when a child ran above it when the signal came."""
        rec = self.running[-1] if self.running else None
        if rec is not None:
            self.work.send(P.Blocked(rec.task_id, True))
        deadline = None if timeout is None else time.monotonic() + timeout
        submitted_by = self.client.task_context
        stranded_since = None
        try:
            while not pred() and not self.stop:
                if rec is not None and rec.task_id in self.cancelled:
                    raise _Cancel()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                child = None
                if rec is not None and self.queue and submitted_by:
                    child = next((r for r in self.queue if submitted_by.get(r.task_id) == rec.task_id), None)
                if child is None and self.queue:
                    # Work the head sent before it knew this task blocked, and has not taken back: left
                    # queued, it can hold up what this task waits for (seen: two fan-out parents, each
                    # waiting on children queued behind the other). Run it after a grace period in
                    # which the head's revoke would have arrived.
                    now = time.monotonic()
                    if stranded_since is None:
                        stranded_since = now
                    elif now - stranded_since >= STRANDED_S:
                        child = self.queue[0]
                if child is not None:
                    stranded_since = None
                    self.queue.remove(child)
                    self._run(child)
                    self._flush()
                    self._pump(timeout_ms=0)
                else:
                    self._flush()
                    self._pump(timeout_ms=1)
                if self.client.closed:
                    break
        finally:
            if rec is not None:
                self.work.send(P.Blocked(rec.task_id, False))


STRANDED_S = 0.2   # how long a blocked task waits for the head to take back work it cannot run


def main() -> None:
    setup = json.loads(sys.stdin.readline())
    sys.stdin.close()
    run(setup)


def run(setup: dict) -> None:
    """Run an engine, or with ``setup["actor"]`` an actor process (also entered in a fork of the
    head's actor-process template, see forker.py)."""
    logging.basicConfig(level=setup.get("log_level", "WARNING"),
                        format=f"%(asctime)s engine[{os.getpid()}] %(levelname)s %(message)s")
    guard_process()
    keys.apply_settings(setup.get("security"))   # off loopback: CURVE with this host's client keys
    if setup.get("actor"):  # actor mode: this process hosts exactly one actor
        from . import actor_host

        # an actor dies with the head that started it, even while it is still starting up
        if setup.get("parent_pid") and _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) \
                and os.getppid() != setup["parent_pid"]:
            return

        actor_host.main(setup)
        return
    Engine(setup).run()


if __name__ == "__main__":
    main()

