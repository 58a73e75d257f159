"""Chaining for the scheduler: a task waits for its last argument on the engine that makes it.

A task whose one missing argument is the value of a task already placed on an engine is sent to
that engine at once, behind its producer (ASSIGNED, "chained"); the engine keeps the producer's
value and starts the chained task as soon as the producer returns, without a round trip to the
head. A chain of dependent tasks, ``x = f.remote(x)`` in a loop, then costs one engine-side step
per link instead of two network hops and a scheduling pass.

Only what the head would have done anyway is decided early: a chained task runs where its
argument is, after it. If the argument is not made there after all (its producer raised, was
retried, cancelled, or left the engine), the engine gives the chained task back
(:meth:`Chaining.given_back`) and it stands where it would have: waiting, queued, or failed
with its argument's error. One chained task per object: the other tasks waiting for the same
value spread over the cluster once it is ready, as before. Chained tasks are never revoked for
balance (they could run nowhere sooner). Pure state, like the rest of the scheduler: a mixin of
:class:`jpar.runtime.head.scheduler.Scheduler`.
"""

from __future__ import annotations

from .scheduler_state import DispatchTask, Failure, S

__all__ = ["Chaining"]


class Chaining:
    """Tasks sent to the engine making their last missing argument (mixed into Scheduler)."""

    def _chain_after(self, task, eng) -> None:
        """``task`` was just placed on ``eng``: chain there the tasks waiting only for its value (and,
        in turn, those waiting only for theirs)."""
        if not self.chain or eng.draining or eng.extra:
            return
        todo = [task]
        while todo:
            producer = todo.pop()
            for oid in producer.return_ids:
                obj = self.objects.get(oid)
                if obj is None or obj.ready or not obj.waiters:
                    continue
                for tid in obj.waiters:
                    waiter = self.tasks.get(tid)
                    if waiter is not None and self._chainable(waiter, producer, eng):
                        self._chain(waiter, oid, eng)
                        todo.append(waiter)
                        break          # one per object: its other waiters spread once it is ready

    def _chain_to_producer(self, task) -> None:
        """A task waiting for one value (submitted so, or its other arguments just became ready) whose
        task is placed already: chain it there."""
        if not self.chain:
            return
        for oid in task.spec.deps:
            obj = self.objects.get(oid)
            if obj is not None and not obj.ready:
                producer = self.tasks.get(oid)
                if producer is not None and producer.engine >= 0 and producer.state in (S.RUNNING, S.ASSIGNED):
                    eng = self.engines.get(producer.engine)
                    if (eng is not None and not eng.draining and not eng.extra
                            and not any(self.tasks.get(t) is not None and self.tasks[t].chained == oid
                                        for t in obj.waiters if t != task.spec.task_id)
                            and self._chainable(task, producer, eng)):
                        self._chain(task, oid, eng)
                        self._chain_after(task, eng)
                return

    @staticmethod
    def _chainable(task, producer, eng) -> bool:
        return (task.state is S.WAITING and task.missing == 1 and task.dshape == producer.dshape
                and task.spec.placement in (-1, eng.engine_id) and not task.spec.actor and "GPU" not in task.demand)

    def _chain(self, task, oid: int, eng) -> None:
        task.chained = oid
        task.engine = eng.engine_id
        eng.queue[task.spec.task_id] = None
        if self._count(eng, task, 1):
            self._reserve(eng)
        self._move(task, S.ASSIGNED, f"chained on engine {eng.engine_id}, behind the task making its argument")
        self.actions.append(DispatchTask(eng.engine_id, task.spec.task_id, ()))

    def given_back(self, engine_id: int, task_ids) -> list:
        """The engine did not run these chained tasks: the argument each waited for was not made there
        (its producer raised, was retried or cancelled). Each goes back where it stands now."""
        front: dict = {}
        for tid in task_ids:
            task = self.tasks.get(tid)
            if (task is None or task.engine != engine_id or not task.chained or task.blocked
                    or task.state not in (S.ASSIGNED, S.RUNNING)):
                continue          # (a blocked task is running: it was not given back)
            self._off_engine(task)
            task.started = False
            self._unchain(task, f"given back by engine {engine_id}: its argument was not made there", front)
        self._schedule()
        return self._take()

    def _unchain(self, task, why: str, front: dict) -> None:
        """A chained task off its engine, unstarted: waiting for its argument again, queued if that is
        ready, or failed with its error (the head's usual rules for a task whose argument ended)."""
        oid, task.chained = task.chained, 0
        obj = self.objects.get(oid)
        if obj is None:
            self._fail(task, Failure.OBJECT_LOST, f"its argument (object {oid:#x}) no longer exists",
                       "argument lost")
        elif not obj.ready:
            self._move(task, S.WAITING, why)
            if task.spec.task_id not in obj.waiters:
                obj.waiters = [*obj.waiters, task.spec.task_id]
        elif obj.status:
            if obj.blob:
                self._fail(task, Failure.DEPENDENCY, obj.blob, "an argument failed")
            else:
                self._fail(task, *(obj.failure or (Failure.OBJECT_LOST, "its argument was lost")),
                           "an argument failed")
        else:
            task.missing = 0
            self._move(task, S.QUEUED, why)
            self._enqueue(task, front=front)
