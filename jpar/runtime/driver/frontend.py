"""What front ends (the notebook layer, the dashboard, the sidebar) ask of a native cluster, over
one driver: who submitted a task, where its output goes, cancelling a driver's tasks, adding and
removing engines, the head's status and event stream. ``jpar.hooks`` calls these through the
backend seam (``backend.frontend``), so front ends never touch the driver or the wire.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from ..wire import transport
from ..wire.protocol import AddEngines, CancelClientTasks, Event, Events, RemoveEngines
from .driver import Driver, default_output_handler
from ...backends import FrontEnd as _FrontEndInterface
from ...errors import GetTimeoutError

__all__ = ["FrontEnd", "EventSubscription"]


class FrontEnd(_FrontEndInterface):
    """The front-end operations of one driver (see jpar.hooks for what each means)."""

    def __init__(self, driver: Driver):
        self.driver = driver

    def set_submit_hook(self, hook: Callable[[int], Any] | None) -> None:
        self.driver.submit_context = hook

    def set_output_handler(self, handler) -> None:
        self.driver.output_handler = handler or default_output_handler

    def apply(self, submit_hook, output_handler) -> None:
        d = self.driver
        if d.submit_context is not submit_hook:
            d.submit_context = submit_hook
        if output_handler is not None and d.output_handler is not output_handler:
            d.output_handler = output_handler

    def cancel_tasks(self, task_ids, force: bool) -> None:
        self.driver.cancel_ids(list(task_ids), force, True)

    def cancel_driver_tasks(self, client_no: int | None, force: bool, timeout: float) -> int:
        d = self.driver
        return d.request(CancelClientTasks, d.client_no if client_no is None else int(client_no), bool(force),
                         timeout=timeout)

    def add_engines(self, count: int, timeout: float | None) -> dict:
        d = self.driver
        wait_s = d.config.start_timeout_s if timeout is None else timeout
        return d.request(AddEngines, int(count), timeout=wait_s)

    def remove_engines(self, count: int, ids: list, wait: bool, timeout: float | None) -> tuple[dict, bool]:
        """The head's answer, and whether the engines were seen gone (``wait``)."""
        d = self.driver
        ans = d.request(RemoveEngines, 0 if ids else int(count), ids, timeout=10.0 if timeout is None else timeout)
        removed = list(ans["engine_ids"])
        if wait and removed:
            try:
                d.query("engines_gone", removed, timeout=timeout)
            except GetTimeoutError:
                raise GetTimeoutError(
                    f"Engine(s) {removed} are still finishing their running tasks after {timeout} s; each leaves "
                    "once done (engines() shows them until then). Wait longer, or cancel those tasks.") from None
            return ans, True
        return ans, False

    def task_ids_done(self, task_ids) -> list:
        results = self.driver.results
        return [t for t in task_ids if t in results]

    def status(self, timeout: float) -> dict:
        return self.driver.query("status", timeout=timeout)

    def subscribe_events(self, summary: bool = False) -> "EventSubscription":
        d = self.driver
        endpoint = d.conn.get("events") or (getattr(d, "info", None) or {}).get("events")
        if not endpoint:
            raise RuntimeError("This cluster's head publishes no event stream (no 'events' endpoint in its "
                               "connection record). Connect to a newer head, or use hooks.status() instead.")
        sub = EventSubscription(endpoint, d.signer, summary)
        sub._wait_live(d)
        return sub

    def summary_expand(self, groups: list, on: bool) -> bool:
        ok = True
        for key in groups:
            ok = bool(self.driver.query("summary_expand", [list(key), on], timeout=10.0)) and ok
        return ok

    def task_error(self, task_id: int) -> str | None:
        entry = self.driver.results.get(task_id)
        if entry is None or not entry[0]:
            return None
        from ..wire.serialization import load_result

        try:
            load_result(*entry)
        except BaseException as exc:  # the task's error, rebuilt
            cause = getattr(exc, "cause", None) or exc
            return f"{type(cause).__name__}: {cause}"
        return None

    def store_statistics(self, timeout: float) -> dict:
        return self.driver.query("object_store", timeout=timeout)

    def release_now(self, timeout: float) -> None:
        d = self.driver
        d.flush_released()
        d.query("resources", timeout=timeout)

    def driver_info(self) -> dict:
        d = self.driver
        return {"cluster_id": d.cluster_id, "address": d.conn.get("head", ""), "client_no": d.client_no}

    def pending_tasks(self) -> dict:
        d = self.driver
        contexts = dict(d.task_context)   # one C-level copy: the receiver thread pops finished ones
        origin = d.origin
        out = {}
        for tid, ctx in contexts.items():
            name = origin.get(tid)
            out[tid] = (ctx, name[0] if isinstance(name, tuple) else name or "task")
        return out


class EventSubscription:
    """The head's event stream (:class:`~jpar.events.Event` records: task transitions, engine
    metrics, engine/actor/cluster changes) as seen from this process, from now on.

    Owned by one thread: call :meth:`poll` (or iterate) from the thread that reads; :meth:`close`
    may be called from any thread and takes effect at that thread's next poll.

    With ``summary`` it reads the dashboards' stream instead (``self.summary`` True): ``summary``
    events with counts per call site every 0.25 s, and the events of a sample of tasks (see
    :mod:`jpar.runtime.head.task_summary`).
    """

    def __init__(self, endpoint: str, signer: Any, summary: bool = False):
        self.endpoint = endpoint
        self.summary = summary
        self._ch = transport.connect_sub(endpoint, signer, summary)
        self._closing = False
        self._owner: threading.Thread | None = None   # the thread that reads (set by poll)
        self.closed = False
        self.received = 0                   # events delivered so far
        self._early: list = []              # events seen while proving the subscription live

    def poll(self, timeout: float = 0.25, max_events: int = 100_000) -> list[Event]:
        """The events that arrived, waiting up to ``timeout`` seconds for the first; [] if none
        (or once closed)."""
        if self._closing:
            self._close_now()
        if self.closed:
            return []
        self._owner = threading.current_thread()
        out, self._early = self._early, []
        msg = self._ch.recv(timeout_ms=0 if out else max(0, int(timeout * 1000)))
        while msg is not None:
            if type(msg) is Events:
                out.extend(msg.events)
                if len(out) >= max_events:
                    break
            msg = self._ch.recv_nowait()
        self.received += len(out)
        return out

    def _wait_live(self, driver: Any, timeout: float = 10.0) -> None:
        """Return once events reach this subscriber: a SUB socket misses what is published before
        its subscription has propagated, so ask the head to publish a token until it arrives."""
        token = os.urandom(8).hex()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            driver.query("ping_events", token, timeout=timeout)
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                msg = self._ch.recv(timeout_ms=20)
                if type(msg) is Events:
                    for e in msg.events:
                        if e.kind == "cluster" and e.state == "ping":
                            if (e.info or {}).get("token") == token:
                                return
                        else:
                            self._early.append(e)
        raise TimeoutError(f"the head's event stream at {self.endpoint} sent nothing for {timeout} s")

    def __iter__(self):
        while not self.closed and not self._closing:
            yield from self.poll(0.25)

    def close(self) -> None:
        """Stop receiving (from any thread: the reading thread closes the socket at its next poll)."""
        self._closing = True
        if self._owner is None or self._owner is threading.current_thread():
            self._close_now()

    def _close_now(self) -> None:
        if not self.closed:
            self.closed = True
            self._ch.close()

    def __repr__(self) -> str:
        return f"EventSubscription({self.endpoint!r}, {'closed' if self.closed else 'open'})"
