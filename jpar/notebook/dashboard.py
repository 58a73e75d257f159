"""The live dashboard widget: task DAG, per-engine CPU and memory, object store, totals.

::

    head PUB --Events--> hooks.subscribe_events()          (one subscription per dashboard)
                               |
                      updater thread (one per dashboard; the only writer of the traits)
                        DashboardModel.apply(events)      O(1) bookkeeping per event
                        every 1 s: hooks.status()         engines, actors, object-store figures
                        at most max_hz times a second:    model -> traits, inside hold_sync()
                               |
                      Dashboard (anywidget) --kernel comm--> static/dashboard.js in the browser

The graph (nodes, edges, positions from :mod:`.dag_layout`) and the states travel in
separate traits, so a state change sends a small dict and not the graph. Past
``group_above`` tasks the DAG shows one node per function (or per actor) with counts per
state. Closing the widget stops its thread and its subscription. Built on the public API
and :mod:`jpar.hooks` only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import pathlib
import threading
import time
from typing import Any

import jpar
from jpar import hooks
from jpar.errors import import_optional

anywidget = import_optional("anywidget", "jpar.dashboard()")
traitlets = import_optional("traitlets", "jpar.dashboard()")

from .dag_layout import layered_layout

__all__ = ["Dashboard", "DashboardModel", "DashboardStatistics", "dashboard", "STATES"]

log = logging.getLogger("jpar.dashboard")

STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
HISTORY = 60          # metric samples kept per engine (one a second by default)

# task record fields (a list per task: cheaper than objects at 100,000 tasks)
_STATE, _GROUP, _ENGINE, _START, _END, _NAME = range(6)


class _Group:
    __slots__ = ("key", "label", "kind", "counts", "dur_sum", "dur_n")

    def __init__(self, key: str, label: str, kind: str):
        self.key, self.label, self.kind = key, label, kind
        self.counts: collections.Counter = collections.Counter()
        self.dur_sum = 0.0
        self.dur_n = 0


class DashboardModel:
    """What the dashboard knows, built from events; no widgets and no threads (tested alone).

    ``apply(events)`` is called by one thread; ``snapshot_*`` methods build the traits' values.
    """

    def __init__(self, group_above: int = 300, max_tasks: int = 200_000):
        self.group_above = group_above
        self.max_tasks = max_tasks
        self.reset()
        self.engines: dict[int, dict] = {}
        self.actors: dict[int, dict] = {}
        self.store: dict | None = None
        self.events = 0

    def reset(self) -> None:
        """Forget every task (engines and actors stay)."""
        self.tasks: dict[int, list] = {}
        self.counts: collections.Counter = collections.Counter()
        self.groups: dict[str, _Group] = {}
        self.group_edges: set = set()
        self.edges: list = []              # task-level (src, dst) while not grouped
        self.grouped = False
        self.finished = 0
        self.structure = 0                 # bumped when nodes or edges change
        self.dirty = True
        self.rate_marks: collections.deque = collections.deque(maxlen=64)   # (monotonic, finished)

    # ------------------------------------------------------------ events
    def apply(self, events) -> None:
        # the hot path (~1 us per event): locals, no calls for the common task transitions
        tasks, counts, groups = self.tasks, self.counts, self.groups
        finished = FINISHED
        for ev in events:
            t, kind, key, state, info = ev
            if kind == "task":
                task = tasks.get(key)
                if task is None:
                    self._new_task(t, key, state, info)
                    continue
                old = task[0]
                if old != state:
                    task[0] = state
                    counts[old] -= 1
                    counts[state] += 1
                    group = groups[task[1]]
                    gc = group.counts
                    gc[old] -= 1
                    gc[state] += 1
                    if state == "running":
                        task[3] = t
                        if info:
                            eng = info.get("engine")
                            task[2] = eng if eng is not None else -1
                    elif state in finished:
                        task[4] = t
                        self.finished += 1
                        if task[3]:
                            group.dur_sum += t - task[3]
                            group.dur_n += 1
                elif state == "running":
                    self._timing(task, t, state, info)
            elif kind == "metrics":
                self._metrics(key, info)
            elif kind == "engine":
                self._engine(key, state, info)
            elif kind == "actor":
                self._actor(key, state, info)
        self.events += len(events)
        if events:
            self.dirty = True

    def _new_task(self, t: float, key: int, state: str, info) -> None:
        info = info or {}
        name = info.get("name") or "?"
        actor = info.get("actor") or 0
        if actor:
            gkey = f"actor:{actor:x}"
            group = self.groups.get(gkey)
            if group is None:
                cls = (self.actors.get(actor) or {}).get("class") or name.split(".")[0]
                group = self.groups[gkey] = _Group(gkey, f"{cls} actor", "actor")
                self.structure += 1
        else:
            gkey = "fn:" + name
            group = self.groups.get(gkey)
            if group is None:
                group = self.groups[gkey] = _Group(gkey, name, "function")
                self.structure += 1
        task = [state, gkey, -1, 0.0, 0.0, name]
        tasks = self.tasks
        tasks[key] = task
        self.counts[state] += 1
        group.counts[state] += 1
        sources = [d for d in info.get("deps", ()) if d in tasks]
        parent = info.get("parent") or 0
        if parent and parent in tasks:
            sources.append(parent)
        if not self.grouped:
            self.edges.extend((s, key) for s in sources)
            self.structure += 1
            if len(tasks) > self.group_above:
                self.grouped = True
                self.edges = []
        for s in sources:
            gs = tasks[s][_GROUP]
            if gs != gkey and (gs, gkey) not in self.group_edges:
                self.group_edges.add((gs, gkey))
                self.structure += 1
        self._timing(task, t, state, info)
        if len(tasks) > self.max_tasks:
            self._forget_finished()

    def _timing(self, task: list, t: float, state: str, info) -> None:
        if state == "running":
            task[_START] = t
            if info:
                eng = info.get("engine")
                task[_ENGINE] = eng if eng is not None else -1
        elif state in FINISHED:
            task[_END] = t
            self.finished += 1
            if task[_START]:
                g = self.groups[task[_GROUP]]
                g.dur_sum += t - task[_START]
                g.dur_n += 1

    def _forget_finished(self) -> None:
        """Drop the oldest finished tasks (their groups keep the counts)."""
        target = int(self.max_tasks * 0.9)
        drop = []
        excess = len(self.tasks) - target
        for tid, task in self.tasks.items():
            if excess <= 0:
                break
            if task[_STATE] in FINISHED:
                drop.append(tid)
                excess -= 1
        for tid in drop:
            del self.tasks[tid]

    def _metrics(self, eid: int, info: dict) -> None:
        e = self._engine_entry(eid)
        cpu = float(info.get("cpu", 0.0))
        rss = int(info.get("rss", 0))
        shared = int(info.get("shared", 0))
        e.update(cpu=cpu, rss=rss, shared=shared, heap=max(0, rss - shared), task=info.get("task") or 0,
                 node=info.get("node", e["node"]), pid=info.get("pid", e["pid"]), alive=True, measured=True)
        e["hist_cpu"].append(round(cpu, 1))
        e["hist_heap"].append(max(0, rss - shared))

    def _engine_entry(self, eid: int) -> dict:
        e = self.engines.get(eid)
        if e is None:
            e = self.engines[eid] = {"id": eid, "node": "", "pid": 0, "cpu": 0.0, "rss": 0, "shared": 0, "heap": 0,
                                     "task": 0, "alive": True, "measured": False, "hist_cpu": collections.deque(maxlen=HISTORY),
                                     "hist_heap": collections.deque(maxlen=HISTORY)}
        return e

    def _engine(self, eid: int, state: str, info) -> None:
        if state in ("dead", "removed"):
            self.engines.pop(eid, None)
            return
        e = self._engine_entry(eid)
        if info:
            e["pid"] = info.get("pid", e["pid"])
            e["node"] = info.get("node", e["node"])
        e["alive"] = True

    def _actor(self, aid: int, state: str, info) -> None:
        """Actor events, consumed generically: a lifecycle state plus whatever details they carry."""
        a = self.actors.get(aid)
        if a is None:
            a = self.actors[aid] = {"id": aid, "class": "?", "name": "", "state": "?"}
        if state != "process":      # "process" updates details (pid), not the lifecycle state
            a["state"] = state
        if isinstance(info, dict):
            for k in ("class", "name", "pid", "incarnation", "why"):
                if k in info and isinstance(info[k], (str, int, float)):
                    a[k] = info[k]

    def apply_status(self, st: dict) -> None:
        """Merge the head's status() answer: live engines, actors, object-store figures."""
        live = set()
        for row in st.get("engines", ()):
            eid = row["id"]
            live.add(eid)
            e = self._engine_entry(eid)
            e["node"] = row.get("node", e["node"]) or row.get("host", "")
            e["pid"] = row.get("pid", e["pid"])
            if not e["measured"] and row.get("rss"):   # the head's copy of a sample (rss 0: none yet)
                self._metrics(eid, {"cpu": row.get("cpu", 0.0), "rss": row.get("rss", 0),
                                    "shared": row.get("shared", 0), "task": row.get("task", 0)})
        for eid in list(self.engines):
            if eid not in live:
                del self.engines[eid]
        for row in st.get("actors", ()) or ():
            if isinstance(row, dict) and "id" in row:
                self._actor(row["id"], row.get("state", "?"), row)
        self.store = normalize_store(_find_store(st))
        self.dirty = True

    # ------------------------------------------------------------ snapshots (trait values)
    def snapshot_graph(self) -> dict:
        """Nodes with positions and edges: tasks, or groups past ``group_above`` tasks."""
        if self.grouped:
            keys = list(self.groups)
            edges = [e for e in self.group_edges]
            pos = layered_layout(keys, edges, max_rows=12)
            nodes = [[k, self.groups[k].label, *pos[k], self.groups[k].kind] for k in keys]
            mode = "groups"
        else:
            ids = list(self.tasks)
            pos = layered_layout(ids, self.edges)
            nodes = [[f"{i:x}", self.tasks[i][_NAME], *pos[i], "task"] for i in ids]
            edges = self.edges
            mode = "tasks"
        index = {n[0]: j for j, n in enumerate(nodes)}
        fmt = (lambda k: k) if self.grouped else (lambda k: f"{k:x}")
        return {"mode": mode, "nodes": nodes,
                "edges": [[index[fmt(a)], index[fmt(b)]] for a, b in edges if fmt(a) in index and fmt(b) in index],
                "version": self.structure}

    def snapshot_states(self, now: float) -> dict:
        """Task mode: ``{id: [state, engine, seconds, error]}``; groups: ``{key: [counts, mean s]}``."""
        if self.grouped:
            return {k: [{s: n for s, n in g.counts.items() if n}, round(g.dur_sum / g.dur_n, 4) if g.dur_n else None]
                    for k, g in self.groups.items()}
        out = {}
        for tid, task in self.tasks.items():
            state = task[_STATE]
            start = task[_START]
            if state in FINISHED:
                dur = round(task[_END] - start, 4) if start else None
            elif start:
                dur = round(now - start, 2)
            else:
                dur = None
            err = None
            if state == "failed":
                if len(task) == 6:
                    task.append(hooks.task_error(tid))
                err = task[6]
            out[f"{tid:x}"] = [state, task[_ENGINE], dur, err]
        return out

    def snapshot_engines(self) -> list:
        """One dict per engine; ``cpu``, ``rss``, ``shared`` and ``heap`` are None until its first sample."""
        names = self.tasks
        out = []
        for eid in sorted(self.engines):
            e = self.engines[eid]
            cur = names.get(e["task"]) if e["task"] else None
            m = e["measured"]
            out.append({"id": eid, "node": e["node"], "pid": e["pid"], "cpu": round(e["cpu"], 1) if m else None,
                        "rss": e["rss"] if m else None, "shared": e["shared"] if m else None,
                        "heap": e["heap"] if m else None, "task": cur[_NAME] if cur else
                        (f"{e['task']:x}" if e["task"] else ""), "hist_cpu": list(e["hist_cpu"]),
                        "hist_heap": list(e["hist_heap"])})
        return out

    def snapshot_totals(self, now_mono: float) -> dict:
        marks = self.rate_marks
        marks.append((now_mono, self.finished))
        while len(marks) > 2 and now_mono - marks[0][0] > 3.0:
            marks.popleft()
        t0, f0 = marks[0]
        rate = (self.finished - f0) / (now_mono - t0) if now_mono - t0 > 0.05 else 0.0
        actors = []
        for aid, a in sorted(self.actors.items()):
            g = self.groups.get(f"actor:{aid:x}")
            calls = {s: n for s, n in g.counts.items() if n} if g else {}
            actors.append({"id": f"{aid:x}", "class": a.get("class", "?"), "name": a.get("name", ""),
                           "state": a.get("state", "?"), "calls": calls})
        return {"states": {s: n for s, n in self.counts.items() if n}, "tasks": sum(self.counts.values()),
                "finished": self.finished, "rate": round(rate, 1), "actors": actors, "store": self.store,
                "engines": len(self.engines), "grouped": self.grouped, "group_above": self.group_above,
                "events": self.events}


def _find_store(st: dict) -> Any:
    for k in ("object_store", "store"):
        if st.get(k):
            return st[k]
    fn = getattr(hooks, "store_statistics", None) or getattr(hooks, "object_store", None)
    if callable(fn):
        try:
            return fn()
        except Exception:  # the store's hook is optional and may not be ready
            return None
    return None


def _pick(d: dict, *names, default=None):
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return default


def _as_dict(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
    if hasattr(x, "_asdict"):
        return x._asdict()
    return x


def normalize_store(raw: Any) -> dict | None:
    """Object-store figures in one shape, whatever the store reports (one dict, a list of hosts, or
    ``{node: statistics}``): ``{"hosts": [{host, used, capacity, spilled, objects}], "largest": [{id,
    size, owner}]}``; None when the cluster reports none."""
    raw = _as_dict(raw)
    if not raw or not isinstance(raw, dict):
        return None
    hosts_raw = _pick(raw, "hosts", "nodes", default=None)
    if hosts_raw is None:
        values = [_as_dict(v) for v in raw.values()]
        if values and all(isinstance(v, dict) for v in values):      # {node: statistics}
            hosts_raw = {k: v for k, v in zip(raw, values)}
        else:
            hosts_raw = [raw]
    if isinstance(hosts_raw, dict):
        hosts_raw = [dict(_as_dict(v), host=k) if isinstance(_as_dict(v), dict) else {"host": k}
                     for k, v in hosts_raw.items()]
    hosts, objects = [], []
    for h in hosts_raw:
        h = _as_dict(h)
        if not isinstance(h, dict):
            continue
        objs = h.get("objects")
        count = _pick(h, "object_count", "count", "num_objects", default=None)
        if isinstance(objs, (list, tuple)):
            objects.extend(objs)
            if count is None:
                count = len(objs)
        elif isinstance(objs, int) and count is None:
            count = objs
        hosts.append({"host": str(_pick(h, "host", "node", "name", default="")),
                      "used": _pick(h, "used", "used_bytes", "bytes_used", "bytes", default=None),
                      "capacity": _pick(h, "capacity", "capacity_bytes", "size", "limit", default=None),
                      "spilled": _pick(h, "spilled", "spilled_bytes", "bytes_spilled", default=None),
                      "objects": count})
    objects.extend(_pick(raw, "largest", "largest_objects", "top", default=()) or ())
    largest = []
    for o in objects:
        o = _as_dict(o)
        if isinstance(o, dict):
            oid = _pick(o, "id", "object_id", default="")
            owner = _pick(o, "owner", "holder", "holders", default="")
            largest.append({"id": f"{oid:x}" if isinstance(oid, int) else str(oid), "size": _pick(o, "size", "bytes"),
                            "owner": f"client {owner}" if isinstance(owner, int) else str(owner)})
        elif isinstance(o, (list, tuple)) and len(o) >= 2:
            largest.append({"id": f"{o[0]:x}" if isinstance(o[0], int) else str(o[0]), "size": o[1],
                            "owner": str(o[2]) if len(o) > 2 else ""})
    largest.sort(key=lambda o: -(o["size"] or 0))
    return {"hosts": hosts, "largest": largest[:5]}


@dataclasses.dataclass(frozen=True)
class DashboardStatistics:
    """What one dashboard cost and did (benchmarks/dashboard_cost.py reads this)."""

    events: int                 # events applied
    publishes: int              # trait updates sent (one hold_sync block each)
    cpu_s: float                # CPU time of its updater thread
    latency_s: tuple            # per publish: age of the oldest event it carried (head clock -> sent)
    running: bool


class Dashboard(anywidget.AnyWidget):
    """The live view of a jpar cluster: task DAG, engines' CPU and memory, object store, totals.

    Made by :func:`jpar.dashboard`; ``close()`` stops its updater thread and subscription.
    """

    _esm = pathlib.Path(__file__).parent / "static" / "dashboard.js"
    graph = traitlets.Dict().tag(sync=True)
    states = traitlets.Dict().tag(sync=True)
    engines = traitlets.List().tag(sync=True)
    totals = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("starting").tag(sync=True)

    def __init__(self, *, max_hz: float = 4.0, group_above: int = 300, status_interval: float = 1.0,
                 max_tasks: int = 200_000, start: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0 < max_hz <= 10:
            raise ValueError(f"max_hz={max_hz} must be in (0, 10]: browsers gain nothing from more updates.")
        self.max_hz = max_hz
        self.status_interval = status_interval
        self.model = DashboardModel(group_above=group_above, max_tasks=max_tasks)
        self.publishes = 0
        self._latencies: collections.deque = collections.deque(maxlen=1000)
        self._oldest_unsent: float | None = None
        self._cpu = 0.0
        self._stop = threading.Event()
        self._clear = False
        self._graph_version = -1
        self._thread: threading.Thread | None = None
        self._sub = None
        self.on_msg(self._on_front_end_msg)
        if start:
            self._sub = hooks.subscribe_events()   # now, so no event after this call is missed
            self._thread = threading.Thread(target=self._run, name="jpar-dashboard", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Stop the updater thread and the subscription, then close the widget."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
        if self._sub is not None:
            self._sub.close()
        super().close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def statistics(self) -> DashboardStatistics:
        return DashboardStatistics(self.model.events, self.publishes, self._cpu, tuple(self._latencies),
                                   self.running)

    def clear(self) -> None:
        """Forget the tasks seen so far (the next update starts an empty DAG)."""
        self._clear = True

    def _on_front_end_msg(self, widget: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "clear":
            self._clear = True     # done by the updater thread: it alone touches the model and traits

    # ------------------------------------------------------------ updater thread
    def _run(self) -> None:
        sub, model = self._sub, self.model
        period = 1.0 / self.max_hz
        cpu0 = time.thread_time()
        next_pub = 0.0
        next_status = 0.0
        try:
            self._refresh_status()
            next_status = time.monotonic() + self.status_interval
            while not self._stop.is_set():
                now = time.monotonic()
                wait = (next_pub if model.dirty else now + 0.25) - now
                events = sub.poll(max(0.0, min(wait, next_status - now, 0.25)))
                if events:
                    if self._oldest_unsent is None:
                        self._oldest_unsent = events[0][0]
                    model.apply(events)
                if self._clear:
                    self._clear = False
                    model.reset()
                now = time.monotonic()
                if now >= next_status:
                    if not jpar.is_initialized():
                        break
                    self._refresh_status()
                    next_status = now + self.status_interval
                if model.dirty and now >= next_pub:
                    self._publish(now)
                    next_pub = now + period
                self._cpu = time.thread_time() - cpu0
            self._publish(time.monotonic(), "closed" if self._stop.is_set() else "cluster stopped")
        except Exception:
            log.exception("dashboard updater stopped")
            try:
                self.status = "error: see the kernel log"
            except Exception:
                pass
        finally:
            sub.close()
            self._cpu = time.thread_time() - cpu0

    def _refresh_status(self) -> None:
        try:
            st = hooks.status(timeout=2.0)
        except Exception:  # busy or stopping head: the next refresh will do
            return
        self.model.apply_status(st)

    def _publish(self, now_mono: float, status: str = "live") -> None:
        model = self.model
        if getattr(self, "comm", None) is None:
            return
        now = time.time()
        with self.hold_sync():
            if model.structure != self._graph_version:
                self._graph_version = model.structure
                self.graph = model.snapshot_graph()
            self.states = model.snapshot_states(now)
            self.engines = model.snapshot_engines()
            totals = model.snapshot_totals(now_mono)
            totals["stamp"] = now
            totals["max_hz"] = self.max_hz
            self.totals = totals
            self.status = status
        model.dirty = False
        self.publishes += 1
        if self._oldest_unsent is not None:
            self._latencies.append(time.time() - self._oldest_unsent)
            self._oldest_unsent = None

    # ------------------------------------------------------------ text
    def summary(self) -> str:
        """A plain-text view (terminals): totals and engines."""
        m = self.model
        counts = ", ".join(f"{s} {m.counts[s]}" for s in STATES if m.counts.get(s)) or "no tasks yet"
        lines = [f"jpar dashboard ({self.status}): tasks: {counts}"]
        for e in m.snapshot_engines():
            if e["cpu"] is None:
                lines.append(f"  engine {e['id']}: CPU     -   heap       - MiB  shared      - MiB  (not sampled yet)")
                continue
            lines.append(f"  engine {e['id']}: CPU {e['cpu']:5.1f}%  heap {e['heap'] / 2**20:7.1f} MiB  "
                         f"shared {e['shared'] / 2**20:6.1f} MiB  {e['task']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "jpar.Dashboard()"


def dashboard(**options: Any) -> Dashboard:
    """A live dashboard of the current cluster; show it as a cell's last expression.

    Options: ``max_hz`` (updates per second, default 4), ``group_above`` (tasks shown one by one up
    to this many, then one node per function or actor; default 300), ``status_interval`` (seconds
    between engine/actor/store refreshes, default 1).
    """
    if not jpar.is_initialized():
        raise jpar.NotInitializedError("jpar.dashboard()")
    return Dashboard(**options)
