"""Per-call-site task counts for dashboards: what the head publishes instead of every task's events.

A dashboard in its grouped view draws one node per function and call site with counts per state;
at 100,000 tasks, four events per task (queued, assigned, running, done) cost the head about 3 us
each to make and publish and the kernel as much again to read, which took a third of a 2-core
machine's throughput. A dashboard therefore subscribes to the *summary* stream (see
:class:`~jpar.runtime.wire.transport.Publisher`): while one listens, the controller feeds every task
transition here (a counter move, ~0.5 us), and every :data:`PERIOD_S` it publishes one ``summary``
event with the absolute counts of every group, so a lost or late message leaves nothing wrong.

Some tasks are still told one by one, *detailed*, so the dashboard can draw them (the DAG below
``group_above`` tasks, the task stream, an expanded group, hovering): the first
:data:`DETAIL_PER_S` tasks submitted in each second, every task of a group a reader expanded
(:meth:`TaskSummary.expand`), and every task that fails. Below that rate every task is detailed,
so a small run looks exactly as it did with the full stream.

Groups are keyed by (owner client, function name, call-site number): the number is the submitting
process's (``TaskSpec.site``, from :mod:`jpar.call_sites`), which that process alone can name.
Tasks submitted before a summary listener appeared are not counted (their later transitions are
ignored), as a full-stream subscriber never saw them either.
"""

from __future__ import annotations

import time

from .scheduler_state import TERMINAL, Queued, TaskState

__all__ = ["TaskSummary", "PERIOD_S", "DETAIL_PER_S", "STATE_ORDER", "DETAILED", "UNTOLD"]

PERIOD_S = 0.25           # seconds between two summary events (while anything changed)
DETAIL_PER_S = 500        # tasks submitted per second that are also told one by one
MAX_GROUPS = 4096         # past it, a new group is keyed without its call site (function name only)
_FINISHED_KEPT = 200_000  # finished tasks whose group is remembered (edges to their dependents)

#: the order of the counts in a group row (the dashboard's STATES)
STATE_ORDER = tuple(s for s in TaskState)
_INDEX = {s: i for i, s in enumerate(STATE_ORDER)}
_RUNNING = TaskState.RUNNING
DETAILED = 1              # moved(): tell this event (the task is detailed)
UNTOLD = 2                # moved(): tell it with what places the task (name, owner, site): its first event
                          # there (a failure, or a task of a group expanded since it was submitted)


class TaskSummary:
    """Counts per group and state, edges between groups, which tasks are detailed. Fed by the
    controller (one thread); :meth:`snapshot` is the ``summary`` event's info."""

    def __init__(self, detail_per_s: int = DETAIL_PER_S):
        self.rows: list = []          # [owner, name, site, counts (list per STATE_ORDER), run seconds, runs]
        self._row_of: dict = {}       # (owner, name, site) -> row index
        self.live: dict = {}          # task id -> [row index, started at (scheduler clock) or None], until it finishes
        self.finished_rows: dict = {}  # task id -> row index of finished tasks (edges to later tasks)
        self.edges: set = set()       # (row index, row index): a task of the first fed one of the second
        self.detailed: set = set()    # ids of unfinished detailed tasks
        self.untold: dict = {}        # task id -> row index of a task first told now (see placed)
        self.expanded: dict = {}      # (owner, name, site) -> readers that expanded it: its tasks are told
        self.detail_per_s = detail_per_s
        self._second = 0
        self._left = detail_per_s
        self.changed = False
        self.seq = 0                  # summaries made

    # ------------------------------------------------------------ feeding
    def submitted(self, task, state: TaskState, now: float) -> bool:
        """A new task (its first transition; ``task`` the scheduler's record, a Task or a compact
        Queued one); True if it is detailed."""
        if type(task) is Queued:     # its spec would be built anew: read the shared proto instead
            p = task.proto
            task_id, name, site, deps, parent = task.task_id, p[1], p[10], task.deps, p[6]
        else:
            spec = task.spec
            task_id, name, site, deps, parent = spec.task_id, spec.name, spec.site, spec.deps, spec.parent
        key = (task.owner, name, site)
        i = self._row_of.get(key)
        if i is None:
            i = self._new_row(key)
        self.rows[i][3][_INDEX[state]] += 1
        self.live[task_id] = [i, None]
        for dep in deps:
            self._edge(dep, i)
        if parent:
            self._edge(parent, i)
        self.changed = True
        sec = int(now)
        if sec != self._second:
            self._second, self._left = sec, self.detail_per_s
        if self._left > 0 or (self.expanded and key in self.expanded):
            if self._left > 0:
                self._left -= 1
            self.detailed.add(task_id)
            return True
        return False

    def moved(self, task_id: int, old: TaskState, new: TaskState, now: float) -> int:
        """A counted task changed state: whether its event is to be told, 0, :data:`DETAILED` or
        :data:`FAILED_UNTOLD`."""
        entry = self.live.get(task_id)
        if entry is None:            # submitted before the summary began: not counted
            return 0
        counts = self.rows[entry[0]][3]
        counts[_INDEX[old]] -= 1
        counts[_INDEX[new]] += 1
        self.changed = True
        if new is _RUNNING:
            entry[1] = now
        elif new in TERMINAL:
            row = self.rows[entry[0]]
            if entry[1] is not None:
                row[4] += now - entry[1]
                row[5] += 1
            del self.live[task_id]
            finished = self.finished_rows
            finished[task_id] = entry[0]
            if len(finished) > _FINISHED_KEPT:
                for k in list(finished)[:_FINISHED_KEPT // 2]:
                    del finished[k]
            if task_id in self.detailed:
                self.detailed.discard(task_id)
                return DETAILED
            if new is TaskState.FAILED or self._expanded(entry[0]):
                self.untold[task_id] = entry[0]
                return UNTOLD
            return 0
        if task_id in self.detailed:
            return DETAILED
        if self._expanded(entry[0]):   # its group was expanded after it was submitted
            self.detailed.add(task_id)
            self.untold[task_id] = entry[0]
            return UNTOLD
        return 0

    def _expanded(self, row: int) -> bool:
        return bool(self.expanded) and tuple(self.rows[row][:3]) in self.expanded

    def expand(self, key: tuple, on: bool) -> None:
        """A reader expanded (``on``) or folded a group (owner, name, site): while any reader has it
        expanded, every task of it is told, whatever the rate."""
        key = tuple(key)
        n = self.expanded.get(key, 0) + (1 if on else -1)
        if n > 0:
            self.expanded[key] = n
        else:
            self.expanded.pop(key, None)

    def placed(self, task_id: int) -> dict:
        """What places a task first told without its submission (name, owner, site), once."""
        i = self.untold.pop(task_id, None)
        if i is None:
            return {}
        owner, name, site = self.rows[i][:3]
        return {"name": name, "owner": owner, "site": site}

    def _new_row(self, key: tuple) -> int:
        if len(self.rows) >= MAX_GROUPS and key[2]:
            key = (key[0], key[1], 0)
            i = self._row_of.get(key)
            if i is not None:
                return i
        i = self._row_of[key] = len(self.rows)
        self.rows.append([key[0], key[1], key[2], [0] * len(STATE_ORDER), 0.0, 0])
        return i

    def _edge(self, source_task: int, row: int) -> None:
        entry = self.live.get(source_task)
        src = entry[0] if entry is not None else self.finished_rows.get(source_task)
        if src is not None and src != row:
            self.edges.add((src, row))

    # ------------------------------------------------------------ publishing
    def due(self, now_mono: float, last: float) -> bool:
        return self.changed and now_mono - last >= PERIOD_S

    def snapshot(self) -> dict:
        """The ``summary`` event's info: ``groups`` ``[[owner, name, site, {state: count}, mean run s,
        runs], ...]`` (absolute; states with a count only), ``edges`` ``[[i, j], ...]`` (indexes into
        ``groups``), ``seq``."""
        self.changed = False
        self.seq += 1
        groups = []
        for owner, name, site, counts, secs, runs in self.rows:
            groups.append([owner, name, site, {STATE_ORDER[k].value: n for k, n in enumerate(counts) if n},
                           round(secs / runs, 6) if runs else None, runs])
        return {"groups": groups, "edges": sorted(self.edges), "seq": self.seq, "time": time.time()}
