"""``jpar.timeline()``: the tasks this driver has seen, as a Chrome trace (Perfetto, chrome://tracing).

::

    jpar.hooks.subscribe_events() --> recorder thread (one per process) --> spans (bounded deque)
                                                                                  |
                                            jpar.timeline(path=None) -> Trace Event Format "X" events

The recorder folds the same task events the dashboard reads (``running`` carries the engine; a
finished state ends the span), so it works on every backend. A run also has its wait (from the
task's last ``queued`` event, or on backends that send none its last argument's end, to its start:
a nestable async slice, as waits overlap) and, on the native backend, its transfer (the seconds its
engine spent fetching its ref arguments, the finished event's ``fetch``: a slice nested at the start
of the run), so Perfetto shows where a task's time went. The head publishes per-task events
only while someone subscribes, so recording is not free and starts on demand: at the first
``jpar.timeline()`` call or at :func:`start` (a subscription and a thread of its own), and while a
dashboard is open (its updater thread hands over the events it reads: :func:`feed`; a second
subscription would decode every event twice, which halved throughput). On the native backend a
dashboard reads the summary stream, which past 500 new tasks a second carries a sample of tasks:
a timeline recorded only that way then says how many tasks it misses (a warning), and one
started before the work (:func:`start`, or a first ``jpar.timeline()``) has every task. It stops with the cluster
and keeps what it saw, so ``jpar.timeline()`` still answers after ``jpar.shutdown()``.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import warnings
from typing import Any

from . import backends, hooks

__all__ = ["timeline", "start", "stop", "recording", "wait_recorded", "attach", "detach", "feed"]

FINISHED = frozenset({"done", "failed", "cancelled"})
KEEP = 200_000          # spans kept (the oldest go first)


class _Recorder:
    """One subscription and one thread; ``spans`` holds (start, end, engine, node, name, task id, state,
    ready, fetch): ready 0.0 when unknown."""

    def __init__(self) -> None:
        self.spans: collections.deque = collections.deque(maxlen=KEEP)
        self.open: dict = {}          # task id -> [name, start, engine, ready] of a running task
        self.names: dict = {}         # task id -> name (from its submission event)
        self.ready: dict = {}         # task id -> its first queued event since it last ran
        self.waiting: dict = {}       # task id -> (submitted, deps) of a task submitted waiting, until it runs
        self.nodes: dict = {}         # engine id -> host
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.ended: dict = {}         # ids of recorded spans -> their end (wait_recorded, ready times)
        self.stop = threading.Event()
        self.sub: Any = None
        self.thread: threading.Thread | None = None
        self.backend: Any = None      # the cluster connection recorded (task ids are unique within one)
        # fed by a dashboard on the summary stream (a sample of tasks past 500 a second): tasks the head
        # counted finished since its first summary, and the ends recorded since, to tell what is missing
        self.summary_base: int | None = None
        self.summary_done = 0
        self.ends_since = 0

    def adopt(self, backend: Any) -> None:
        if backend is not self.backend:          # another cluster (or a new init): its ids start over
            with self.lock:
                self.spans.clear()
                self.open.clear()
                self.names.clear()
                self.ready.clear()
                self.waiting.clear()
                self.ended.clear()
                self.summary_base = None
            self.backend = backend

    def begin(self) -> None:
        self.stop.clear()
        self.adopt(backends.current())
        self.sub = hooks.subscribe_events()      # now: no later event is missed
        self.thread = threading.Thread(target=self._run, name="jpar-timeline", daemon=True)
        self.thread.start()

    def end(self) -> None:
        self.stop.set()
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.current()

    def current(self) -> bool:
        """Whether the recorded cluster connection is still this process's live one."""
        b = backends.current()
        return b is not None and b is self.backend and not b.closed

    def _run(self) -> None:
        sub = self.sub
        try:
            while not self.stop.is_set():
                events = sub.poll(0.25)
                if events:
                    self.apply(events)
                elif not self.current():
                    break
        except Exception:   # a closed backend's subscription: keep what was recorded
            pass
        finally:
            sub.close()

    def apply(self, events) -> None:
        with self.lock:
            for t, kind, key, state, info in events:
                if kind == "task":
                    if info and info.get("name"):
                        self.names[key] = info["name"]
                        if state == "waiting":
                            self.waiting[key] = (t, info.get("deps") or ())
                    if state == "running":
                        eng = info.get("engine") if info else None
                        self.open[key] = [self.names.get(key, "?"), t, -1 if eng is None else eng,
                                          self._ready(key)]
                    elif state == "queued":
                        self.ready.setdefault(key, t)    # taken back unstarted: ready since the first
                        self.waiting.pop(key, None)
                    elif state in FINISHED:
                        self.ends_since += 1
                        self.names.pop(key, None)
                        self.ready.pop(key, None)
                        self.waiting.pop(key, None)
                        run = self.open.pop(key, None)
                        if run is not None:
                            if len(self.spans) == self.spans.maxlen:
                                self.ended.pop(self.spans[0][5], None)
                            fetch = (info.get("fetch") or 0.0) if info else 0.0
                            self.spans.append((run[1], t, run[2], self.nodes.get(run[2], ""), run[0], key, state,
                                               run[3], fetch))
                            self.ended[key] = t
                elif kind in ("metrics", "engine") and info and info.get("node"):
                    self.nodes[key] = info["node"]
                elif kind == "summary" and isinstance(info, dict):
                    done = sum(n for g in info.get("groups") or () for s, n in g[3].items() if s in FINISHED)
                    if self.summary_base is None:
                        self.summary_base, self.ends_since = done, 0
                    self.summary_done = done - self.summary_base
            self.changed.notify_all()

    def _ready(self, key: int) -> float:
        """When a task starting now became ready: its first queued event since it last ran, else (submitted waiting, on
        backends that send no queued event) the end of its last recorded argument or its submission."""
        ready = self.ready.pop(key, 0.0)
        if not ready and key in self.waiting:
            ready, deps = self.waiting.pop(key)
            ended = self.ended
            for d in deps:
                ready = max(ready, ended.get(d, 0.0))
        return ready

    def trace(self) -> list:
        with self.lock:
            spans = list(self.spans)
            nodes = dict(self.nodes)
        return chrome_trace(spans, nodes)


def chrome_trace(spans, nodes: dict | None = None) -> list:
    """Trace Event Format events: one "X" (complete) event per span, ``ts``/``dur`` in microseconds,
    ``pid`` the engine's host, ``tid`` the engine; "M" events name them. A span may end with
    ``ready, fetch`` (see :class:`_Recorder`): its wait is a "b"/"e" pair (cat "wait", id the task
    id: nestable async events, as the waits of queued tasks overlap), its transfer an "X" event
    (cat "transfer") nested at the start of the run; the run's args then give both in ms."""
    nodes = nodes or {}
    hosts: dict = {}
    out: list = []
    for start, end, engine, node, name, tid, state, *phases in spans:
        host = node or nodes.get(engine, "") or "cluster"
        pid = hosts.setdefault(host, len(hosts) + 1)
        ts, dur, engine = round(start * 1e6, 1), round(max(0.0, end - start) * 1e6, 1), int(engine)
        run = {"name": name, "cat": "task", "ph": "X", "ts": ts, "dur": dur, "pid": pid, "tid": engine,
               "args": {"task_id": f"{tid:x}", "state": state, "engine": engine}}
        out.append(run)
        ready, fetch = phases if phases else (0.0, 0.0)
        if 0.0 < ready < start:
            run["args"]["wait_ms"] = round((start - ready) * 1e3, 3)
            wait = {"name": f"wait {name}", "cat": "wait", "id": f"0x{tid:x}", "pid": pid, "tid": engine,
                    "args": {"task_id": f"{tid:x}", "engine": engine}}
            out.append(dict(wait, ph="b", ts=round(ready * 1e6, 1)))
            out.append(dict(wait, ph="e", ts=ts, args={}))
        if fetch > 0.0:
            run["args"]["fetch_ms"] = round(fetch * 1e3, 3)
            out.append({"name": "fetch arguments", "cat": "transfer", "ph": "X", "ts": ts,
                        "dur": min(dur, round(fetch * 1e6, 1)), "pid": pid, "tid": engine,
                        "args": {"task_id": f"{tid:x}"}})
    meta = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"host {host}"}}
            for host, pid in hosts.items()]
    threads = sorted({(e["pid"], e["tid"]) for e in out if e["ph"] == "X"})
    meta += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
              "args": {"name": f"engine {tid}" if tid >= 0 else "engine ?"}} for pid, tid in threads]
    return meta + out


_recorder: _Recorder | None = None
_lock = threading.Lock()
_feeders = 0            # open dashboards handing their events over (see feed)


def attach() -> None:
    """A dashboard opened: it will :func:`feed` its events (so :func:`timeline` needs no subscription)."""
    global _recorder, _feeders
    with _lock:
        if _recorder is None:
            _recorder = _Recorder()
        _recorder.adopt(backends.current())
        _feeders += 1


def detach() -> None:
    """A dashboard closed."""
    global _feeders
    with _lock:
        _feeders = max(0, _feeders - 1)


def feed(events) -> None:
    """Events a dashboard read: recorded unless the recorder reads them itself."""
    rec = _recorder
    if rec is not None and not (rec.thread is not None and rec.thread.is_alive()):
        rec.apply(events)


def start() -> None:
    """Record this driver's tasks for :func:`timeline` from now on (idempotent; needs a cluster)."""
    global _recorder
    with _lock:
        if _recorder is None:
            _recorder = _Recorder()
        if not _recorder.alive:
            _recorder.end()            # a thread still draining a closed cluster's subscription
            _recorder.begin()


def stop() -> None:
    """Stop recording (what was recorded stays for :func:`timeline`)."""
    if _recorder is not None:
        _recorder.end()


def recording() -> bool:
    """Whether tasks are being recorded now (by a subscription of its own or an open dashboard)."""
    return _recorder is not None and (_recorder.alive or _fed())


def wait_recorded(task_ids, timeout: float = 10.0) -> bool:
    """Wait until the runs of these tasks (ids, e.g. ``ref.id``) are recorded: their last events reach
    the driver shortly after ``jpar.get`` returns. False after ``timeout`` seconds."""
    rec = _recorder
    if rec is None:
        return False
    want = set(task_ids)
    with rec.changed:
        return rec.changed.wait_for(lambda: want <= rec.ended.keys(), timeout)


def timeline(path: str | os.PathLike | None = None) -> list | None:
    """The tasks this driver has seen finish, as Chrome trace events (open them in
    https://ui.perfetto.dev or chrome://tracing), like ``ray.timeline()``.

    One "X" event per task run: ``name`` its function, ``ts`` and ``dur`` in microseconds,
    ``pid`` the engine's host, ``tid`` the engine, ``args`` the task id and final state (and
    ``wait_ms``, ``fetch_ms`` where known); its wait from ready to start is an async "b"/"e" pair
    (cat "wait") and its argument transfer a nested "X" event (cat "transfer"). Tasks are
    recorded from the first call of this function, :func:`jpar.trace.start` or ``jpar.dashboard()``
    on, and while a dashboard is open: call it once before the work you want to see (it then returns
    what has been seen so far).
    With ``path``, writes the events there as a JSON array and returns None; else returns them."""
    if _recorder is None or (not _recorder.alive and not _fed() and _initialized()):
        start()
    rec = _recorder
    if rec is not None and rec.summary_base is not None and rec.summary_done > rec.ends_since:
        warnings.warn(f"jpar.timeline(): about {rec.summary_done - rec.ends_since} of {rec.summary_done} tasks "
                      "finished since the dashboard opened are not in this timeline: a dashboard follows a sample "
                      "of tasks past 500 new ones a second. Call jpar.timeline() (or jpar.trace.start()) before "
                      "the work to record every task.", stacklevel=2)
    events = rec.trace() if rec is not None else []
    if path is None:
        return events
    with open(path, "w") as f:
        json.dump(events, f)
    return None


def _fed() -> bool:
    return _feeders > 0 and _recorder is not None and _recorder.current()


def _initialized() -> bool:
    b = backends.current()
    return b is not None and not b.closed
