"""The dashboard's task stream: which engine ran which task when, over the last minute (a Gantt).

Fed by the dashboard's model from the task events it already reads (``running`` carries the engine,
a finished state ends the span), so it costs the kernel one append per finished task. Besides its
run, a span carries the task's two other phases, as Dask's task stream shows them: its wait (from
becoming ready, its last ``queued`` event or, on backends that send none, its last argument's end, to
its start) and its transfer (the seconds its engine spent fetching its ref arguments, which the
native engine reports in the finished event's ``fetch``; other backends report none). A snapshot
holds at most ``max_bars`` bars: consecutive runs of one function on one engine closer together
than a pixel's worth of time are merged into one bar (its ``n`` says how many), then the newest
bars are kept. Only the newest ``keep`` finished tasks are remembered: past ~70 tasks a second the
stream covers less than its window (as Dask's task stream keeps its last thousand or so), and a
snapshot stays a few milliseconds at any rate. Times are seconds relative to the snapshot's
``now`` (the head's clock), so the browser can keep the picture moving between updates.
"""

from __future__ import annotations

import collections
import operator

__all__ = ["TaskStream"]


class TaskStream:
    """Spans of finished tasks and the running ones; ``snapshot(now)`` is the widget's trait value."""

    def __init__(self, window: float = 60.0, max_bars: int = 1000, keep: int = 4000):
        if window <= 0:
            raise ValueError(f"window={window} must be positive: it is how many seconds the stream shows.")
        self.window = window
        self.max_bars = max_bars
        # (start, end, row, name, tid, state, ready, fetch): ready 0.0 when unknown, fetch in seconds
        self.spans: collections.deque = collections.deque(maxlen=keep)
        self.running: dict = {}                                          # tid -> task record (a list)

    def clear(self) -> None:
        self.spans.clear()
        self.running.clear()

    def started(self, tid: int, task: list) -> None:
        self.running[tid] = task

    def finished(self, tid: int, task: list, start: float, end: float, engine: int, name: str, state: str,
                 ready: float = 0.0, fetch: float = 0.0) -> None:
        """A run ended: ``ready`` is when the task became ready (0.0: unknown), ``fetch`` the seconds
        its engine spent fetching its ref arguments."""
        self.running.pop(tid, None)
        if start:
            self.spans.append((start, end, _row(engine, task), name, tid, state, ready, fetch))

    def snapshot(self, now: float, engines=(), labels: dict | None = None) -> dict:
        """``{now, window, rows: [[row, label]], names, bars: [[row, start, end|None, name index, task id,
        state, n, ready|None, fetch, wait]]}``: a row is an engine id, or an actor's group key
        (``"actor:<id>"``) for calls that ran in an actor's own process; ``labels`` names those. ``ready``
        (relative, like start and end) is when the bar's first task became ready, None when unknown or
        not before its start; ``fetch`` and ``wait`` are seconds, summed over the tasks of a merged bar."""
        cutoff = now - self.window
        by_row: dict = {}                          # row -> its spans (a few rows: sorted apart, in C)
        for span in reversed(self.spans):          # finish order: stop at the first one long gone
            if span[1] < cutoff:
                if span[1] < cutoff - 5.0:
                    break
                continue
            row = by_row.get(span[2])
            if row is None:
                row = by_row[span[2]] = []
            row.append(span)
        for tid, task in self.running.items():
            if task[3]:
                r = _row(task[2], task)
                by_row.setdefault(r, []).append((task[3], None, r, task[5], tid, "running", task[6], 0.0))
        picked = []
        for r in sorted(by_row, key=_order):
            spans = by_row[r]
            spans.sort(key=_START)
            picked += spans
        slack = self.window / 1000.0                # about a pixel of a 1000 px wide stream
        names: dict = {}
        bars: list = []                             # times as floats here; rounded once, for the kept bars
        for start, end, engine, name, tid, state, ready, fetch in picked:
            ni = names.setdefault(name, len(names))
            wait = start - ready if 0.0 < ready < start else 0.0
            if bars:
                last = bars[-1]
                if (last[0] == engine and last[3] == ni and last[2] is not None and end is not None
                        and start - last[2] < slack and last[5] == state):
                    last[2] = end
                    last[6] += 1
                    last[8] += fetch
                    last[9] += wait
                    continue
            bars.append([engine, max(start, cutoff), end, ni, tid, state, 1, max(ready, cutoff) if wait else None,
                         fetch, wait])
        if len(bars) > self.max_bars:
            bars.sort(key=_END_OR_RUNNING)
            bars = bars[-self.max_bars:]
        for b in bars:
            b[1] = round(b[1] - now, 3)
            if b[2] is not None:
                b[2] = round(b[2] - now, 3)
            b[4] = f"{b[4]:x}"
            if b[7] is not None:
                b[7] = round(b[7] - now, 3)
            b[8] = round(b[8], 7)
            b[9] = round(b[9], 4)
        rows = sorted({b[0] for b in bars} | {e for e in engines if e is not None}, key=_order)
        labels = labels or {}
        return {"now": now, "window": self.window, "names": list(names), "bars": bars,
                "rows": [[r, labels.get(r, str(r)) if isinstance(r, str) else
                          (f"engine {r}" if r >= 0 else "no engine")] for r in rows]}


_START = operator.itemgetter(0)


def _END_OR_RUNNING(bar) -> float:
    return bar[2] if bar[2] is not None else float("inf")   # a running bar is the newest


def _row(engine: int, task: list):
    """The stream's row of a run: its engine, else the actor whose process ran it."""
    if engine == -1 and task and isinstance(task[1], str) and task[1].startswith("actor:"):
        return task[1]
    return engine


def _order(row) -> tuple:
    return (1, 0, row) if isinstance(row, str) else (0, row, "")
