"""Integration points for front ends (the notebook layer, dashboards): who submitted a task,
where its output goes, which engines exist. Plain functions over the current driver, so
front ends never reach into driver internals.
"""

from __future__ import annotations

from typing import Any, Callable

from .driver import require_driver
from .protocol import OutputRecord

__all__ = ["set_submit_hook", "set_output_handler", "cancel_tasks", "engines", "status", "task_ids_done",
           "OutputRecord"]


def set_submit_hook(hook: Callable[[int], Any] | None) -> None:
    """``hook(task_id)`` runs at every submission from this process (tasks and actor calls);
    what it returns is handed to the output handler with that task's output chunks."""
    require_driver("set_submit_hook()").submit_context = hook


def set_output_handler(handler: Callable[[OutputRecord, Any], None] | None) -> None:
    """``handler(chunk, context)`` receives every chunk of task output; None restores printing."""
    from .driver import default_output_handler

    require_driver("set_output_handler()").output_handler = handler or default_output_handler


def cancel_tasks(task_ids, force: bool = False) -> None:
    """Cancel tasks by id (as seen by the submit hook); like jpar.cancel() on their refs."""
    require_driver("cancel_tasks()").cancel_ids(list(task_ids), force, True)


def task_ids_done(task_ids) -> list:
    """Which of these task ids have a result (or error) in this process already."""
    results = require_driver("task_ids_done()").results
    return [t for t in task_ids if t in results]


def status(timeout: float = 10.0) -> dict:
    """The head's view: engines (id, pid, node, cpu, rss, queued), clients, resources, task counts."""
    return require_driver("status()").query("status", timeout=timeout)


def engines(timeout: float = 10.0) -> list[dict]:
    """Live engines, ordered by id."""
    return sorted(status(timeout)["engines"], key=lambda e: e["id"])
