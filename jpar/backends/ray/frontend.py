"""What front ends (notebook layer, dashboard, sidebar) ask of a Ray cluster: the submit hook and
output handler, the event stream, status, engines, object-store figures.

Output and task notices reach the driver through its :class:`~.worker.Sink` actor, which a pump
thread long-polls; events are built from what the driver sees (submissions, cancels, results)
plus the workers' running/done/failed notices (sent only while someone subscribes), and a
watcher thread adds "metrics" per engine every second while a subscription is open.
"""

from __future__ import annotations

import collections
import itertools
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
LOCATE_MAX = 2_000        # newest refs whose objects the store's largest-objects list looks at (node stats)
LOCATE_TTL_S = 5.0        # how long one locate of them is used
LOCATE_LARGEST = 20       # objects kept from it (the dashboard shows 5)


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
        self._held_cache: tuple[float, list] = (-float("inf"), [])    # (monotonic time, rows): _held

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
        self.sink = None        # handles go while connected (see RayBackend._drop_ray_handles)
        self.tracked.clear()
        self.placed.clear()

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
            events = []
            for rec in recs:
                try:
                    ev = self._dispatch(rec)
                except Exception:
                    continue
                if ev is not None:
                    events.append(ev)
            if events:       # one queue item per batch for each subscriber (poll unpacks it)
                for sub in self.subs:
                    sub.q.put(events)
            if self.b._recancel:
                self.b.recancel()
            now = time.monotonic()
            if self.contexts and now - last_prune > 0.5:
                last_prune = now
                self._prune()

    def _dispatch(self, rec: tuple) -> Event | None:
        """Hand output to the handler; return an event record as an Event."""
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
            return ev
        return None

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

    def subscribe_events(self, summary: bool = False) -> "Subscription":
        """Every event (no summary stream on Ray: ``summary`` is False on the result)."""
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
                    slots = int(node.get("Resources", {}).get("CPU", 0))
                    for slot in range(slots):
                        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=True)
                        handles.append(W.Engine.options(
                            scheduling_strategy=strategy, name=self._engine_name(len(handles)),
                            namespace=self.b.namespace).remote(len(handles), slot, slots))
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
        """``{node: {host, bytes_used, capacity, available, spilled_bytes, object_count, objects, scope,
        objects_scope}}``.

        Each raylet's own store figures (its node stats, over gRPC: the ``ray`` extra installs grpcio),
        ``scope: "node"``; where that is not possible (Ray's minimal install), the sizes and locations
        of the objects this process holds refs to (and the largest of them), ``scope: "this driver's
        objects"``: locating every ref each second cost a dashboard's driver more than the node stats.
        ``objects`` (the largest objects, each under one node holding it) are this driver's in both
        cases, as ``objects_scope`` says: Ray tells no process the objects of the others; with node
        stats, only the newest ``LOCATE_MAX`` refs, located every ``LOCATE_TTL_S`` s (:meth:`_held`)."""
        out = {}
        for n in ray.nodes():
            if n.get("Alive"):
                out[n["NodeID"]] = {"node": n["NodeID"], "host": n.get("NodeManagerAddress", ""),
                                    "capacity": int(n.get("Resources", {}).get("object_store_memory", 0)),
                                    "bytes_used": 0, "spilled_bytes": 0, "object_count": 0, "objects": [],
                                    "scope": "this driver's objects", "objects_scope": "this driver's objects",
                                    "_addr": (n["NodeManagerAddress"], n["NodeManagerPort"])}
        stats = {node: _node_store_stats(*row.pop("_addr"), timeout) for node, row in out.items()}
        if any(s is None for s in stats.values()):
            self._driver_objects(out, timeout)
        else:
            for node, size, jid, spilled in self._held(timeout):
                row = out.get(node)
                if row is not None:
                    row["objects"].append({"id": jid, "size": size, "owner": self.b.client_no, "spilled": spilled})
                    row["objects_scope"] = f"the largest of this driver's newest {LOCATE_MAX} refs"
        for node, row in out.items():
            s = stats[node]
            if s is not None:
                row.update(bytes_used=int(s.object_store_bytes_used), spilled_bytes=int(s.spilled_bytes_total),
                           object_count=int(s.num_local_objects), scope="node")
                row["capacity"] = int(s.object_store_bytes_avail) or row["capacity"]
            row["available"] = max(0, row["capacity"] - row["bytes_used"])
        return out

    def _held(self, timeout: float) -> list:
        """``[(node, size, jid, spilled)]``: the ``LOCATE_LARGEST`` largest of the objects behind this
        process's newest ``LOCATE_MAX`` refs, located at most every ``LOCATE_TTL_S`` seconds (locating
        costs about a millisecond per hundred refs; the dashboard asks once a second). Objects whose
        refs were released or freed since the last locate are left out at each call."""
        t, rows = self._held_cache
        if time.monotonic() - t > LOCATE_TTL_S:
            table = self.b.table
            with table.lock:
                entries = [(jid, e[0]) for jid, e in itertools.islice(reversed(table.refs.items()), LOCATE_MAX)
                           if len(e) == 2]
            per_node = _locate(entries, timeout) or {}
            rows = sorted(((size, jid, spilled, node) for node, objs in per_node.items()
                           for size, jid, spilled in objs), reverse=True)[:LOCATE_LARGEST]
            rows = [(node, size, jid, spilled) for size, jid, spilled, node in rows]
            self._held_cache = (time.monotonic(), rows)
        refs = self.b.table.refs
        return [r for r in rows if len(refs.get(r[2]) or ()) == 2]     # a freed entry has a third item

    def _driver_objects(self, out: dict, timeout: float) -> None:
        """Fill ``out``'s rows with the objects this process holds refs to, per node."""
        entries = [(jid, e[0]) for jid, e in list(self.b.table.refs.items())[:20_000]]
        per_node = _locate(entries, timeout, every_copy=True)
        if not per_node:
            return
        listed: set = set()
        for node, objs in per_node.items():
            row = out.get(node)
            if row is None:
                continue
            row["bytes_used"] = sum(o[0] for o in objs if not o[2])
            row["spilled_bytes"] = sum(o[0] for o in objs if o[2])
            row["object_count"] = len(objs)
            largest = [o for o in sorted(objs, reverse=True) if o[1] not in listed][:10]
            listed.update(o[1] for o in largest)     # a copy on a second node is not a second row
            row["objects"] = [{"id": jid, "size": size, "owner": self.b.client_no, "spilled": spilled}
                              for size, jid, spilled in largest]

    def release_now(self, timeout: float) -> None:
        self.b.table.drain()

    def driver_info(self) -> dict:
        b = self.b
        return {"cluster_id": b.cluster_id, "address": b.address, "client_no": b.client_no, "backend": "ray"}

    def pending_tasks(self) -> dict:
        self._prune()
        return {tid: (c[0], c[1]) for tid, c in list(self.contexts.items())}


def _locate(entries: list, timeout: float, every_copy: bool = False) -> dict | None:
    """``{node: [(size, jid, spilled)]}`` of ``entries`` (``(jid, Ray ref)``) whose objects exist:
    each object under the first node Ray lists for it, or under every node holding a copy
    (``every_copy``); None when Ray could not say."""
    if not entries:
        return {}
    try:
        locs = ray.experimental.get_object_locations([rr for _, rr in entries], timeout_ms=int(timeout * 1000))
    except Exception:
        return None
    per_node: dict = collections.defaultdict(list)
    for jid, rr in entries:
        loc = locs.get(rr)
        if not loc or not loc.get("object_size"):
            continue
        nodes = loc.get("node_ids") or ()
        for node in nodes if every_copy else nodes[:1]:
            per_node[node].append((int(loc["object_size"]), jid, bool(loc.get("did_spill"))))
    return per_node


def _node_store_stats(address: str, port: int, timeout: float) -> Any:
    """One raylet's object-store figures (``GetNodeStats``), or None without grpcio (or when the
    raylet does not answer in ``timeout``). Ray's ``internal_api.node_stats`` does the same with a
    fixed 30 s deadline and leaves its channel to the collector; this one closes it."""
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray._raylet import build_address
        from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc
    except ImportError:     # Ray's minimal install: no grpcio
        return None
    try:
        channel = init_grpc_channel(build_address(address, port))
    except Exception:
        return None
    try:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        request = node_manager_pb2.GetNodeStatsRequest(include_memory_info=False)
        return stub.GetNodeStats(request, timeout=max(0.5, timeout)).store_stats
    except Exception:
        return None
    finally:
        channel.close()


class Subscription:
    """The Ray backend's event stream as seen from this process, from now on."""

    summary = False        # the full stream (see Backend.subscribe_events)

    def __init__(self, fe: RayFrontEnd):
        self.fe = fe
        self.q: queue.Queue = queue.Queue()
        self.closed = False
        self.received = 0

    def poll(self, timeout: float = 0.25, max_events: int = 100_000) -> list:
        if self.closed:
            return []
        out: list = []
        try:
            item = self.q.get(timeout=max(0.0, timeout)) if timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            return []
        while True:     # an item is an Event, or a list of them (a batch from the pump)
            if type(item) is list:
                out.extend(item)
            else:
                out.append(item)
            if len(out) >= max_events:
                break
            try:
                item = self.q.get_nowait()
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
