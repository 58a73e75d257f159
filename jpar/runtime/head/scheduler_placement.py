"""Placement for the scheduler: ready queues, which engine takes which task, and the resources
that placement holds and gives back.

A ready task waits in the queue of its resource shape; :meth:`Placement._schedule` hands tasks to
engines with free resources (prefetching a few per engine so they never idle between tasks), a
pinned task only to its engine, and a task no node can ever hold fails (ResourceError). On a
cluster of several nodes, a task whose arguments are stored values goes to a free engine of the
node holding most of their bytes when there is one (locality: a pull across hosts costs more than
the task often does), else where it would have gone. Pure state, like the rest of the scheduler:
a mixin of :class:`jpar.runtime.head.scheduler.Scheduler`.
"""

from __future__ import annotations

from collections import deque

from ..store.segments import LOCATION_MAGIC, decode_location
from .scheduler_state import DispatchTask, Engine, Failure, Node, S, Task

__all__ = ["Placement"]


class Placement:
    """Ready queues, engine choice, dispatch and resource accounting (mixed into Scheduler)."""

    def _enqueue(self, task: Task, front: bool | dict = False) -> None:
        """Queue a ready task: at the back, or at the front (``front=True``). A batch put back at the
        front in its own order passes one dict (shape -> how many of the batch are in front) to each call."""
        if task.spec.placement >= 0 and (lost := self._pin_lost(task)) is not None:
            self._fail(task, *lost, "its pinned engine is leaving or gone")
            return
        shape = task.shape
        q = self.ready.get(shape)
        if q is None:
            q = self.ready[shape] = deque()
        if front is False:
            q.append(task.spec.task_id)
        elif front is True:
            q.appendleft(task.spec.task_id)
        else:
            i = front.get(shape, 0)
            q.insert(i, task.spec.task_id)
            front[shape] = i + 1

    def _feasible(self, dshape: tuple) -> bool:
        ok = self._feasible_cache.get(dshape)
        if ok is None:
            ok = self._feasible_cache[dshape] = self._feasible_anywhere(dict(dshape))
        return ok

    def _feasible_anywhere(self, demand: dict) -> bool:
        return any(all(node.total.get(k, 0.0) >= v for k, v in demand.items()) for node in self.nodes.values())

    def _infeasible_message(self, task: Task) -> str:
        have = "; ".join(f"{n.name}: {n.total}" for n in self.nodes.values())
        return (f"{task.spec.name} asks for {task.demand}, which no node can ever provide (nodes: {have}). "
                "Lower num_cpus/num_gpus/resources in .options(), or start engines that advertise them.")

    def _fail_infeasible(self) -> None:
        for shape, q in list(self.ready.items()):
            if q and self.nodes and not self._feasible_anywhere(dict(shape[1:])):
                for tid in list(q):
                    task = self._task(tid)
                    if task is not None and task.state is S.QUEUED:
                        self._fail(task, Failure.INFEASIBLE, self._infeasible_message(task), "its last node left")
                q.clear()

    def _schedule(self) -> None:
        """Place ready tasks, oldest first across shapes, until engines are full or nothing fits."""
        if self.actor_queue:
            self._place_actors()
        if not self.ready or not self.engines:
            return
        held: dict[str, dict] = {}
        stuck: set = set()
        while True:
            best, best_tid = None, None
            for shape, q in self.ready.items():
                if shape in stuck:
                    continue
                while q and (self.tasks.get(q[0]) is None or self.tasks[q[0]].state is not S.QUEUED):
                    q.popleft()
                if q and (best_tid is None or q[0] < best_tid):
                    best, best_tid = shape, q[0]
            if best is None:
                break
            task = self._task(best_tid)
            eng = self._pick_engine(task, held)
            if eng is None:
                stuck.add(best)
                self._hold(task, held)
                continue
            self.ready[best].popleft()
            self._assign(task, eng)
        if self.blocked_engines and stuck:
            self._place_children()
        for shape in [s for s, q in self.ready.items() if not q]:
            del self.ready[shape]
        if not self.ready:
            self._steal()

    def _pick_engine(self, task: Task, held: dict, only: Engine | None = None) -> Engine | None:
        demand = task.demand
        simple = "GPU" not in demand
        best, best_len = None, 1 << 30
        pin = task.spec.placement
        engines = ((only,) if only is not None else self.engines.values() if pin < 0
                   else [self.engines[pin]] if pin in self.engines else [])
        if only is None and pin < 0 and task.spec.deps and len(self.nodes) > 1:
            home = self._data_node(task.spec.deps)
            if home:   # its engines first: the first idle one is taken
                engines = sorted(engines, key=lambda e: e.node != home)
        for eng in engines:
            if eng.blocked and task.spec.parent != eng.blocked[-1]:
                continue  # a blocked engine runs only what its top blocked task submitted
            n = eng.active
            if n >= best_len or n >= (eng.depth if simple else 1) or eng.draining:
                continue
            if n and self.now - eng.running_since > max(4 * eng.avg_s, 0.005):
                continue  # its current task runs far longer than usual: queue nothing behind it
            node = self.nodes[eng.node]
            h = held.get(eng.node)
            ok = True
            for k, v in demand.items():
                extra = v - eng.reserved.get(k, 0.0)
                if extra > 0 and node.total.get(k, 0.0) - node.used.get(k, 0.0) - (h.get(k, 0.0) if h else 0.0) < extra - 1e-9:
                    ok = False
                    break
            if ok and "GPU" in demand and not self._gpus_for(node, demand["GPU"]):
                ok = False
            if ok:
                best, best_len = eng, n
                if n == 0:
                    break
        return best

    def _data_node(self, deps) -> str:
        """The node whose store holds the most bytes of these arguments ("" if none is stored)."""
        sizes: dict = {}
        for oid in deps:
            obj = self.objects.get(oid)
            if obj is not None and obj.ready and obj.blob[:4] == LOCATION_MAGIC:
                loc = decode_location(obj.blob)
                sizes[loc.node] = sizes.get(loc.node, 0) + loc.size
        return max(sizes, key=sizes.__getitem__) if sizes else ""

    def _hold(self, task: Task, held: dict) -> None:
        """Keep a stuck task's demand away from younger tasks on the nodes it could run on."""
        for node in self.nodes.values():
            if all(node.total.get(k, 0.0) >= v for k, v in task.demand.items()):
                h = held.setdefault(node.name, {})
                for k, v in task.demand.items():
                    h[k] = h.get(k, 0.0) + v
                return

    def _assign(self, task: Task, eng: Engine) -> None:
        node = self.nodes[eng.node]
        if "GPU" in task.demand:
            task.gpu_ids = self._gpus_for(node, task.demand["GPU"])
            share = task.demand["GPU"] if task.demand["GPU"] < 1 else 1.0
            for g in task.gpu_ids:
                node.gpu_free[g] -= share
        task.engine = eng.engine_id
        idle = eng.active == 0
        eng.queue[task.spec.task_id] = None
        if self._count(eng, task, 1):
            self._reserve(eng)
        if idle:
            task.started = True
            eng.running_since = self.now
            self._move(task, S.RUNNING, f"placed on idle engine {eng.engine_id}")
        else:
            self._move(task, S.ASSIGNED, f"prefetched on engine {eng.engine_id}")
        self.actions.append(DispatchTask(eng.engine_id, task.spec.task_id, task.gpu_ids))
        self._chain_after(task, eng)

    def _gpus_for(self, node: Node, amount: float) -> tuple:
        if amount < 1:
            for g, free in node.gpu_free.items():
                if free >= amount - 1e-9:
                    return (g,)
            return ()
        whole = [g for g, free in node.gpu_free.items() if free >= 1.0 - 1e-9]
        return tuple(whole[: int(amount)]) if len(whole) >= int(amount) else ()

    def _release_gpus(self, task: Task, node: Node | None) -> None:
        if task.gpu_ids:
            if node is not None:
                share = task.demand["GPU"] if task.demand["GPU"] < 1 else 1.0
                for g in task.gpu_ids:
                    node.gpu_free[g] = min(1.0, node.gpu_free[g] + share)
            task.gpu_ids = ()

    def _off_engine(self, task: Task) -> None:
        """Take a task off its engine's queue and start the next one there."""
        eng = self.engines.get(task.engine)
        self._release_gpus(task, self.nodes.get(eng.node) if eng is not None else None)
        task.engine = -1
        task.revoking = False
        if eng is None:
            return
        if eng.queue.pop(task.spec.task_id, 0) is None and not task.blocked:
            if self._count(eng, task, -1):
                self._reserve(eng)
        top = eng.blocked[-1] if eng.blocked else 0
        for tid in eng.queue:
            nxt = self.tasks[tid]
            if not nxt.blocked and (not top or nxt.spec.parent == top):
                if nxt.state is S.ASSIGNED:
                    nxt.started = True
                    eng.running_since = self.now
                    self._move(nxt, S.RUNNING, f"engine {eng.engine_id} reached it")
                break
        if eng.draining:
            self._maybe_retire(eng)

    def _count(self, eng: Engine, task: Task, delta: int) -> bool:
        """Count a task in or out of its engine's unblocked queue; True when the set of shapes changed."""
        eng.active += delta
        n = eng.shapes.get(task.dshape, 0) + delta
        if n > 0:
            eng.shapes[task.dshape] = n
            return n == delta  # a new shape
        eng.shapes.pop(task.dshape, None)
        return True

    def _reserve(self, eng: Engine) -> None:
        """An engine reserves the maximum demand of its unblocked queued tasks (over their few shapes)."""
        node = self.nodes[eng.node]
        new: dict = {}
        for shape in eng.shapes:
            for k, v in shape:
                if v > new.get(k, 0.0):
                    new[k] = v
        for k in set(new) | set(eng.reserved):
            node.used[k] = node.used.get(k, 0.0) + new.get(k, 0.0) - eng.reserved.get(k, 0.0)
        eng.reserved = new

    def _unreserve(self, eng: Engine) -> None:
        node = self.nodes[eng.node]
        for k, v in eng.reserved.items():
            node.used[k] = node.used.get(k, 0.0) - v
        eng.reserved = {}
