"""What front ends (notebook layer, dashboard, sidebar) ask of a Ray cluster: the submit hook and
output handler, the event stream, status, engines, object-store figures.

Output and task notices reach the driver through its :class:`~.worker.Sink` actor, which a pump
thread long-polls; events are built from what the driver sees (submissions, cancels, results)
plus the workers' running/done/failed notices (sent only while someone subscribes), and a
watcher thread adds "metrics" per engine every second while a subscription is open.
"""

from __future__ import annotations

import collections
import queue
import sys
import threading
import time
from typing import Any, Callable

import ray

from .. import FrontEnd
from ...errors import ResourceError
from ...events import Event, OutputRecord
from . import worker as W

__all__ = ["RayFrontEnd", "Subscription"]

_RECENT = 20_000          # contexts of finished tasks kept for output that arrives late


class RayFrontEnd(FrontEnd):
    def __init__(self, backend: Any):
        self.b = backend
        self.submit_hook: Callable | None = None
        self.output_handler: Callable | None = None
        self.lock = threading.RLock()
        self.contexts: dict = {}                    # task id -> (context, name, ray ref): unfinished, hook saw
        self.recent: collections.OrderedDict = collections.OrderedDict()   # finished: task id -> context
        self.names: collections.OrderedDict = collections.OrderedDict()    # task id -> name (bounded)
        self.subs: list = []
        self.tracked: dict = {}                     # task id -> ray ref: submitted while watched, no end seen
        self.placed: dict = {}                      # task id -> (engine, ray ref)
        self.engines: list | None = None
        self.engine_lock = threading.Lock()
        self.sink = None
        self.stop_event = threading.Event()
        self.pump: threading.Thread | None = None
        self.watcher: threading.Thread | None = None
        self._mid_line: set = set()

    # -- lifecycle (driver only) ----------------------------------------------------------------
    def start(self, sink: Any) -> None:
        self.sink = sink
        self.pump = threading.Thread(target=self._pump, name="jpar-ray-output", daemon=True)
        self.pump.start()

    def stop(self) -> None:
        self.stop_event.set()
        for s in list(self.subs):
            s.closed = True
        for t in (self.pump, self.watcher):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=5)
        for h in (self.engines or []) + ([self.sink] if self.sink is not None else []):
            try:
                ray.kill(h)
            except Exception:
                pass
        self.engines = None

    # -- hooks ----------------------------------------------------------------------------------

    def watching(self) -> bool:
        return bool(self.subs)

    # -- what the backend tells us --------------------------------------------------------------
    def submitted(self, task_id: int, name: str, rr: Any, deps: list, engine: int | None, actor: int | None = None):
        hook = self.submit_hook
        if hook is not None and self.b.is_driver:
            try:
                ctx = hook(task_id)
            except Exception:
                ctx = None
            self.contexts[task_id] = (ctx, name, rr)
        if engine is not None:
            self.placed[task_id] = (engine, rr)
        watched = self.subs
        cur = W.current_task()
        if watched or hook is not None:
            self.names[task_id] = name
            if len(self.names) > 200_000:
                for _ in range(100_000):
                    self.names.popitem(last=False)
        if watched or (cur is not None and cur.flags & W.EV):
            info = {"name": name, "deps": list(deps), "parent": cur.task_id if cur is not None else None,
                    "engine": engine, "actor": actor}
            ev = Event(time.time(), "task", task_id, "waiting" if deps else "queued", info)
            if watched:
                self.tracked[task_id] = rr
                self._emit(ev)
            else:
                W.outbox.add(("ev", *ev))

    def fetched(self, refs: list) -> None:
        if self.contexts:
            for r in refs:
                self._finish(r.id)

    def cancelled(self, task_id: int) -> None:
        if self.subs:
            self.tracked.pop(task_id, None)
            self._emit(Event(time.time(), "task", task_id, "cancelled", {"name": self.names.get(task_id, "")}))

    def name_of(self, task_id: int) -> str:
        c = self.contexts.get(task_id)
        return c[1] if c is not None else self.names.get(task_id, "")

    def _finish(self, task_id: int) -> None:
        c = self.contexts.pop(task_id, None)
        if c is not None:
            self.recent[task_id] = c[0]
            while len(self.recent) > _RECENT:
                self.recent.popitem(last=False)

    def _context(self, task_id: int) -> Any:
        c = self.contexts.get(task_id)
        if c is not None:
            return c[0]
        return self.recent.get(task_id)

    def _prune(self) -> None:
        """Forget the contexts of tasks that finished (their refs are ready)."""
        items = list(self.contexts.items())
        if not items:
            return
        rrs = [c[2] for _, c in items]
        try:
            ready, _ = ray.wait(rrs, num_returns=len(rrs), timeout=0, fetch_local=False)
        except Exception:
            return
        ready = set(ready)
        for tid, c in items:
            if c[2] in ready:
                self._finish(tid)

    # -- the output pump ------------------------------------------------------------------------
    def _pump(self) -> None:
        last_prune = 0.0
        while not self.stop_event.is_set():
            try:
                recs = ray.get(self.sink.take.remote(0.5), timeout=30)
            except Exception:
                if self.stop_event.wait(0.5):
                    break
                continue
            for rec in recs:
                try:
                    self._dispatch(rec)
                except Exception:
                    pass
            if self.b._recancel:
                self.b.recancel()
            now = time.monotonic()
            if self.contexts and now - last_prune > 0.5:
                last_prune = now
                self._prune()

    def _dispatch(self, rec: tuple) -> None:
        if rec[0] == "out":
            _, tid, engine, pid, name, stream, text, root = rec
            ctx = self._context(tid)
            if ctx is None and root and root != tid:
                ctx = self._context(root)
            chunk = OutputRecord(tid, engine, pid, name, stream, text)
            handler = self.output_handler
            if handler is not None:
                handler(chunk, ctx)
            else:
                self._print(chunk)
        elif rec[0] == "ev":
            ev = Event(*rec[1:])
            if ev.kind == "task" and ev.state in ("done", "failed"):
                self.tracked.pop(ev.key, None)
            self._emit(ev)

    def _print(self, chunk: OutputRecord) -> None:
        """No handler: print like Ray does, each line prefixed with the task and process."""
        stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
        prefix = f"({chunk.name} pid={chunk.pid}, engine={chunk.engine_id}) "
        key = (chunk.task_id, chunk.stream)
        parts = []
        for line in chunk.text.splitlines(keepends=True):
            parts.append(line if key in self._mid_line else prefix + line)
            if line.endswith("\n"):
                self._mid_line.discard(key)
            else:
                self._mid_line.add(key)
        try:
            stream.write("".join(parts))
            stream.flush()
        except (ValueError, OSError):
            pass

    # -- events ---------------------------------------------------------------------------------
    def _emit(self, ev: Event) -> None:
        for s in self.subs:
            s.q.put(ev)

    def subscribe_events(self) -> "Subscription":
        sub = Subscription(self)
        with self.lock:
            self.subs = self.subs + [sub]
            if self.watcher is None or not self.watcher.is_alive():
                self.watcher = threading.Thread(target=self._watch, name="jpar-ray-events", daemon=True)
                self.watcher.start()
        return sub

    def unsubscribe(self, sub: "Subscription") -> None:
        with self.lock:
            self.subs = [s for s in self.subs if s is not sub]

    def _watch(self) -> None:
        """While someone subscribes: metrics per engine every second, and the end of tasks whose
        wrapper sent no notice (a failed dependency, a crash)."""
        seen_ready: set = set()
        while self.subs and not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                for row in self.engine_rows(started_only=False, timeout=10):
                    info = dict(row)
                    self._emit(Event(time.time(), "metrics", row["id"], "sample", info))
            except Exception:
                pass
            try:
                seen_ready = self._ended_quietly(seen_ready)
            except Exception:
                pass
            self.stop_event.wait(max(0.05, 1.0 - (time.monotonic() - t0)))
        with self.lock:
            self.watcher = None

    def _ended_quietly(self, seen_ready: set) -> set:
        items = list(self.tracked.items())
        if not items:
            return set()
        rrs = [rr for _, rr in items]
        ready, _ = ray.wait(rrs, num_returns=len(rrs), timeout=0, fetch_local=False)
        ready = set(ready)
        now_ready = set()
        for tid, rr in items:
            if rr not in ready:
                continue
            if tid not in seen_ready:      # give the worker's notice a round to arrive
                now_ready.add(tid)
                continue
            if self.tracked.pop(tid, None) is None:
                continue
            state, info = "done", {"name": self.names.get(tid, "")}
            try:
                ray.get(rr, timeout=0)
            except Exception as exc:
                err = self.b.translate(exc, [])
                from ...errors import TaskCancelledError

                state = "cancelled" if isinstance(err, TaskCancelledError) else "failed"
                cause = getattr(err, "cause", None) or err
                info["error"] = f"{type(cause).__name__}: {cause}"[:300]
            self._emit(Event(time.time(), "task", tid, state, info))
        return now_ready

    # -- engines --------------------------------------------------------------------------------
    def _engine_name(self, i: int) -> str:
        return f"jpar-engine-{self.b.cluster_id}-{i}"

    def ensure_engines(self) -> list:
        """The engine actors: started by the driver on first use (one per CPU, pinned to its node);
        inside a task, the driver's, found by name."""
        with self.engine_lock:
            if self.engines is None and not self.b.is_driver:
                handles = []
                while True:
                    try:
                        handles.append(ray.get_actor(self._engine_name(len(handles)), namespace=self.b.namespace))
                    except ValueError:
                        break
                if not handles:
                    raise ResourceError("options(placement=...) inside a task needs the driver's engines, and the "
                                        "driver has not started them: use placement from the driver first.")
                self.engines = handles
            if self.engines is None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                handles = []
                for node in sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeID"]):
                    for _ in range(int(node.get("Resources", {}).get("CPU", 0))):
                        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                        handles.append(W.Engine.options(
                            scheduling_strategy=strategy, name=self._engine_name(len(handles)),
                            namespace=self.b.namespace).remote(len(handles)))
                if not handles:
                    handles.append(W.Engine.options(name=self._engine_name(0), namespace=self.b.namespace).remote(0))
                self.engines = handles
            return self.engines

    def engine_handle(self, index: int) -> Any:
        engines = self.ensure_engines()
        if not 0 <= index < len(engines):
            raise ResourceError(f"options(placement={index}): no such engine; the Ray backend's engines are "
                                f"0..{len(engines) - 1} (one per CPU of the cluster, see jpar.hooks.engines()).")
        return engines[index]

    def engine_rows(self, started_only: bool, timeout: float = 30.0) -> list:
        if self.engines is None and started_only:
            return []
        first = self.engines is None
        engines = self.ensure_engines()
        rows = ray.get([e.info.remote() for e in engines], timeout=max(timeout, 120.0) if first else timeout)
        queued = collections.Counter()
        placed = list(self.placed.items())
        if placed:
            rrs = [p[1] for _, p in placed]
            ready, _ = ray.wait(rrs, num_returns=len(rrs), timeout=0, fetch_local=False)
            ready = set(ready)
            for tid, (eng, rr) in placed:
                if rr in ready:
                    self.placed.pop(tid, None)
                else:
                    queued[eng] += 1
        for r in rows:
            r["queued"] = max(0, queued[r["id"]] - (1 if r.get("task") else 0))
        return rows

    # -- the FrontEnd interface -----------------------------------------------------------------
    def cancel_tasks(self, task_ids, force: bool) -> None:
        for tid in list(task_ids):
            self.b.cancel_id(int(tid), force, True)

    def cancel_driver_tasks(self, client_no: int | None, force: bool, timeout: float) -> int:
        if client_no is not None and client_no != self.b.client_no:
            raise LookupError(f"No client {client_no} on this Ray backend: only this process's own tasks "
                              f"(client {self.b.client_no}) can be cancelled from here.")
        self._prune()
        ids = list(self.contexts)
        for tid in ids:
            self.b.cancel_id(tid, force, True)
        return len(ids)

    def task_ids_done(self, task_ids) -> list:
        ids = list(task_ids)
        pairs = [(t, self.b.table.lookup(t)) for t in ids]
        rrs = [rr for _, rr in pairs if rr is not None]
        if not rrs:
            return []
        ready, _ = ray.wait(rrs, num_returns=len(rrs), timeout=0, fetch_local=False)
        ready = set(ready)
        return [t for t, rr in pairs if rr is not None and rr in ready]

    def status(self, timeout: float, start_engines: bool = True) -> dict:
        """The native head's shape; the engines (started here on first call) with their CPU and RSS."""
        b = self.b
        self._prune()
        engines = self.engine_rows(started_only=not start_engines, timeout=timeout)
        return {"backend": "ray", "cluster_id": b.cluster_id, "head": b.address, "engines": engines,
                "resources": b.cluster_resources(), "available": b.available_resources(),
                "nodes": [{"node": n["NodeID"], "host": n.get("NodeManagerAddress", ""),
                           "resources": n.get("Resources", {})} for n in ray.nodes() if n.get("Alive")],
                "actors": [], "clients": [{"client_no": b.client_no, "pending": len(self.contexts)}],
                "scheduler": {"tasks": {"pending": len(self.contexts)}},
                "uptime_s": time.time() - b.started, "object_store": self.store_statistics(timeout)}

    def task_error(self, task_id: int) -> str | None:
        rr = self.b.table.lookup(task_id)
        if rr is None:
            return None
        ready, _ = ray.wait([rr], timeout=0, fetch_local=False)
        if not ready:
            return None
        try:
            ray.get(rr, timeout=0)
        except Exception as exc:
            err = self.b.translate(exc, [])
            cause = getattr(err, "cause", None) or err
            return f"{type(cause).__name__}: {cause}"
        return None

    def store_statistics(self, timeout: float) -> dict:
        """``{node: {host, bytes_used, capacity, available, spilled_bytes, object_count, objects}}``.

        With grpcio installed, each raylet's own store figures (Ray's node stats); without it (Ray's
        minimal install), the sizes and locations of the objects this process holds refs to
        (``ray.experimental.get_object_locations``): what this driver keeps in each node's store."""
        out = {}
        for n in ray.nodes():
            if n.get("Alive"):
                out[n["NodeID"]] = {"node": n["NodeID"], "host": n.get("NodeManagerAddress", ""),
                                    "capacity": int(n.get("Resources", {}).get("object_store_memory", 0)),
                                    "bytes_used": 0, "spilled_bytes": 0, "object_count": 0, "objects": [],
                                    "scope": "this driver's objects"}
        try:
            from ray._private.internal_api import node_stats

            for n in ray.nodes():
                if n.get("Alive"):
                    s = node_stats(n["NodeManagerAddress"], n["NodeManagerPort"], include_memory_info=False).store_stats
                    row = out[n["NodeID"]]
                    row.update(bytes_used=int(s.object_store_bytes_used), spilled_bytes=int(s.spilled_bytes_total),
                               object_count=int(s.num_local_objects), scope="node")
                    row["capacity"] = int(s.object_store_bytes_avail) or row["capacity"]
        except Exception:   # no grpcio: count what this process's refs hold
            entries = list(self.b.table.refs.items())[:20_000]
            if entries:
                try:
                    locs = ray.experimental.get_object_locations([e[1][0] for e in entries], timeout_ms=int(timeout * 1000))
                except Exception:
                    locs = {}
                per_node: dict = collections.defaultdict(list)
                for jid, (rr, _n) in entries:
                    loc = locs.get(rr)
                    if not loc or not loc.get("object_size"):
                        continue
                    for node in loc.get("node_ids") or ():
                        per_node[node].append((int(loc["object_size"]), jid, bool(loc.get("did_spill"))))
                for node, objs in per_node.items():
                    row = out.get(node)
                    if row is None:
                        continue
                    row["bytes_used"] = sum(o[0] for o in objs if not o[2])
                    row["spilled_bytes"] = sum(o[0] for o in objs if o[2])
                    row["object_count"] = len(objs)
                    row["objects"] = [{"id": f"{jid:016x}", "size": size, "owner": self.b.client_no}
                                      for size, jid, _ in sorted(objs, reverse=True)[:10]]
        for row in out.values():
            row["available"] = max(0, row["capacity"] - row["bytes_used"])
        return out

    def release_now(self, timeout: float) -> None:
        self.b.table.drain()

    def driver_info(self) -> dict:
        b = self.b
        return {"cluster_id": b.cluster_id, "address": b.address, "client_no": b.client_no, "backend": "ray"}

    def pending_tasks(self) -> dict:
        self._prune()
        return {tid: (c[0], c[1]) for tid, c in list(self.contexts.items())}


class Subscription:
    """The Ray backend's event stream as seen from this process, from now on."""

    def __init__(self, fe: RayFrontEnd):
        self.fe = fe
        self.q: queue.Queue = queue.Queue()
        self.closed = False
        self.received = 0

    def poll(self, timeout: float = 0.25, max_events: int = 100_000) -> list:
        if self.closed:
            return []
        out = []
        try:
            out.append(self.q.get(timeout=max(0.0, timeout)) if timeout > 0 else self.q.get_nowait())
        except queue.Empty:
            return []
        while len(out) < max_events:
            try:
                out.append(self.q.get_nowait())
            except queue.Empty:
                break
        self.received += len(out)
        return out

    def __iter__(self):
        while not self.closed:
            yield from self.poll(0.25)

    def close(self) -> None:
        self.closed = True
        self.fe.unsubscribe(self)

    def __repr__(self) -> str:
        return f"RaySubscription({'closed' if self.closed else 'open'})"
