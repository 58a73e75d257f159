"""What is running where in this process: the runtime context tasks can ask for.

Engines set the current task, engine and node here while a task runs; ``get_runtime_context()``
reads it (Ray's ``ray.get_runtime_context()``). In a driver the task id is None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["RuntimeContext", "get_runtime_context", "set_current", "set_cancel_check"]

_current = {"task_id": None, "engine_id": None, "node": None, "actor_id": None, "cluster_id": None}
_cancel_check: Callable[[int], bool] | None = None   # set by engines: has cancel() reached this task id


def set_current(**values) -> None:
    """Engines call this as tasks start and end (one task runs at a time on an engine's main thread)."""
    _current.update(values)


def set_cancel_check(check: Callable[[int], bool] | None) -> None:
    """Engines install ``check(task_id)``: whether a cancel of that task has reached this process."""
    global _cancel_check
    _cancel_check = check


@dataclass(frozen=True)
class RuntimeContext:
    task_id: int | None
    engine_id: int | None
    node: str | None
    actor_id: int | None
    cluster_id: str | None

    def get_task_id(self) -> str | None:
        return None if self.task_id is None else f"{self.task_id:016x}"

    def get_actor_id(self) -> str | None:
        return None if self.actor_id is None else f"{self.actor_id:016x}"

    def get_node_id(self) -> str | None:
        return self.node

    def get_worker_id(self) -> str | None:
        return None if self.engine_id is None else str(self.engine_id)

    def get_job_id(self) -> str | None:
        return self.cluster_id

    def is_canceled(self) -> bool:
        """Whether jpar.cancel() was called on the task running this code (Ray's ``is_canceled``):
        a task that catches the interruption a cancel raises in it (e.g. to clean up) can tell why.
        Raises RuntimeError outside a task."""
        if self.task_id is None:
            raise RuntimeError("get_runtime_context().is_canceled() is only meaningful inside a task; this code "
                               "runs in the driver. Call it from a remote function.")
        check = _cancel_check
        return bool(check is not None and check(self.task_id))


def get_runtime_context() -> RuntimeContext:
    """The task, engine, node and actor this code runs in (None outside an engine)."""
    from . import backends

    state = dict(_current)
    if state["cluster_id"] is None:
        d = backends.current()
        state["cluster_id"] = d.cluster_id if d is not None and not d.closed else None
    return RuntimeContext(**state)
