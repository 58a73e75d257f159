"""The head's engine membership duties: add engines on request, remove them gracefully, and
answer whoever waits for engines to join or leave.

Mixed into :class:`jpar.runtime.head.controller.Head`. Adding starts engines as the head's own children
(respawned if they crash, stopped with the cluster) and answers once they have joined, with
the resources they brought; a node with a declared, fixed CPU count gets none and is told
why. Removing drains engines through the scheduler (no new work, prefetched work given back,
running task finished) and answers with the resources given back.

When a node other than the head's has no engine left (lost, or its last engine removed), the
values stored only there cannot be pulled any more: each is made again by its task where the
scheduler kept its lineage (scheduler_lineage: its owner is told to wait for the new value), or
becomes an ObjectLostError naming the node, what made it and why it cannot be rebuilt, in the
head's table (tasks taking it fail at once) and at its owner (its ``get`` raises at once instead
of waiting for a server that is gone).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..wire import protocol as P
from ..wire import serialization
from ...errors import ObjectLostError, ResourceError
from .scheduler_state import DrainEngine

if TYPE_CHECKING:
    from .controller import Client

__all__ = ["EngineMembership"]

log = logging.getLogger("jpar.head")


class EngineMembership:
    """Adding and removing engines on request (mixed into Head)."""

    def _answer_engine_waits(self) -> None:
        still = []
        for client_no, req_id, n in self.wait_engines:
            if len(self.engines) >= n:
                self._answer(client_no, req_id, len(self.engines))
            else:
                still.append((client_no, req_id, n))
        self.wait_engines = still

    def _answer_gone_waits(self) -> None:
        still = []
        for client_no, req_id, ids in self.wait_gone:
            if any(i in self.engines_by_id for i in ids):
                still.append((client_no, req_id, ids))
            else:
                self._answer(client_no, req_id, sorted(ids))
        self.wait_gone = still

    def _remove_engines(self, client: "Client", msg: P.RemoveEngines) -> None:
        """Drain engines; answered at once with their ids, pids and what they give back (they leave
        once their running tasks end)."""
        try:
            actions = self.sched.drain_engines(int(msg.count), tuple(msg.engine_ids or ()))
        except (ValueError, TypeError, LookupError) as exc:   # nothing changed: the client raises it
            self._answer(client.no, msg.req_id, exc)
            return
        ids = sorted({a.engine_id for a in actions if type(a) is DrainEngine})
        freed: dict = {}
        for i in ids:
            for k, v in self.sched.engine_share(i)[0].items():
                freed[k] = freed.get(k, 0.0) - v
        log.info("client %d removes engines %s", client.no, ids)
        self._apply(actions)
        pids = [self.engines_by_id[i].pid for i in ids if i in self.engines_by_id]
        self._answer(client.no, msg.req_id, {"engine_ids": ids, "resources": freed, "pids": pids,
                                             "fixed": self._fixed_note()})

    def _fixed_note(self) -> str:
        """Why engines on the head's node bring no CPU (a declared num_cpus), or ""."""
        node = self.setup.get("node", "")
        cpus = self.setup.get("resources", {}).get("CPU")
        grows = self.sched.node_grows(node)
        if cpus is None or (grows is not None and grows.get("CPU")):
            return ""
        return (f"node {node!r} has a fixed CPU count ({cpus:g}, declared with num_cpus= or JPAR_NUM_CPUS when the "
                "cluster started), so its engines neither bring nor take CPUs")

    def _add_engines(self, client: "Client", msg: P.AddEngines) -> None:
        """Start engines on this host; answered once all have joined (see _answer_adds)."""
        n = int(msg.count)
        note = self._fixed_note()
        refusal: Exception | None = None
        if n < 1:
            refusal = ValueError(f"Adding {n} engines does nothing; ask for at least one.")
        elif note:
            refusal = ResourceError(f"Cannot add capacity: {note}. Another engine would run no more tasks at once. "
                                    "Start the cluster without num_cpus to let each engine bring one CPU.")
        elif self.stopping:
            refusal = ValueError("The cluster is stopping; it takes no new engines.")
        if refusal is not None:   # nothing started: the client raises it
            self._answer(client.no, msg.req_id, refusal)
            return
        pids = {self._spawn_engine().pid for _ in range(n)}
        log.info("client %d adds engines (pids %s)", client.no, sorted(pids))
        self.adding.append([client.no, msg.req_id, pids, []])

    def _answer_adds(self, pid: int, eid: int) -> None:
        for entry in self.adding:
            if pid in entry[2]:
                entry[2].discard(pid)
                entry[3].append(eid)
                if not entry[2]:
                    self.adding.remove(entry)
                    ids = entry[3]
                    added: dict = {}
                    for i in ids:
                        for k, v in self.sched.engine_share(i)[0].items():
                            added[k] = added.get(k, 0.0) + v
                    self._answer(entry[0], entry[1], {
                        "engine_ids": ids, "pids": [self.engines_by_id[i].pid for i in ids if i in self.engines_by_id],
                        "resources": added, "node": self.setup.get("node", ""), "fixed": ""})
                return

    # ------------------------------------------------------------ values lost with their node
    def _maker(self, task_id: int) -> str:
        spec = getattr(self.sched.tasks.get(task_id), "spec", None)   # (a finishing task is a full Task)
        return f"the result of task {spec.name}" if spec is not None else "a task's result"

    def _objects_lost_with(self, node: str, why: str) -> None:
        """Values stored only on ``node`` (gone): rebuilt by running their tasks again where the
        scheduler can (lineage), the others an ObjectLostError saying why not. Owners hear first
        (ObjectsRebuilding: forget the location and wait; ObjectsLost: the error), then the rebuilt
        tasks are dispatched, so no new result can reach an owner before the notice."""
        lost = self.stores.forget_node(node)
        if not lost:
            return
        makers = dict(lost)

        def lost_blob(oid: int, why_not: str) -> bytes:
            return serialization.dumps_error(ObjectLostError(
                f"Object {oid:#x} ({makers.get(oid) or 'a value'}) was stored only on node {node!r}, which has no "
                f"engine left ({why}): its value is gone, and jpar cannot rebuild it: {why_not}. Values that must "
                "outlive a host belong on the head's host (get() them there, or put() them from a driver on it)."))

        rebuilt, records, actions = self.sched.rebuild(node, [oid for oid, _ in lost], lost_blob)
        self._tell_owners(records, P.ObjectsLost)
        self._tell_owners([(self.sched.objects[oid].owner, oid) for oid in rebuilt],
                          lambda oids: P.ObjectsRebuilding(oids, node))
        notice = P.NodeLost(node, [rec for _, rec in records], list(rebuilt))
        for client in self.clients_by_no.values():   # readers that are not owners may hold locations there
            client.push.send(notice, nowait=True)
        self._apply(actions)
        if records:
            log.warning("%d object(s) stored only on node %r are lost with it", len(records), node)
        if rebuilt:
            log.warning("%d object(s) stored only on node %r are being rebuilt by their tasks", len(rebuilt), node)

    def _tell_owners(self, items, message) -> None:
        """``items``: (owner, item) pairs; each connected owner gets one ``message(its items)``."""
        by_owner: dict[int, list] = {}
        for owner, item in items:
            by_owner.setdefault(owner, []).append(item)
        for owner, batch in by_owner.items():
            client = self.clients_by_no.get(owner)
            if client is not None:
                client.push.send(message(batch), nowait=True)
