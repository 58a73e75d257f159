"""What front ends (the notebook layer, the dashboard, the sidebar) ask of a Dask cluster: the
submit hook and output handler, the cluster's status in the native shape, the event stream,
store statistics, cancelling by task id. ``jpar.hooks`` reaches it as ``backend.frontend``.

Events come from what this client knows (submissions, cancels, actors), from the task wrapper on
the workers (running, done, failed: sent on a topic only for tasks submitted while someone
watches, so an unwatched cluster pays nothing) and, once a second per subscription, from the
scheduler's worker metrics (``metrics`` events: cpu, rss).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, Callable

from .. import FrontEnd
from ...events import Event, OutputRecord
from ...refs import ObjectRef
from . import worker as W
from .free import FREED_SUFFIX

__all__ = ["DaskFrontEnd", "EventSubscription"]

LARGEST_SCAN = 20       # objects the scheduler's scan returns (the dashboard shows the largest 5)
LARGEST_TTL_S = 3.0     # how long a scan's answer is used (the scan is O(keys) on the scheduler's loop) ...
LARGEST_DUTY = 50       # ... and at least this many times what the last scan took (measured: 1.6 us a key)


class DaskFrontEnd(FrontEnd):
    def __init__(self, backend: Any):
        self.b = backend
        self.submit_hook: Callable[[int], Any] | None = None
        self.output_handler: Callable[[Any, Any], None] | None = None
        self.contexts: dict[int, Any] = {}
        self._subs: list[EventSubscription] = []
        self._events_topic = False
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._out_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._largest_cache: tuple[float, tuple | None] = (-float("inf"), None)   # (next scan, answer): _largest

    # -- hooks (set_submit_hook, set_output_handler, apply: the seam's FrontEnd) -------------------
    def _submitted(self, tid: int, n: int, name: str, deps: list, parent: int, events: bool, actor: int = 0,
                   args: int | None = None) -> None:
        """A submission: its output's context, and its first event (``args``: bytes of its pickled arguments)."""
        hook = self.submit_hook
        if hook is not None and not self.b._engine:
            ctx = hook(tid)
            for i in range(n):
                self.contexts[tid + i] = ctx
        if events:
            info = {"name": name, "deps": list(deps), "parent": parent, "actor": actor}
            if args is not None:
                info["args"] = args
            if self.b._engine:
                ctx = W.current_task()
                W.log_event(W.EVENTS_TOPIC, {"t": time.time(), "id": tid, "state": "waiting" if deps else "queued",
                                             "owner": ctx.owner if ctx else 0, "info": info})
            else:
                self._publish(Event(time.time(), "task", tid, "waiting" if deps else "queued", info))

    def _forget(self, tid: int) -> None:
        self.contexts.pop(tid, None)

    # -- output ---------------------------------------------------------------------------------
    def _on_output(self, event) -> None:
        """On the client's event loop: one chunk of output from a worker (a topic event)."""
        _, msg = event
        if msg.get("owner") != self.b.prefix:
            return
        self._out.put(msg)
        if self._out_thread is None:
            with self._lock:
                if self._out_thread is None:
                    self._out_thread = threading.Thread(target=self._deliver, name="jpar-dask-output", daemon=True)
                    self._out_thread.start()

    def _deliver(self) -> None:
        while True:
            msg = self._out.get()
            if msg is None:
                return
            rec = OutputRecord(msg["task"], msg["engine"], msg["pid"], msg["name"], msg["stream"], msg["text"])
            ctx = self.contexts.get(rec.task_id)
            if ctx is None:
                ctx = self.contexts.get(msg.get("root"))
            handler = self.output_handler or _print_output
            try:
                handler(rec, ctx)
            except Exception:   # a front end's bug must not stop the output of later tasks
                pass

    # -- events ---------------------------------------------------------------------------------
    def watched(self) -> bool:
        return bool(self._subs)

    def _publish(self, ev: Event) -> None:
        for s in self._subs:
            s._q.put(ev)

    def _event(self, tid: int, state: str, info: dict | None = None) -> None:
        if self._subs:
            self._publish(Event(time.time(), "task", tid, state, info or {}))

    def _actor(self, aid: int, state: str, info: dict) -> None:
        if self._subs:
            self._publish(Event(time.time(), "actor", aid, state, info))

    def _on_event(self, event) -> None:
        _, m = event
        for e in m.get("batch") or (m,):      # workers send theirs in batches (worker._Events)
            self._publish(Event(e["t"], "task", e["id"], e["state"], e.get("info") or {}))

    def subscribe_events(self, summary: bool = False) -> "EventSubscription":
        """Every event (Dask has no summary stream: ``summary`` is False on the result)."""
        if self.b._engine:
            raise RuntimeError("subscribe_events() is for drivers, not tasks.")
        with self._lock:
            if not self._events_topic:
                self.b.client.subscribe_topic(W.EVENTS_TOPIC, self._on_event)
                self._events_topic = True
        sub = EventSubscription(self)
        self._subs.append(sub)
        return sub

    def _close(self) -> None:
        for s in list(self._subs):
            s.close()
        if self._out_thread is not None:
            self._out.put(None)

    # -- cluster --------------------------------------------------------------------------------
    def status(self, timeout: float) -> dict:
        b = self.b
        workers = b._workers(fresh=True)
        missing = [a for a in workers if a not in b._pids]
        if missing:
            try:
                b._pids.update(b.client.run(os.getpid, workers=missing, on_error="return"))
            except Exception:
                pass
        engines, total, available = [], {}, {}
        cpu_declared = any("CPU" in (w.get("resources") or {}) for w in workers.values())
        for addr, w in workers.items():
            m = w.get("metrics") or {}
            counts = m.get("task_counts") or {}
            res = {k: float(v) for k, v in (w.get("resources") or {}).items()}
            if not cpu_declared:
                res["CPU"] = float(w.get("nthreads", 1))
            executing = int(counts.get("executing", 0))
            for k, v in res.items():
                total[k] = total.get(k, 0.0) + v
            avail = dict(res)
            avail["CPU"] = max(0.0, res.get("CPU", 0.0) - executing)
            for k, v in avail.items():
                available[k] = available.get(k, 0.0) + v
            pid = b._pids.get(addr)
            engines.append({"id": W.engine_id_of(w.get("name"), addr), "pid": pid if isinstance(pid, int) else 0,
                            "host": w.get("host", ""), "node": w.get("host", ""), "address": addr,
                            "cpu": float(m.get("cpu", 0.0)), "rss": int(m.get("memory", 0)), "shared": 0,
                            "task": 0, "queued": int(counts.get("ready", 0)) + int(counts.get("constrained", 0)),
                            "executing": executing, "nthreads": w.get("nthreads", 1), "resources": res,
                            "managed": int(m.get("managed_bytes", 0)),
                            "spilled": int((m.get("spilled_bytes") or {}).get("disk", 0)),
                            "memory_limit": int(w.get("memory_limit") or 0), "draining": False})
        engines.sort(key=lambda e: e["id"])
        pending = sum(1 for f in list(b._futures.values()) if not f.done())
        return {"backend": "dask", "cluster_id": b.cluster_id, "head": b.client.scheduler.address, "engines": engines,
                "clients": [{"no": b.prefix, "pid": os.getpid(), "kind": "driver", "host": os.uname().nodename,
                             "tasks": pending}],
                "resources": total, "available": available, "tasks": {"pending": pending},
                "actors": [{"id": aid, "class": "?", "name": b._actor_names.get(aid, ""),
                            "state": b.actor_state(aid)} for aid in list(b._actor_futures)]}

    def store_statistics(self, timeout: float) -> dict:
        """Per host: the workers' managed bytes (``used``), memory limits (``capacity``), spilled bytes,
        and, from the scheduler (:meth:`_largest`), how many jpar objects are in memory there
        (``object_count``) and the largest of them (``objects``: ``{id, size, owner}``)."""
        out: dict[str, dict] = {}
        for e in self.status(timeout)["engines"]:
            h = out.setdefault(e["node"], {"used": 0, "capacity": 0, "spilled": 0, "objects": []})
            h["used"] += e["managed"]
            h["capacity"] += e["memory_limit"]
            h["spilled"] += e["spilled"]
        found = self._largest()
        if found is None:
            for h in out.values():
                h["objects"] = None      # the scheduler could not scan: not known, rather than none
            return out
        counts, objects = found
        for host, h in out.items():
            h["object_count"] = counts.get(host, 0)
        for host, row in objects:
            if host in out:             # not a host whose workers all left since the scan
                out[host]["objects"].append(row)
        return out

    def _largest(self) -> tuple[dict, list] | None:
        """``({host: jpar objects in memory there}, [(host, {id, size, owner})])``: the counts, and the
        ``LARGEST_SCAN`` largest jpar objects in the cluster's memory, each under the first host
        holding a copy (so a replicated object is one row).

        The scan runs on the scheduler (one round trip, ``LARGEST_SCAN`` rows back, not the key
        table that ``Client.nbytes`` and ``Client.who_has`` send) and costs it O(keys) of its event
        loop, so its answer is kept ``LARGEST_TTL_S`` seconds, or ``LARGEST_DUTY`` times what it took
        where that is longer (a scheduler with 100,000 keys is scanned every ~8 s, not every second
        the dashboard asks). Rows of this client's refs that were released or freed since are dropped
        at each call, so a freed object leaves the table at the next refresh. None when the scan
        failed (a scheduler that cannot load jpar's module, as for jpar.free there)."""
        b = self.b
        prefix = b.key(0)[:-1]          # "jpar-<cluster>-": the keys of jpar objects (DaskBackend.key)
        next_at, found = self._largest_cache
        if time.monotonic() >= next_at:
            t0 = time.monotonic()
            try:
                counts, top = b.client.run_on_scheduler(_largest_keys, prefix, LARGEST_SCAN)
            except Exception:           # not asked again before LARGEST_TTL_S either
                self._largest_cache = (time.monotonic() + LARGEST_TTL_S, None)
                return None
            rows = []
            for size, key, hosts in top:
                try:
                    oid = int(key[len(prefix):], 16)
                except ValueError:      # "<key>-all" (a multi-return task's tuple), "<key>-freed"
                    continue
                rows.append((hosts[0] if hosts else "", {"id": oid, "size": int(size), "owner": oid >> 32}))
            found = (counts, rows)
            now = time.monotonic()
            self._largest_cache = (now + max(LARGEST_TTL_S, LARGEST_DUTY * (now - t0)), found)
        if found is None:
            return None
        counts, rows = found
        mine, futures = b.prefix, b._futures
        return counts, [(h, o) for h, o in rows if o["owner"] != mine or _held(futures.get(o["id"]))]

    def cancel_tasks(self, task_ids, force: bool) -> None:
        for tid in task_ids:
            self.b.cancel(ObjectRef(int(tid), self.b.prefix, cluster=self.b.cluster_id), force, True)

    def cancel_driver_tasks(self, client_no: int | None, force: bool, timeout: float) -> int:
        b = self.b
        if client_no is not None and int(client_no) != b.prefix:
            raise LookupError(f"No client {client_no} here: a Dask client can cancel only its own tasks "
                              f"(this one is {b.prefix}).")
        ids = [tid for tid, f in list(b._futures.items())
               if not f.done() and tid not in b._actor_calls and tid not in b._cancelled]
        self.cancel_tasks(ids, force)
        return len(ids)

    def task_ids_done(self, task_ids) -> list:
        futures = self.b._futures
        return [t for t in task_ids if t in futures and futures[t].done()]

    def task_error(self, task_id: int) -> str | None:
        f = self.b._futures.get(task_id)
        if f is None or f.status != "error":
            return None
        try:
            exc = f.exception(timeout=10)
        except Exception as e:
            exc = e
        cause = getattr(exc, "cause", None) or exc
        return f"{type(cause).__name__}: {cause}"

    def release_now(self, timeout: float) -> None:
        self.b._drain()
        self.b.client.scheduler_info(n_workers=0)   # a round trip: the releases sent before it are applied

    def driver_info(self) -> dict:
        return {"cluster_id": self.b.cluster_id, "address": self.b.client.scheduler.address, "client_no": self.b.prefix}

    def pending_tasks(self) -> dict:
        futures, names = self.b._futures, self.b._names
        out = {}
        for tid, ctx in list(self.contexts.items()):
            f = futures.get(tid)
            if f is not None and not f.done():
                out[tid] = (ctx, names.get(tid, "task"))
        return out


class EventSubscription:
    """Events from now on (:class:`jpar.events.Event`): ``poll(timeout)``, iteration, ``close()``."""

    summary = False        # the full stream (see Backend.subscribe_events)

    def __init__(self, fe: DaskFrontEnd):
        self._fe = fe
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self.closed = False
        self._stop = threading.Event()
        self._known: set[int] = set()
        self._thread = threading.Thread(target=self._metrics, name="jpar-dask-metrics", daemon=True)
        self._thread.start()

    def _metrics(self) -> None:
        """Each worker's CPU and memory once a second (Dask's heartbeat figures), and engines joining/leaving."""
        while not self._stop.is_set():
            try:
                engines = self._fe.status(10)["engines"]
            except Exception:
                if self._fe.b.closed:
                    return
                engines = []
            now = time.time()
            ids = set()
            for e in engines:
                ids.add(e["id"])
                if e["id"] not in self._known:
                    self._q.put(Event(now, "engine", e["id"], "alive", {"pid": e["pid"], "node": e["node"]}))
                self._q.put(Event(now, "metrics", e["id"], "sample",
                                  {"cpu": e["cpu"], "rss": e["rss"], "shared": 0, "task": 0, "node": e["node"],
                                   "pid": e["pid"], "managed": e["managed"], "spilled": e["spilled"]}))
            for gone in self._known - ids:
                self._q.put(Event(now, "engine", gone, "dead", {}))
            self._known = ids
            self._stop.wait(1.0)

    def poll(self, timeout: float = 0.25, max_events: int = 100_000) -> list[Event]:
        if self.closed:
            return []
        out = []
        try:
            out.append(self._q.get(timeout=max(0.0, timeout)))
            while len(out) < max_events:
                out.append(self._q.get_nowait())
        except queue.Empty:
            pass
        return out

    def __iter__(self):
        while not self.closed:
            yield from self.poll(0.25)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop.set()
            try:
                self._fe._subs.remove(self)
            except ValueError:
                pass

    def __repr__(self) -> str:
        return f"EventSubscription(dask, {'closed' if self.closed else 'open'})"


def _held(f: Any) -> bool:
    """Whether a future of this client's ``_futures`` still stands for its value (not released,
    not replaced by jpar.free's stand-in)."""
    return f is not None and not str(f.key).endswith(FREED_SUFFIX)


def _largest_keys(prefix: str, n: int, dask_scheduler: Any = None) -> tuple[dict, list]:
    """On the scheduler, for the keys in memory whose names start with ``prefix`` (one cluster's jpar
    objects): ``({host: how many}, [(nbytes, key, [hosts])])``, the latter the ``n`` largest, largest
    first. A key held on several hosts counts once, at its first host."""
    import heapq

    tasks = dask_scheduler.tasks
    counts: dict = {}
    sized = []
    for key, ts in list(tasks.items()):
        if ts.state == "memory" and isinstance(key, str) and key.startswith(prefix):
            holders = ts.who_has or ()
            host = min(ws.host for ws in holders) if holders else ""
            counts[host] = counts.get(host, 0) + 1
            sized.append((ts.nbytes, key))
    top = []
    for nbytes, key in heapq.nlargest(n, sized):
        holders = getattr(tasks.get(key), "who_has", None) or ()
        top.append((nbytes, key, sorted({ws.host for ws in holders})))
    return counts, top


def _print_output(chunk: OutputRecord, context: Any) -> None:
    """No output handler: print each line, prefixed with the task, pid and engine."""
    stream = sys.stderr if chunk.stream == "stderr" else sys.stdout
    prefix = f"({chunk.name} pid={chunk.pid}, engine={chunk.engine_id}) "
    try:
        stream.write("".join(prefix + line for line in chunk.text.splitlines(keepends=True)))
        stream.flush()
    except (ValueError, OSError):
        pass
