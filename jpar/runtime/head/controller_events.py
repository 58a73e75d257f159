"""What the head publishes on its event stream: the full stream (every task's every transition) and
the summary stream dashboards read (see :mod:`.task_summary`), and the events both carry.

Mixed into :class:`jpar.runtime.head.controller.Head`. Events are collected while the head handles a
turn's messages and leave in one ``Events`` message per stream at the end of the turn
(:meth:`EventStream._flush_events`). Per-task events are built only while someone reads them:
the scheduler makes its Transition actions only then (``Scheduler.transitions``), and the summary
stream tells most tasks only as counts.
"""

from __future__ import annotations

from ..wire import protocol as P
from . import task_events
from .scheduler_state import Transition
from .task_summary import UNTOLD, TaskSummary

__all__ = ["EventStream"]


class EventStream:
    """The event-stream part of the head (its ``pub``, ``sched`` and ``stores`` are the Head's)."""

    def _init_events(self) -> None:
        self.events: list = []       # the full event stream's next message
        self.sum_events: list = []   # the summary stream's (dashboards)
        self.summary_sent = 0.0

    @property
    def summary(self) -> TaskSummary | None:
        """The summary stream's counts while someone reads it (the scheduler's: it moves them)."""
        return self.sched.summary

    def _update_listeners(self, someone: bool = False) -> None:
        """Per-task transitions are made (by the scheduler) and published only while someone listens."""
        pub = self.pub
        listened = pub.update_listeners()
        if someone and not listened:
            pub.listened = pub.full = listened = True   # the last subscriber leaving sends a notice: False again
        sched = self.sched
        sched.transitions, sched.full_stream = listened, pub.full
        if not pub.summary:        # the counts live in the scheduler, which moves them (see _move)
            sched.summary = None
        elif sched.summary is None:
            sched.summary = TaskSummary()

    def _task_event(self, a: Transition, now: float) -> None:
        """A task's transition on the full stream, and on the summary stream where it is told (a
        detailed task's, a failure: see task_summary)."""
        pub, told = self.pub, a.told    # counted by the scheduler's move (see Scheduler._move)
        if not told and not pub.full:
            return
        info = None
        if a.old is None:
            task = self.sched.tasks.get(a.task_id)
            if task is not None:
                info = task_events.submitted(task)
        elif a.new.value in ("running", "assigned"):
            task = self.sched.tasks.get(a.task_id)
            info = {"engine": task.engine} if task is not None else None
        elif self.done_info:    # a finished (or retried) task of the TaskDone being applied
            info = self.done_info.pop(a.task_id, None)
        ev = P.Event(now, "task", a.task_id, a.new.value, info)
        if pub.full:
            self.events.append(ev)
        if told == UNTOLD and self.summary is not None:   # its first event there: with what places it
            ev = ev._replace(info={**self.summary.placed(a.task_id), **(info or {})})
        if told:
            self.sum_events.append(ev)

    def _done_info(self, results: list) -> dict | None:
        """What finished tasks' events carry (fetch, size): for every task while the full stream is
        read, else for the detailed ones of the summary stream."""
        pub = self.pub
        if pub.full:
            return task_events.finished(results, self.stores.locations)
        summary = self.summary
        if summary is None:
            return None
        detailed = summary.detailed
        return task_events.finished([r for r in results if r.task_id in detailed], self.stores.locations)

    def _expand_group(self, arg) -> bool:
        """A summary reader expanded or folded a group: ``[[owner, name, site], on]``."""
        if self.summary is None or not isinstance(arg, (list, tuple)) or len(arg) != 2:
            return False
        key, on = arg
        if not isinstance(key, (list, tuple)) or len(key) != 3:
            return False
        self.summary.expand(key, bool(on))
        return True

    def _summary_event(self) -> P.Event:
        info = self.summary.snapshot()
        return P.Event(info["time"], "summary", info["seq"], "groups", info)

    def _event(self, ev: P.Event) -> None:
        """An event other than a task's transition: on both streams, as they are read."""
        pub = self.pub
        if pub.summary:
            self.sum_events.append(ev)
            if not pub.full:
                return
        self.events.append(ev)

    def _summarize(self, now_mono: float) -> None:
        """Every PERIOD_S while anything changed: the summary stream's counts."""
        if self.summary is not None and self.summary.due(now_mono, self.summary_sent):
            self.summary_sent = now_mono
            self.sum_events.append(self._summary_event())

    def _flush_events(self) -> None:
        if self.events:
            events, self.events = self.events, []
            self.events_published += len(events)
            self.pub.send(P.Events(events), nowait=True)
        if self.sum_events:
            events, self.sum_events = self.sum_events, []
            self.events_published += len(events)
            self.pub.send(P.Events(events), nowait=True, summary=True)
