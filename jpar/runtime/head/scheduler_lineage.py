"""Lineage for the scheduler: re-running the task that made a value lost with its node.

A task's result stored in the object store of a node other than the head's lives only as long as
that node. When the node leaves with no engine left, the value is gone; if the task that made it
is known (its spec is kept here while the value is alive, as Ray keeps lineage), its arguments
still exist and it has retries left (``max_retries``, counted with its other retries), the task
runs again and the value is made anew: readers wait for it instead of failing. What cannot be
rebuilt says why, in the ObjectLostError its owner and readers get (the controller words it).

Only values whose every copy is on another host need this, so a lineage entry is kept only for
them (the controller tells :meth:`keep_lineage` which): a one-host cluster keeps none. Pure
state, like the rest of the scheduler: a mixin of :class:`jpar.runtime.head.scheduler.Scheduler`.
"""

from __future__ import annotations

from typing import Callable

from ..wire import protocol as P
from .scheduler_state import CancelOnEngine, Queued, S, Task

__all__ = ["Lineage"]


class Lineage:
    """Lineage of values stored on other hosts, and their rebuilding (mixed into Scheduler)."""

    def _init_lineage(self) -> None:
        self.lineage: dict[int, list] = {}     # task id -> [spec, owner, attempt, return ids still alive]
        self.lineage_of: dict[int, int] = {}   # object id -> the task id that made it

    def keep_lineage(self, task_id: int, object_ids) -> None:
        """The finishing task ``task_id`` stored ``object_ids`` only on another host: keep what it takes
        to run it again. Called before the TaskDone is applied (the task is still live)."""
        task = self.tasks.get(task_id)
        if type(task) is not Task or task.spec.actor:
            return
        entry = self.lineage.get(task_id)
        if entry is None:
            entry = self.lineage[task_id] = [task.spec, task.owner, task.attempt, set()]
        else:
            entry[2] = task.attempt
        for oid in object_ids:
            entry[3].add(oid)
            self.lineage_of[oid] = task_id

    def _drop_lineage(self, oid: int) -> None:
        """An object is forgotten: its task's lineage goes with the last of its stored returns."""
        tid = self.lineage_of.pop(oid, None)
        if tid is not None:
            entry = self.lineage.get(tid)
            if entry is not None:
                entry[3].discard(oid)
                if not entry[3]:
                    del self.lineage[tid]

    def rebuild(self, node: str, object_ids, lost_blob: Callable[[int, str], bytes]) -> tuple[list, list, list]:
        """``object_ids`` lived only on ``node``, which left. Each is rebuilt by running its task again
        where possible; the others become errors, ``lost_blob(oid, why_not)`` (a pickled
        ObjectLostError). Returns ``(rebuilt ids, lost records, actions)``, the lost records as
        ``(owner, ObjectRecord)``. The errors are set before any task is resubmitted, so a rebuilt task
        whose argument is lost for good fails with that argument's error."""
        why_not: dict[int, str] = {}
        plan: dict[int, list] = {}
        for oid in object_ids:
            obj = self.objects.get(oid)
            if obj is None or type(obj) is Queued or not obj.ready or obj.status:
                continue                        # pending, failed or freed already: nothing held is wrong
            tid = self.lineage_of.get(oid)
            entry = self.lineage.get(tid) if tid is not None else None
            reason = self._not_rebuildable(entry, tid)
            if reason:
                why_not[oid] = reason
            else:
                plan.setdefault(tid, []).append(oid)
        changed = True
        while changed:                          # an argument that cannot come back sinks its users too
            changed = False
            for tid in list(plan):
                bad = self._lost_argument(self.lineage[tid][0], why_not)
                if bad:
                    for oid in plan.pop(tid):
                        why_not[oid] = bad
                    changed = True
        lost = []
        for oid, reason in why_not.items():
            obj = self.objects[oid]
            obj.status, obj.blob = P.ERROR, lost_blob(oid, reason)   # tasks given it from now on fail with it
            lost.append((obj.owner, P.ObjectRecord(oid, P.ERROR, obj.blob)))
        rebuilt = []
        for oids in plan.values():
            for oid in oids:
                obj = self.objects[oid]
                obj.ready, obj.status, obj.blob, obj.failure = False, 0, b"", ()
                rebuilt.append(oid)
        if rebuilt:
            self._wait_again(set(rebuilt), node)
        for tid in plan:
            entry = self.lineage[tid]
            entry[2] += 1
            self._resubmit(entry[0], entry[1], entry[2], f"rebuilt: its value was lost with node {node!r}")
        self._schedule()
        return rebuilt, lost, self._take()

    def _not_rebuildable(self, entry: list | None, tid: int | None) -> str:
        """Why a lost value's task cannot run again, or "" if it can."""
        if entry is None:
            return "it was put(), or made by an actor call: there is no task to run again"
        spec, _, attempt, _ = entry
        if tid in self.tasks:
            return f"its task {spec.name} is running again already"
        if attempt >= spec.max_retries:
            return (f"its task {spec.name} has no retries left to rebuild it (max_retries={spec.max_retries}); "
                    "raise max_retries in .options() to let jpar run it again")
        if spec.placement >= 0:
            return f"its task {spec.name} was pinned to engine {spec.placement}"
        demand, dshape, _ = self._form(spec)
        if self.nodes and not self._feasible(dshape):
            return f"no node left can run its task {spec.name} (it asks for {demand})"
        return ""

    def _lost_argument(self, spec, why_not: dict) -> str:
        for d in spec.deps:
            obj = self.objects.get(d)
            if obj is None:
                return (f"its task {spec.name}'s argument (object {d:#x}) no longer exists: its owner released it. "
                        "Keep refs to a task's arguments alive to let jpar rebuild its value")
            if d in why_not:
                return f"its task {spec.name}'s argument (object {d:#x}) was lost too and cannot be rebuilt"
            if obj.ready and obj.status:
                return f"its task {spec.name}'s argument (object {d:#x}) failed or was freed"
        return ""

    def _wait_again(self, rebuilt: set, node: str) -> None:
        """Live tasks given a value that is now being rebuilt wait for the new value. One that waits for
        other arguments counts it as missing again; a ready one goes back to waiting; one an engine holds
        was sent the lost location, so it is cancelled there and waits too (a retry spent, as when its
        engine dies; with none left, or blocked in a nested get, it is left to fail on its pull)."""
        why = f"an argument, lost with node {node!r}, is being rebuilt"
        users = [t for t, task in self.tasks.items()
                 if any(d in rebuilt for d in (task.deps if type(task) is Queued else task.spec.deps))]
        for tid in users:
            task = self._task(tid)
            if task.state is S.WAITING:
                pass
            elif task.state is S.QUEUED:
                self._move(task, S.WAITING, why)
            elif task.state in (S.ASSIGNED, S.RUNNING) and not task.blocked and task.attempt < task.spec.max_retries:
                if task.engine in self.engines:
                    self.actions.append(CancelOnEngine(task.engine, tid, False))
                self._off_engine(task)
                task.attempt += 1                     # what the engine reports of the old run is ignored
                task.started, task.chained = False, 0
                task.missing = sum(1 for d in task.spec.deps if d not in rebuilt and not self.objects[d].ready)
                self._move(task, S.WAITING, why)
            else:
                continue
            for d in task.spec.deps:
                if d in rebuilt:
                    task.missing += 1
                    self._add_waiter(self.objects[d], tid)

    def _resubmit(self, spec, owner: int, attempt: int, why: str) -> None:
        """Run a finished task again (its return objects, kept, were reset to pending)."""
        task = Task(spec, owner, self._form(spec))
        task.attempt = attempt
        tid = spec.task_id
        self.tasks[tid] = task
        for oid in spec.deps:
            obj = self.objects[oid]
            obj.task_refs += 1
            if not obj.ready:
                task.missing += 1
                self._add_waiter(obj, tid)
        self._wait_or_queue(task, why, why)
