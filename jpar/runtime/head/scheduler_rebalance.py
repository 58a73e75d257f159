"""Rebalancing for the scheduler: blocked tasks, temporary extra engines, work taken back.

A task blocked in a nested ``get()`` lends its resources; its engine then runs only the
tasks that task submitted (they cannot wait for it), so other work queued there is taken
back (:class:`RevokeOnEngine`) and placed elsewhere, and where every engine of a host is
blocked a temporary extra engine starts (:class:`SpawnEngine`), retired when no longer
needed. An idle engine also takes back work queued behind a long-running task (stealing).
Pure state, like the rest of the scheduler: a mixin of :class:`jpar.runtime.head.scheduler.Scheduler`.
"""

from __future__ import annotations

from .scheduler_state import TERMINAL, RevokeOnEngine, S, SpawnEngine

__all__ = ["Rebalancing"]


class Rebalancing:
    """Blocked engines, extra engines, revokes and stealing (mixed into Scheduler)."""

    def blocked(self, engine_id: int, task_id: int, is_blocked: bool) -> list:
        """A running task waits in a nested get() (or resumed): its resources are lent meanwhile.

        A blocked task must never hold up what it waits for. Its engine runs, on top of it, only
        the tasks it submitted itself (they cannot wait on it: its result's ref is its caller's), so
        other work is taken back from that engine (:class:`RevokeOnEngine`) and placed on other
        engines; where none is free, :meth:`tick` starts a temporary extra engine
        (:class:`SpawnEngine`), retired once the blocked tasks resume (Ray starts another worker
        the same way)."""
        eng = self.engines.get(engine_id)
        if eng is None:
            return self._take()
        if is_blocked and task_id not in eng.blocked:
            if not eng.blocked:
                eng.blocked_since = self.now
                self.blocked_engines += 1
            eng.blocked.append(task_id)
        elif not is_blocked and task_id in eng.blocked:
            eng.blocked.remove(task_id)
            if not eng.blocked:
                self.blocked_engines -= 1
        task = self.tasks.get(task_id)
        if (task is not None and task.engine == engine_id and task.state not in TERMINAL
                and task.blocked != is_blocked):
            self._count(eng, task, -1 if is_blocked else 1)
            task.blocked = is_blocked
            self._reserve(eng)
        if is_blocked:
            back = tuple(tid for tid in eng.queue
                         if tid != task_id and (t := self.tasks[tid]).state is S.ASSIGNED and not t.started
                         and not t.revoking and not t.blocked and t.spec.parent != task_id and t.spec.placement < 0
                         and not t.chained)
            if back:   # queued behind it, and not its own children: they would wait for it to finish
                for tid in back:
                    self.tasks[tid].revoking = True
                self.actions.append(RevokeOnEngine(eng.engine_id, back))
        self._schedule()
        self._trim_extras()
        return self._take()

    def spawn_failed(self, node: str) -> list:
        """An extra engine asked for on ``node`` exited before it joined."""
        n = self.nodes.get(node)
        if n is not None and n.spawning:
            n.spawning -= 1
            self.extras -= 1
        return self._take()

    def _maybe_spawn(self) -> None:
        """Ready work that no engine may take while tasks on its node are blocked: start an extra engine
        there (one per blocked engine at most), once the oldest block has lasted ``spawn_after_s``."""
        for name in self.spawn_nodes:
            node = self.nodes.get(name)
            if node is None:
                continue
            engines = [self.engines[e] for e in node.engines]
            blocked = [e for e in engines if e.blocked and not e.draining]
            if not blocked or self.now - min(e.blocked_since for e in blocked) < self.spawn_after_s:
                continue
            extras = sum(1 for e in engines if e.extra and not e.draining) + node.spawning
            if extras >= min(len(blocked), self.max_extra):
                continue
            if any(not e.blocked and not e.draining and not e.queue for e in engines):
                continue   # an idle engine is there already
            for q in self.ready.values():
                while q and (self.tasks.get(q[0]) is None or self.tasks[q[0]].state is not S.QUEUED):
                    q.popleft()
                task = self.tasks.get(q[0]) if q else None
                if (task is not None and task.state is S.QUEUED and task.spec.placement < 0
                        and all(node.total.get(k, 0.0) - node.used.get(k, 0.0) >= v - 1e-9
                                for k, v in task.demand.items() if k != "GPU")
                        and ("GPU" not in task.demand or self._gpus_for(node, task.demand["GPU"]))):
                    node.spawning += 1
                    self.extras += 1
                    self.actions.append(SpawnEngine(name))
                    break

    def _trim_extras(self) -> None:
        """Retire idle extra engines beyond one per blocked engine of their node."""
        if not self.extras:
            return
        for node in self.nodes.values():
            engines = [self.engines[e] for e in node.engines]
            extras = [e for e in engines if e.extra and not e.draining]
            surplus = len(extras) + node.spawning - sum(1 for e in engines if e.blocked and not e.draining)
            for eng in reversed(extras):
                if surplus <= 0:
                    break
                if not eng.queue and not eng.blocked:
                    eng.draining = True
                    surplus -= 1
                    self._maybe_retire(eng)

    def _place_children(self) -> None:
        """A blocked engine runs the tasks its top blocked task submitted, wherever they stand in line
        (older tasks it may not run must not keep them from it: that task waits for them)."""
        for eng in self.engines.values():
            if not eng.blocked or eng.draining or eng.active >= eng.depth:
                continue
            parent = self.tasks.get(eng.blocked[-1])
            if parent is None or not parent.children:
                continue
            live = [tid for tid in parent.children if tid in self.tasks]
            parent.children = live       # finished ones: nothing left to cancel or place
            for tid in live:
                task = self._task(tid)
                if task.state is not S.QUEUED or task.spec.placement not in (-1, eng.engine_id):
                    continue
                if self._pick_engine(task, {}, only=eng) is None:
                    break
                self._assign(task, eng)     # its entry in the ready FIFO is skipped when reached

    def _steal(self) -> None:
        """An engine is idle and nothing waits: take back tasks queued behind a long-running one."""
        if not any(e.active == 0 and not e.queue and not e.draining for e in self.engines.values()):
            return
        for eng in self.engines.values():
            if eng.active > 1 and self.now - eng.running_since > max(4 * eng.avg_s, 0.005):
                ids = tuple(tid for tid in eng.queue
                            if (t := self.tasks[tid]).state is S.ASSIGNED and not t.started and not t.revoking
                            and t.spec.placement < 0 and not t.chained)
                if ids:
                    for tid in ids:
                        self.tasks[tid].revoking = True
                    self.actions.append(RevokeOnEngine(eng.engine_id, ids))

    def tick(self) -> list:
        """Time passed (the controller calls this a few times a second): rebalance if needed."""
        if not self.ready:
            self._steal()
        elif self.spawn_nodes:
            self._maybe_spawn()
        self._trim_extras()
        return self._take()

    def revoked(self, engine_id: int, task_ids) -> list:
        """The engine gave these back unstarted: queue them again for any engine."""
        eng = self.engines.get(engine_id)
        why = f"taken back from {'leaving' if eng is not None and eng.draining else 'busy'} engine {engine_id}"
        front: dict = {}       # back at the front of their queues, in the order the engine held them
        for tid in task_ids:
            task = self.tasks.get(tid)
            # the engine's word counts: a task it gave back never ran there, even if the task ahead of it
            # finished meanwhile and the scheduler took it to be running
            if task is None or task.engine != engine_id or not task.revoking or task.state not in (S.ASSIGNED,
                                                                                                  S.RUNNING):
                continue
            self._off_engine(task)
            task.started = False
            if task.chained:
                self._unchain(task, why, front)
                continue
            self._move(task, S.QUEUED, why)
            self._enqueue(task, front=front)
        self._schedule()
        return self._take()
