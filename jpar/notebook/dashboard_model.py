"""What the dashboard knows, built from the event stream: tasks, groups, engines, actors, the
object store; no widgets and no threads, so it is tested alone and timed by
``benchmarks/dashboard_cost.py --model``. :class:`~jpar.notebook.dashboard.Dashboard` owns one
and calls it from its updater thread.

Two ways in: every task's events (``apply``: Dask, Ray, and the native backend's full stream), or
on the native backend the summary stream (``summary_mode``): the head's ``summary`` events set the
function groups' counts (``apply_summary``) and the tasks that still come one by one only fill in
what is drawn task by task (see :mod:`jpar.runtime.head.task_summary`).
"""

from __future__ import annotations

import collections
import time
from typing import Any

from jpar import call_sites, hooks

from . import store_view
from .dag_layout import lane_layout, layered_layout
from .store_view import find_store, normalize_store
from .task_stream import TaskStream

__all__ = ["DashboardModel", "STATES", "FINISHED", "local_host_memory"]

STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
HISTORY = 60          # seconds of metrics kept per engine (samples come 1-4 a second: averaged per second)
EXPAND_MAX = 200      # tasks shown when a group of the grouped view is expanded (the newest)
DEFER_S = 2.0         # longest a task's events wait for its submission to note its call site

# task record fields (a list per task: cheaper than objects at 100,000 tasks). _READY: when it last
# became ready to run (its queued event, kept when taken back unstarted from an engine; submitted
# "waiting": provisionally its submission, see _ready_from_deps), 0.0 unknown; _FETCH: seconds its
# engine spent fetching its ref arguments (native); _ARGS: bytes of its pickled arguments; _DEPS: its
# ref arguments' object ids; _SIZE: bytes of its result(s); _ERROR: its error, read once it failed
# (_UNREAD until then)
_STATE, _GROUP, _ENGINE, _START, _END, _NAME, _READY, _FETCH, _ARGS, _DEPS, _SIZE, _ERROR = range(12)
_UNREAD = object()


class _Group:
    __slots__ = ("key", "label", "kind", "counts", "dur_sum", "dur_n", "counted")

    def __init__(self, key: str, label: str, kind: str, counted: bool = True):
        self.key, self.label, self.kind = key, label, kind
        self.counts: collections.Counter = collections.Counter()
        self.dur_sum = 0.0
        self.dur_n = 0
        self.counted = counted   # counts made from its tasks' events (else set by summary events)


class DashboardModel:
    """What the dashboard knows, built from events; no widgets and no threads (tested alone).

    ``apply(events)`` is called by one thread; ``snapshot_*`` methods build the traits' values.
    """

    def __init__(self, group_above: int = 300, max_tasks: int = 200_000, stream_window: float = 60.0,
                 host_memory: dict | None = None, namespace: Any = store_view.kernel_namespace,
                 client_no: int | None = None, site_of: Any = call_sites.site_of,
                 submitting: Any = call_sites.submitting, site_number: Any = call_sites.site_number):
        self.group_above = group_above
        self.submitting = submitting       # not empty while a .remote() of this process is in flight
        self.site_of = site_of             # task id -> (file, line, function) where this process submitted it
        # (its tasks are grouped by function and the block of code that submitted them)
        self.site_number = site_number     # a call site's number (a summary's groups name it) -> the same
        # summary mode (the native backend's summary stream, see apply_summary): function groups are
        # counted by the head's summaries, and only a sample of tasks comes one by one
        self.summary_mode = False
        self._last_summary: dict | None = None
        self._fresh = True                 # no summary seen yet
        self.head_keys: dict = {}          # group key -> the summaries' (owner, name, site) it stands for
        self._baseline: dict = {}          # (owner, name, site) -> (finished counts, run seconds, runs) at the last reset
        self.namespace = namespace         # () -> the namespace whose variables name stored objects
        self.client_no = client_no         # this process's client number: its objects are "this notebook"
        self.host_memory = host_memory or {}     # node name -> its memory in bytes, where known
        self.max_tasks = max_tasks
        self.stream = TaskStream(window=stream_window)
        self.expanded: str | None = None   # the group shown task by task in the grouped view
        self._expanded_ids: list = []
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
        self.fn_groups: dict[str, list] = {}   # function name -> its groups, one per call site
        self._deferred: list = []          # events of tasks whose submission had not noted its site yet
        self._deferred_keys: dict = {}     # their task ids -> when first deferred (monotonic)
        self._retry: set = set()
        self._site_labels: dict = {}
        self.group_edges: set = set()
        self.edges: list = []              # task-level (src, dst) while not grouped
        self.grouped = False
        self.finished = 0
        self.sum_counts: collections.Counter = collections.Counter()   # summary mode: the summaries' totals
        self.sum_finished = 0
        if self.summary_mode:
            self._take_baseline()
        self.structure = 0                 # bumped when nodes or edges change
        self.dirty = True
        self.rate_marks: collections.deque = collections.deque(maxlen=64)   # (monotonic, finished)
        self.stream.clear()
        self.expanded = None
        self._expanded_ids = []

    # ------------------------------------------------------------ events
    def apply(self, events) -> None:
        # the hot path (~1 us per event): locals, no calls for the common task transitions
        if self._deferred:               # they go first, in their order
            events = [*self._deferred, *events]
            self._deferred = []
            self._retry = set(self._deferred_keys)
        tasks, counts, groups, stream = self.tasks, self.counts, self.groups, self.stream
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
                    group = groups[task[1]]
                    if group.counted:
                        counts[old] -= 1
                        counts[state] += 1
                        gc = group.counts
                        gc[old] -= 1
                        gc[state] += 1
                    if state == "running":
                        task[3] = t
                        if info:
                            eng = info.get("engine")
                            task[2] = eng if eng is not None else -1
                        if old == "waiting" or old == "assigned" and task[_DEPS]:
                            self._ready_from_deps(task)   # no queued event: Dask, Ray, a chained task
                        stream.running[key] = task
                    elif state in finished:
                        task[4] = t
                        if group.counted:
                            self.finished += 1
                            if task[3]:
                                group.dur_sum += t - task[3]
                                group.dur_n += 1
                        if info:
                            task[7] = info.get("fetch") or 0.0
                            task[10] = info.get("size")
                        stream.finished(key, task, task[3], t, task[2], task[5], state, task[6], task[7])
                    elif state == "queued" and old != "assigned":
                        task[6] = t      # taken back unstarted (assigned -> queued): still waiting since then
                elif state == "running":
                    self._timing(key, task, t, state, info)
            elif kind == "metrics":
                self._metrics(key, info, t)
            elif kind == "summary":
                self.apply_summary(info)
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
        elif self.summary_mode:     # placed as the summaries place it: by owner and site number
            gkey = self._summary_group(info.get("owner"), name, info.get("site") or 0)
            group = self.groups[gkey]
        else:
            site = self.site_of(key)
            if site is None:
                if self._defer(t, key, state, info):
                    return
                site = self.site_of(key)
            where = self._site_label(site) if site is not None else ""
            gkey = f"fn:{name}@{where}" if where else "fn:" + name
            group = self.groups.get(gkey)
            if group is None:
                self._new_function_group(gkey, name, where)
                group = self.groups[gkey]
        deps = info.get("deps") or ()
        task = [state, gkey, -1, 0.0, 0.0, name, t if state in ("queued", "waiting") else 0.0, 0.0,
                info.get("args"), deps, None, _UNREAD]
        tasks = self.tasks
        tasks[key] = task
        if group.counted:
            self.counts[state] += 1
            group.counts[state] += 1
        sources = [d for d in deps if d in tasks]
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
        if gkey == self.expanded:     # the expanded group's block shows its newest tasks as they come
            self.structure += 1
        self._timing(key, task, t, state, info)
        if len(tasks) > self.max_tasks:
            self._forget_finished()

    def _defer(self, t: float, key: int, state: str, info) -> bool:
        """Whether a task with no call site known yet waits for the next :meth:`apply`: the head may
        publish its first event before the ``.remote()`` that made it has noted its site (a reader
        would take it for another process's task), so while a submission of this process is in flight
        its events wait, in order, at most DEFER_S seconds."""
        first = self._deferred_keys.get(key)
        if first is None:
            if not self.submitting:
                return False
            self._deferred_keys[key] = time.monotonic()
        elif key in self._retry:     # its oldest event, taken again at the start of this apply()
            self._retry.discard(key)
            if self.site_of(key) is not None or not self.submitting or time.monotonic() - first > DEFER_S:
                del self._deferred_keys[key]
                return False
        self._deferred.append((t, "task", key, state, info))
        return True

    def _site_label(self, site: tuple) -> str:
        label = self._site_labels.get(site)
        if label is None:
            label = self._site_labels[site] = store_view.scope_label(site)
        return label

    def _new_function_group(self, gkey: str, name: str, where: str) -> None:
        """A function's tasks form one group per block of code that submitted them (``f.remote()`` in
        cell [3] and in cell [5] are two pieces of work; the lines of one cell are one); the block shows
        in the label once a function has more than one."""
        self.groups[gkey] = _Group(gkey, name, "function", counted=not self.summary_mode)
        same = self.fn_groups.setdefault(name, [])
        same.append((gkey, where))
        if len(same) > 1:
            for k, w in same:
                self.groups[k].label = f"{name} @ {w}" if w else f"{name} (other drivers)"
        self.structure += 1

    def _summary_group(self, owner: Any, name: str, site: int) -> str:
        """The key of the group of a function's tasks that a summary names by (owner, name, site
        number): the same as the per-task view's (the site's block for this process's tasks)."""
        located = self.site_number(site) if site and owner == self.client_no else None
        where = self._site_label(located) if located is not None else ""
        gkey = f"fn:{name}@{where}" if where else "fn:" + name
        if gkey not in self.groups:
            self._new_function_group(gkey, name, where)
        return gkey

    def apply_summary(self, info: dict) -> None:
        """A ``summary`` event (summary mode): every function group's counts, absolute, and the edges
        between groups; actor groups stay counted by their calls' events. What finished before the
        last :meth:`reset` (the "clear" button) is taken off, as the per-task view forgets it."""
        if not isinstance(info, dict):
            return
        self._last_summary = info
        if self._fresh:      # the first, sent when this subscription began: what finished before it is not ours
            self._fresh = False
            self._take_baseline()
        keys: list = []
        fed: dict = {}
        for owner, name, site, counts, mean, runs in info.get("groups") or ():
            counts = collections.Counter(counts)
            secs = mean * runs if mean is not None and runs else 0.0
            base = self._baseline.get((owner, name, site))
            if base is not None:
                counts.subtract(base[0])
                secs, runs = secs - base[1], runs - base[2]
                counts = +counts
            if not counts:
                keys.append(None)
                continue
            gkey = self._summary_group(owner, name, site)
            self.head_keys.setdefault(gkey, set()).add((owner, name, site))
            keys.append(gkey)
            acc = fed.get(gkey)
            if acc is None:
                acc = fed[gkey] = [collections.Counter(), 0.0, 0]
            acc[0].update(counts)
            acc[1] += secs
            acc[2] += runs
        total: collections.Counter = collections.Counter()
        for gkey, (counts, secs, runs) in fed.items():
            g = self.groups[gkey]
            g.counted = False
            g.counts, g.dur_sum, g.dur_n = counts, max(0.0, secs), max(0, runs)
            total.update(counts)
        self.sum_counts = total
        self.sum_finished = sum(total[s] for s in FINISHED)
        for i, j in info.get("edges") or ():
            if 0 <= i < len(keys) and 0 <= j < len(keys) and keys[i] and keys[j] and keys[i] != keys[j]:
                edge = (keys[i], keys[j])
                if edge not in self.group_edges:
                    self.group_edges.add(edge)
                    self.structure += 1
        if not self.grouped and sum(total.values()) + sum(self.counts.values()) > self.group_above:
            self.grouped = True
            self.edges = []
            self.structure += 1
        self.dirty = True

    def _take_baseline(self) -> None:
        """At a reset in summary mode: what the last summary counted as finished is forgotten."""
        self._baseline = {}
        for owner, name, site, counts, mean, runs in (self._last_summary or {}).get("groups") or ():
            done = {s: n for s, n in counts.items() if s in FINISHED}
            self._baseline[(owner, name, site)] = (done, mean * runs if mean is not None and runs else 0.0, runs)

    def _timing(self, tid: int, task: list, t: float, state: str, info) -> None:
        if state == "running":
            task[_START] = t
            if info:
                eng = info.get("engine")
                task[_ENGINE] = eng if eng is not None else -1
            self.stream.started(tid, task)
        elif state in FINISHED:
            task[_END] = t
            g = self.groups[task[_GROUP]]
            if g.counted:
                self.finished += 1
                if task[_START]:
                    g.dur_sum += t - task[_START]
                    g.dur_n += 1
            if info:
                task[_FETCH] = info.get("fetch") or 0.0
                task[_SIZE] = info.get("size")
            self.stream.finished(tid, task, task[_START], t, task[_ENGINE], task[_NAME], state, task[_READY],
                                 task[_FETCH])

    def _ready_from_deps(self, task: list) -> None:
        """A task that went from waiting straight to running (backends that send no queued event)
        became ready when the last of its arguments that this dashboard saw finish did (else at its
        submission: its arguments were ready then)."""
        tasks = self.tasks
        for d in task[_DEPS]:
            dep = tasks.get(d)
            if dep is not None and dep[_END] > task[_READY]:
                task[_READY] = dep[_END]

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

    def _metrics(self, eid: int, info: dict, t: float | None = None) -> None:
        """One sample: the current figures, and the history's per-second bucket (mean CPU, last heap)."""
        e = self._engine_entry(eid)
        cpu = float(info.get("cpu", 0.0))
        rss = int(info.get("rss", 0))
        shared = int(info.get("shared", 0))
        e.update(cpu=cpu, rss=rss, shared=shared, heap=max(0, rss - shared), task=info.get("task") or 0,
                 node=info.get("node", e["node"]), pid=info.get("pid", e["pid"]), alive=True, measured=True)
        sec = int(time.time() if t is None else t)
        b = e["bucket"]
        if b[0] != sec:
            if b[2]:
                e["hist_cpu"].append(round(b[1] / b[2], 1))
                e["hist_heap"].append(b[3])
            e["bucket"] = b = [sec, 0.0, 0, 0]
        b[1] += cpu
        b[2] += 1
        b[3] = max(0, rss - shared)

    def _engine_entry(self, eid: int) -> dict:
        e = self.engines.get(eid)
        if e is None:
            e = self.engines[eid] = {"id": eid, "node": "", "pid": 0, "cpu": 0.0, "rss": 0, "shared": 0, "heap": 0,
                                     "task": 0, "alive": True, "measured": False, "hist_cpu": collections.deque(maxlen=HISTORY),
                                     "hist_heap": collections.deque(maxlen=HISTORY), "bucket": [0, 0.0, 0, 0]}
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
        self.store = store_view.name_objects(normalize_store(find_store(st)), self.task_name,
                                             self.namespace(), self.client_no)
        self.dirty = True

    def task_name(self, task_id: int) -> str | None:
        """The name of a task this dashboard saw (a task's return ref has the task's id)."""
        task = self.tasks.get(task_id)
        return task[_NAME] if task is not None else None

    # ------------------------------------------------------------ snapshots (trait values)
    def snapshot_graph(self) -> dict:
        """Nodes ``[id, label, x, y, kind]`` with positions, edges ``[i, j]``, actor lanes ``[key, label, row]``:
        tasks, or past ``group_above`` tasks one node per group (plus the expanded group's newest tasks)."""
        lanes: list = []
        if self.grouped:
            keys = list(self.groups)        # the expanded group stays (drawn bold): a click on it folds
            edges = list(self.group_edges)
            pos = layered_layout(keys, edges, max_rows=12)
            nodes = [[k, self.groups[k].label, *pos[k], self.groups[k].kind] for k in keys]
            self._expanded_ids = []
            if self.expanded in self.groups:
                ids = [tid for tid, task in self.tasks.items() if task[_GROUP] == self.expanded][-EXPAND_MAX:]
                self._expanded_ids = ids
                top = (max((n[3] for n in nodes), default=-1.0)) + 1.0
                lanes.append([self.expanded, self.groups[self.expanded].label + " (expanded)", top])
                # eight to a row, 3/4 of a group column and half a group row apart: a block under the groups
                nodes += [[f"{tid:x}", self.tasks[tid][_NAME], (i % 8) * 0.75, top + (i // 8) * 0.5, "task"]
                          for i, tid in enumerate(ids)]
            mode = "groups"
            fmt = (lambda k: k)
        else:
            ids = list(self.tasks)
            lane_of = {tid: self.tasks[tid][_GROUP] for tid in ids if self.tasks[tid][_GROUP].startswith("actor:")}
            pos, rows = lane_layout(ids, self.edges, lane_of)
            nodes = [[f"{i:x}", self.tasks[i][_NAME], *pos[i], "call" if i in lane_of else "task"] for i in ids]
            lanes = [[key, self.groups[key].label, row] for key, row in rows]
            edges = self.edges
            mode = "tasks"
            fmt = (lambda k: f"{k:x}")
        index = {n[0]: j for j, n in enumerate(nodes)}
        return {"mode": mode, "nodes": nodes, "lanes": lanes, "expanded": self.expanded,
                "edges": [[index[fmt(a)], index[fmt(b)]] for a, b in edges if fmt(a) in index and fmt(b) in index],
                "version": self.structure}

    def expand(self, key: str | None) -> None:
        """Show group ``key`` of the grouped view task by task (None, or the same key again: fold it)."""
        self.expanded = None if key == self.expanded or key not in self.groups else key
        self.structure += 1
        self.dirty = True

    def snapshot_states(self, now: float) -> dict:
        """Tasks: ``{id: [state, engine, seconds, error, start, end, wait, fetch, args]}`` (start and end:
        epoch seconds or None; wait: seconds from ready to start, or queued so far; fetch: seconds fetching
        its ref arguments; args: ``[pickled bytes, [[ref id, bytes], ...]]``, None where nothing is known,
        a ref's bytes None where unknown); groups: ``{key: [counts, mean s]}``, plus the expanded group's
        tasks as tasks."""
        out: dict = {}
        if self.grouped:
            out = {k: [{s: n for s, n in g.counts.items() if n}, round(g.dur_sum / g.dur_n, 4) if g.dur_n else None]
                   for k, g in self.groups.items()}
            items = [(tid, self.tasks[tid]) for tid in self._expanded_ids if tid in self.tasks]
        else:
            items = self.tasks.items()
        sizes = None
        for tid, task in items:
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
                if task[_ERROR] is _UNREAD:
                    task[_ERROR] = hooks.task_error(tid)
                err = task[_ERROR]
            ready = task[_READY]
            if start and 0.0 < ready <= start:
                wait = round(start - ready, 4)
            elif ready and state in ("queued", "assigned"):
                wait = round(now - ready, 3)
            else:
                wait = None
            args = None
            if task[_ARGS] is not None or task[_DEPS]:
                if sizes is None:       # a ref's value: a task's result (its finished event), else a listed object
                    sizes = {o["id"]: o.get("size") for o in (self.store or {}).get("largest", ())}
                refs = []
                for d in task[_DEPS]:
                    dep = self.tasks.get(d)
                    size = dep[_SIZE] if dep is not None and dep[_SIZE] is not None else sizes.get(f"{d:x}")
                    refs.append([f"{d:x}", size])
                args = [task[_ARGS], refs]
            out[f"{tid:x}"] = [state, task[_ENGINE], dur, err, round(start, 3) if start else None,
                                round(task[_END], 3) if task[_END] else None, wait,
                                round(task[_FETCH], 7) if task[_FETCH] else None, args]
        return out

    def snapshot_stream(self, now: float) -> dict:
        """The task stream's trait value (see :mod:`.task_stream`)."""
        labels = {k: g.label for k, g in self.groups.items() if g.kind == "actor"}
        return self.stream.snapshot(now, self.engines, labels)

    def snapshot_engines(self) -> list:
        """One dict per engine; ``cpu``, ``rss``, ``shared`` and ``heap`` are None until its first sample;
        ``limit`` is its host's memory where known (the kernel's own host), else None."""
        names = self.tasks
        out = []
        for eid in sorted(self.engines):
            e = self.engines[eid]
            cur = names.get(e["task"]) if e["task"] else None
            b = e["bucket"]       # the second in progress counts too: the sparkline ends now
            hist_cpu = list(e["hist_cpu"]) + ([round(b[1] / b[2], 1)] if b[2] else [])
            hist_heap = list(e["hist_heap"]) + ([b[3]] if b[2] else [])
            m = e["measured"]
            out.append({"id": eid, "node": e["node"], "pid": e["pid"], "cpu": round(e["cpu"], 1) if m else None,
                        "rss": e["rss"] if m else None, "shared": e["shared"] if m else None,
                        "heap": e["heap"] if m else None, "task": cur[_NAME] if cur else
                        (f"{e['task']:x}" if e["task"] else ""), "hist_cpu": hist_cpu[-HISTORY:],
                        "hist_heap": hist_heap[-HISTORY:], "limit": self.host_memory.get(e["node"])})
        return out

    def snapshot_totals(self, now_mono: float) -> dict:
        finished = self.finished + self.sum_finished
        marks = self.rate_marks
        marks.append((now_mono, finished))
        while len(marks) > 2 and now_mono - marks[0][0] > 3.0:
            marks.popleft()
        t0, f0 = marks[0]
        rate = (finished - f0) / (now_mono - t0) if now_mono - t0 > 0.05 else 0.0
        actors = []
        for aid, a in sorted(self.actors.items()):
            g = self.groups.get(f"actor:{aid:x}")
            calls = {s: n for s, n in g.counts.items() if n} if g else {}
            actors.append({"id": f"{aid:x}", "class": a.get("class", "?"), "name": a.get("name", ""),
                           "state": a.get("state", "?"), "calls": calls})
        states = self.counts + self.sum_counts if self.summary_mode else self.counts
        return {"states": {s: n for s, n in states.items() if n}, "tasks": sum(states.values()),
                "finished": finished, "rate": round(rate, 1), "actors": actors, "store": self.store,
                "sampled": self.summary_mode and sum(self.sum_counts.values()) > len(self.tasks),
                "engines": len(self.engines), "grouped": self.grouped, "group_above": self.group_above,
                "events": self.events}


def local_host_memory() -> dict:
    """``{name: bytes}`` for the names an engine on this kernel's host reports as its node: the
    memory its bars are drawn against (other hosts' memory is not reported, so theirs are relative)."""
    import socket

    import psutil

    total = psutil.virtual_memory().total
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:     # a host name that does not resolve: the names above will do
        pass
    return {n: total for n in names if n}
