"""Integration points for front ends (the notebook layer, dashboards): who submitted a task,
where its output goes, which engines exist. Plain functions over the current driver, so
front ends never reach into driver internals.
"""

from __future__ import annotations

from typing import Any, Callable

from .driver import current_driver, require_driver
from .protocol import OutputRecord

__all__ = ["set_submit_hook", "set_output_handler", "set_front_end", "apply_front_end", "cancel_tasks", "engines",
           "status", "task_ids_done", "OutputRecord"]

_front_end: tuple | None = None   # (submit_hook, output_handler) for drivers made later


def set_submit_hook(hook: Callable[[int], Any] | None) -> None:
    """``hook(task_id)`` runs at every submission from this process (tasks and actor calls);
    what it returns is handed to the output handler with that task's output chunks."""
    require_driver("set_submit_hook()").submit_context = hook


def set_output_handler(handler: Callable[[OutputRecord, Any], None] | None) -> None:
    """``handler(chunk, context)`` receives every chunk of task output; None restores printing."""
    from .driver import default_output_handler

    require_driver("set_output_handler()").output_handler = handler or default_output_handler


def set_front_end(submit_hook: Callable[[int], Any] | None,
                  output_handler: Callable[[OutputRecord, Any], None] | None) -> None:
    """Set both hooks on the current driver (if any) and remember them for drivers that
    init() makes later (see apply_front_end); ``set_front_end(None, None)`` forgets them."""
    global _front_end
    _front_end = None if submit_hook is None and output_handler is None else (submit_hook, output_handler)
    d = current_driver()
    if d is not None and not d.closed:
        set_submit_hook(submit_hook)
        set_output_handler(output_handler)


def apply_front_end() -> bool:
    """Give the current driver the remembered hooks if it lacks them; cheap and idempotent.
    Returns whether a live driver now has them."""
    d = current_driver()
    if _front_end is None or d is None or d.closed:
        return False
    submit_hook, output_handler = _front_end
    if d.submit_context is not submit_hook:
        d.submit_context = submit_hook
    if output_handler is not None and d.output_handler is not output_handler:
        d.output_handler = output_handler
    return True


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
