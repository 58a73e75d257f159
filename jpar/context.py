"""What is running where in this process: the runtime context tasks can ask for.

Engines set the current task, engine and node here while a task runs; ``get_runtime_context()``
reads it (Ray's ``ray.get_runtime_context()``). In a driver the task id is None.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RuntimeContext", "get_runtime_context", "set_current"]

_current = {"task_id": None, "engine_id": None, "node": None, "actor_id": None, "cluster_id": None}


def set_current(**values) -> None:
    """Engines call this as tasks start and end (one task runs at a time on an engine's main thread)."""
    _current.update(values)


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


def get_runtime_context() -> RuntimeContext:
    """The task, engine, node and actor this code runs in (None outside an engine)."""
    from .driver import current_driver

    state = dict(_current)
    if state["cluster_id"] is None:
        d = current_driver()
        state["cluster_id"] = d.cluster_id if d is not None and not d.closed else None
    return RuntimeContext(**state)
