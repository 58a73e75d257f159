"""The records front ends read, whichever backend produced them: a chunk of a task's output and an
entry of the cluster's event stream. The native runtime carries them on the wire (they are part of
its protocol); other backends make them from their engine's own events, so the notebook layer, the
dashboard and the sidebar read one format.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["OutputRecord", "Event"]


class OutputRecord(NamedTuple):
    """A piece of what a task printed, routed to the cell that submitted it."""

    task_id: int
    engine_id: int
    pid: int
    name: str
    stream: str           # "stdout" or "stderr"
    text: str


class Event(NamedTuple):
    """One entry of the cluster's event stream (dashboards, sidebar, `jpar status`).

    ``kind`` "task": ``key`` is the task id, ``state`` its new state (waiting, queued, assigned,
    running, done, failed, cancelled), ``info`` carries name, engine, deps, parent, actor, error; a
    submission's also ``args`` (bytes of its pickled arguments, where the backend pickles them: native,
    Dask), a finished task's on the native backend ``fetch`` (seconds its engine spent fetching its ref
    arguments) and ``size`` (bytes of its result(s)): the dashboard's wait/transfer phases. ``kind``
    "metrics": ``key`` is an engine id, ``info`` has cpu (percent), rss, shared (bytes), task, node,
    pid. ``kind`` "engine" / "actor" / "cluster": membership changes, ``info`` as for metrics."""

    time: float
    kind: str             # "task", "engine", "metrics", "actor", "cluster"
    key: int              # task id or engine id
    state: str
    info: Any             # dict with details (name, engine, deps, parent, error, cpu, rss...)
