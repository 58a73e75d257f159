"""The sidebar's card for a cluster the Jupyter server cannot watch (Dask, Ray), measured by the
kernel that drives it and pushed over the sidebar's comm.

The server extension (:mod:`jpar.labserver`) finds native heads by their runtime files and watches
them as a client of its own. A Dask scheduler or a Ray cluster it can neither find nor speak to;
the notebook's kernel already holds that backend's front end, so the kernel measures it, through
:mod:`jpar.hooks` only, as ``jpar.dashboard()`` does::

    hooks.subscribe_events()     task events  -> ClusterFigures.apply: counts per state, finished/s
    every STATUS_INTERVAL_S      hooks.status() (engines: CPU, RSS, queued, busy)
                                 hooks.store_statistics() (per node: used, capacity, spilled)
              |
    ClusterPusher (one thread per sidebar comm): a snapshot in jpar.labserver's shape, at most
    every PUSH_INTERVAL_S and only when it changed
              kernel -> sidebar {"push": "cluster", "cluster": {...} or null}

Messages a kernel sends on its own carry no busy/idle status, so a running cell stays *Busy* in
the status bar. While a comm is open the backend counts as watched (its workers report task
starts and ends), which costs what an open dashboard costs.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from typing import Any

__all__ = ["SERVER_WATCHED", "STATUS_INTERVAL_S", "PUSH_INTERVAL_S", "ClusterFigures", "ClusterPusher", "card_info",
           "store_figures"]

#: backends whose clusters the Jupyter server finds and watches itself (jpar.labserver); the kernel
#: pushes a card for any other
SERVER_WATCHED = frozenset({"native"})
STATUS_INTERVAL_S = 1.0    # engines and store asked this often (as jpar.labserver's Watcher does)
PUSH_INTERVAL_S = 0.5      # a snapshot sent at most this often
STATES = ("waiting", "queued", "assigned", "running", "done", "failed", "cancelled")
FINISHED = frozenset({"done", "failed", "cancelled"})
_REMEMBER = 100_000        # ids of finished tasks kept, so a late event does not count one twice


def card_info(backend: Any) -> dict:
    """What the card says about the backend itself: its name, capabilities (flags), a tooltip for
    each missing one (the feature and what to do instead), and what its stop button does (it asks
    this kernel, while idle, to run ``jpar.shutdown()``: see :func:`.sidebar_comm.stop_cluster`)."""
    from jpar.backends import FEATURES

    caps = dataclasses.asdict(backend.capabilities)
    unsupported = {flag: f"The {backend.name} backend does not support {FEATURES[flag][0]}: "
                         f"{FEATURES[flag][1]} instead." for flag, ok in caps.items() if not ok and flag in FEATURES}
    owned = bool(backend.owns_cluster)
    stop = (f"Stop this {backend.name} cluster and its workers (jpar started it): jpar.shutdown() in the notebook "
            "that drives it" if owned else
            f"Disconnect the notebook that drives it from this {backend.name} cluster (jpar.shutdown(); jpar did not "
            "start it, so it keeps running)")
    return {"backend": backend.name, "capabilities": caps, "unsupported": unsupported, "owned": owned,
            "stop_title": stop}


def store_figures(raw: Any) -> tuple[dict, list]:
    """``{node: statistics}`` as a backend reports it -> (totals, per node) in the sidebar's keys
    (``used``, ``capacity``, ``spilled``, ``objects``; ``objects`` None where the backend counts none)."""
    nodes = []
    for key, s in (raw or {}).items():
        s = dataclasses.asdict(s) if dataclasses.is_dataclass(s) else dict(s or {})
        count = s.get("object_count", s.get("objects"))
        count = len(count) if isinstance(count, (list, tuple)) else count
        nodes.append({"node": str(key), "host": str(s.get("host") or key),
                      "used": int(s.get("bytes_used", s.get("used")) or 0),
                      "capacity": int(s.get("capacity") or 0),
                      "spilled": int(s.get("spilled_bytes", s.get("spilled")) or 0),
                      "objects": int(count) if isinstance(count, (int, float)) else None})
    counts = [n["objects"] for n in nodes if n["objects"] is not None]
    total = {"used": sum(n["used"] for n in nodes), "capacity": sum(n["capacity"] for n in nodes),
             "spilled": sum(n["spilled"] for n in nodes), "objects": sum(counts) if counts else None}
    return total, nodes


def _engine_row(e: dict) -> dict:
    rss = int(e.get("rss") or 0)
    measured = rss > 0      # a backend reports rss 0 until the engine's first sample: "-", not 0 %
    return {"id": e["id"], "node": str(e.get("host") or e.get("node") or ""), "pid": int(e.get("pid") or 0),
            "cpu": round(float(e.get("cpu") or 0.0), 1) if measured else None, "rss": rss if measured else None,
            "queued": int(e.get("queued") or 0), "busy": bool(e.get("executing") or e.get("task")),
            "mem_limit": int(e.get("memory_limit") or 0)}


class ClusterFigures:
    """Task counts from events, engines and store from status answers; no threads (tested alone)."""

    def __init__(self) -> None:
        self.states: dict[int, str] = {}                  # unfinished task id -> state
        self.counts: collections.Counter = collections.Counter()
        self.finished = 0
        self.ended: set = set()
        self.ended_order: collections.deque = collections.deque()
        self.marks: collections.deque = collections.deque()   # (monotonic, finished) over the last 3 s
        self.status: dict | None = None
        self.store: Any = None

    def apply(self, events) -> bool:
        """Task events -> counts per state; whether anything changed."""
        changed = False
        for ev in events:
            _, kind, tid, state, _info = ev
            if kind != "task" or state not in STATES or tid in self.ended:
                continue
            old = self.states.get(tid)
            if old == state:
                continue
            if old is not None:
                self.counts[old] -= 1
            self.counts[state] += 1
            changed = True
            if state in FINISHED:
                self.states.pop(tid, None)
                self.finished += 1
                self.ended.add(tid)
                self.ended_order.append(tid)
                if len(self.ended_order) > _REMEMBER:
                    self.ended.discard(self.ended_order.popleft())
            else:
                self.states[tid] = state
        return changed

    def rate(self, now: float) -> float:
        marks = self.marks
        marks.append((now, self.finished))
        while len(marks) > 2 and now - marks[0][0] > 3.0:
            marks.popleft()
        (t0, f0), (t1, f1) = marks[0], marks[-1]
        return round((f1 - f0) / (t1 - t0), 1) if t1 - t0 > 0.05 else 0.0

    def snapshot(self, driver: dict, info: dict, now: float) -> dict:
        """The card: the keys of ``jpar.labserver.status_snapshot`` plus what only this path has."""
        st = self.status or {}
        engines = [_engine_row(e) for e in sorted(st.get("engines", ()), key=lambda e: e["id"])]
        store, nodes = store_figures(self.store)
        pending = sum(n for s, n in self.counts.items() if s not in FINISHED)
        actors = [{"id": a.get("id"), "class": str(a.get("class", "?")), "name": str(a.get("name") or ""),
                   "state": str(a.get("state", "?"))} for a in st.get("actors", ()) or () if isinstance(a, dict)]
        return dict(info, source="kernel", address=driver["address"], id=driver["cluster_id"], engines=engines,
                    tasks={s: self.counts[s] for s in STATES}, rate=self.rate(now), store=store, store_nodes=nodes,
                    actors=actors, memory_total=_memory_total(),
                    drivers=[{"no": driver["client_no"], "pid": os.getpid(), "kind": "kernel",
                              "host": os.uname().nodename, "tasks": pending}])


def _memory_total() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:   # psutil is a dependency; the bars fall back to each engine's limit
        return 0


class ClusterPusher:
    """One sidebar comm's thread: while this kernel drives a cluster the server cannot watch, its
    card, pushed whenever it changes; ``{"cluster": None}`` once it has gone."""

    def __init__(self, send, interval: float = PUSH_INTERVAL_S, status_interval: float = STATUS_INTERVAL_S):
        self.send = send                  # send(dict) through the comm (thread-safe)
        self.interval = interval
        self.status_interval = status_interval
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jpar-sidebar-cluster", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        from jpar import backends

        watched = sub = figures = None
        info: dict = {}
        sent: Any = None
        next_status = next_push = 0.0
        try:
            while not self.stopping.is_set():
                b = backends.current()
                live = b is not None and not b.closed and b.name not in SERVER_WATCHED
                if b is not watched or not live:
                    if sub is not None:
                        sub.close()
                    watched = sub = figures = None
                    if sent is not None:       # the card this comm showed has gone
                        self._send(None)
                        sent = None
                    if not live:
                        self.stopping.wait(self.interval)
                        continue
                    watched, figures, info = b, ClusterFigures(), card_info(b)
                    sub = self._subscribe()
                    next_status = next_push = 0.0
                events = sub.poll(min(0.25, self.interval)) if sub is not None else []
                if not events and sub is None:
                    self.stopping.wait(min(0.25, self.interval))
                changed = figures.apply(events)
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + self.status_interval
                    changed = self._refresh(figures) or changed
                if (changed or sent is None) and now >= next_push and figures.status is not None:
                    snap = self._snapshot(figures, info, now)
                    if snap is not None and snap != sent:
                        if not self._send(snap):
                            return
                        sent = snap
                        next_push = now + self.interval
        finally:
            if sub is not None:
                sub.close()

    @staticmethod
    def _subscribe() -> Any:
        from jpar import hooks

        try:
            return hooks.subscribe_events()
        except Exception:   # a backend without events: the card shows engines and store only
            return None

    @staticmethod
    def _refresh(figures: ClusterFigures) -> bool:
        from jpar import hooks

        try:
            st = hooks.status(timeout=5.0)
            store = st.get("object_store") or hooks.store_statistics(timeout=5.0)
        except Exception:   # closing, or a slow answer: the next refresh will do
            return False
        figures.status, figures.store = st, store
        return True

    @staticmethod
    def _snapshot(figures: ClusterFigures, info: dict, now: float) -> dict | None:
        from jpar import hooks

        driver = hooks.driver_info()
        return None if driver is None else figures.snapshot(driver, info, now)

    def _send(self, card: dict | None) -> bool:
        try:
            self.send({"push": "cluster", "cluster": card})
            return True
        except Exception:    # the comm or the kernel is closing
            self.stopping.set()
            return False
