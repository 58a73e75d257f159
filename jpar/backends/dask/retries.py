"""``max_retries`` on Dask: how many times a task reruns after a worker died under it.

Dask reruns a task whose worker died until it has been on ``distributed.scheduler.allowed-failures``
+ 1 dying workers, one number for the whole cluster; it then fails the task with ``KilledWorker``
(which the dask backend raises as :class:`jpar.EngineCrashedError`). The scheduler counts those
deaths in each task's ``suspicious``. :class:`MaxRetries`, a scheduler plugin the dask backend
registers when it connects, starts that count at ``allowed_failures - max_retries`` for a task
submitted with another ``max_retries`` than the cluster's (the annotation :data:`ANNOTATION`), so
Dask's own check fails it after ``max_retries`` reruns. Tasks with the cluster's figure carry no
annotation and cost nothing here.

This module runs in the scheduler's process (jpar must be importable there, as on the workers);
it imports nothing of jpar.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

__all__ = ["ANNOTATION", "MaxRetries", "allowed_failures"]

ANNOTATION = "jpar_max_retries"


class MaxRetries(SchedulerPlugin):
    """Per-task reruns after worker deaths: see the module's docstring."""

    name = "jpar-max-retries"
    idempotent = True          # every driver of the cluster registers it; one is enough

    def update_graph(self, scheduler: Any, *, annotations: dict, **kwargs: Any) -> None:
        wanted = annotations.get(ANNOTATION)
        if not wanted:
            return
        tasks = scheduler.tasks
        for key, retries in wanted.items():
            ts = tasks.get(key)
            if ts is not None and ts.suspicious == 0:
                ts.suspicious = scheduler.allowed_failures - int(retries)


def allowed_failures(dask_scheduler: Any) -> int:
    """The scheduler's own ``allowed_failures`` (run there with ``Client.run_on_scheduler``)."""
    return int(dask_scheduler.allowed_failures)
