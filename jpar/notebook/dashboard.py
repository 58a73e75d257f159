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

On the native backend the dashboard reads the head's *summary* stream
(``hooks.subscribe_events(summary=True)``, see :mod:`jpar.runtime.head.task_summary`): the
function groups' counts come from the head every 0.25 s, and only the first 500 tasks
submitted each second (and every failed one) come one by one, for the DAG below
``group_above``, the task stream and an expanded group. At 100,000 tasks that is what keeps
the dashboard's cost to a few percent of throughput. Dask and Ray send every event.
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
from jpar import hooks, trace
from jpar.errors import import_optional
from jpar.refs import ObjectRef

anywidget = import_optional("anywidget", "jpar.dashboard()")
traitlets = import_optional("traitlets", "jpar.dashboard()")

from .dashboard_model import STATES, DashboardModel, local_host_memory

__all__ = ["Dashboard", "DashboardModel", "DashboardStatistics", "dashboard", "STATES"]

log = logging.getLogger("jpar.dashboard")

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
    stream = traitlets.Dict().tag(sync=True)
    status = traitlets.Unicode("starting").tag(sync=True)

    def __init__(self, *, max_hz: float = 4.0, group_above: int = 300, status_interval: float = 1.0,
                 max_tasks: int = 200_000, stream_window: float = 60.0, start: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0 < max_hz <= 10:
            raise ValueError(f"max_hz={max_hz} must be in (0, 10]: browsers gain nothing from more updates.")
        self.max_hz = max_hz
        self.status_interval = status_interval
        self.model = DashboardModel(group_above=group_above, max_tasks=max_tasks, stream_window=stream_window,
                                    host_memory=local_host_memory(),
                                    client_no=(hooks.driver_info() or {}).get("client_no"))
        self.publishes = 0
        self._latencies: collections.deque = collections.deque(maxlen=1000)
        self._oldest_unsent: float | None = None
        self._cpu = 0.0
        self._stop = threading.Event()
        self._clear = False
        self._expand: list = []        # group keys the browser asked to expand or fold
        self.detailed_group: str | None = None   # the expanded group whose every task the head tells
        self._free: list = []          # object ids (hex) the browser's "free" buttons asked to free
        self._graph_version = -1
        self._thread: threading.Thread | None = None
        self._sub = None
        self.on_msg(self._on_front_end_msg)
        if start:
            self._sub = hooks.subscribe_events(summary=True)   # now, so no event after this call is missed
            self.model.summary_mode = bool(getattr(self._sub, "summary", False))
            trace.attach()                         # what it shows, jpar.timeline() can export
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
        elif isinstance(content, dict) and content.get("type") == "expand":
            self._expand.append(content.get("key"))
        elif isinstance(content, dict) and content.get("type") == "free":
            self._free.append(content.get("id"))

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
                    trace.feed(events)
                elif model._deferred:          # tasks waiting for their call sites (DashboardModel._defer)
                    model.apply(())
                if self._clear:
                    self._clear = False
                    model.reset()
                    model.dirty = True
                while self._expand:
                    before = model.expanded
                    model.expand(self._expand.pop(0))
                    if model.summary_mode and model.expanded != before:
                        self._detail(before, False)
                        on = self._detail(model.expanded, True)
                        self.detailed_group = model.expanded if on else None
                if self._free:
                    while self._free:
                        self.free_object(self._free.pop(0))
                    next_status = 0.0          # the store's figures again now: the row goes at once
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
            if model.summary_mode and model.expanded:
                self._detail(model.expanded, False)
            sub.close()
            trace.detach()
            self._cpu = time.thread_time() - cpu0

    def _detail(self, group: str | None, on: bool) -> bool:
        """On the summary stream: have the head tell every task of the group this dashboard expands
        (its newest tasks, not only the sample), or no longer once folded. Whether the head agreed."""
        keys = self.model.head_keys.get(group) if group else None
        if not keys:
            return False
        try:
            return hooks.summary_expand(sorted(keys), on)
        except Exception:   # a stopping cluster: the expanded group shows the sample it has
            log.info("could not ask the head to detail group %r", group, exc_info=True)
            return False

    def free_object(self, object_id: Any) -> bool:
        """A "free" button's message: :func:`jpar.free` the object, if it is a row of the largest-objects
        table that this process holds a ref to (the button is disabled otherwise; checked again here,
        whatever sent the message). The row leaves the table at once. Whether it was freed."""
        store = self.model.store or {}
        row = next((r for r in store.get("largest", ()) if r.get("id") == object_id), None)
        if row is None or not row.get("freeable"):
            log.info("not freeing object %r: not a row of the store table that this notebook holds a ref to",
                     object_id)
            return False
        info = hooks.driver_info() or {}
        try:
            ref = ObjectRef(int(object_id, 16), row.get("owner_no") or 0, cluster=info.get("cluster_id"))
            jpar.free(ref)   # a ref with no driver: its collection releases nothing
        except Exception:
            log.exception("jpar.free of object %s from the dashboard failed", object_id)
            return False
        store["largest"] = [r for r in store["largest"] if r is not row]
        self.model.dirty = True
        return True

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
            self.stream = model.snapshot_stream(now)
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
    between engine/actor/store refreshes, default 1), ``stream_window`` (seconds of the task stream,
    default 60).
    """
    if not jpar.is_initialized():
        raise jpar.NotInitializedError("jpar.dashboard()")
    return Dashboard(**options)
