"""Integration points for front ends (the notebook layer, dashboards): who submitted a task,
where its output goes, which engines exist; cluster operations (add and remove engines, cancel
a driver's tasks). Plain functions over the current driver, so front ends never reach into
driver internals.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import transport
from .driver import Driver, current_driver, require_driver
from .errors import GetTimeoutError
from .protocol import AddEngines, CancelClientTasks, Event, Events, OutputRecord, RemoveEngines

__all__ = ["set_submit_hook", "set_output_handler", "set_front_end", "apply_front_end", "cancel_tasks", "engines",
           "status", "task_ids_done", "OutputRecord", "Event", "EventSubscription", "subscribe_events",
           "set_progress_reporter", "progress_reporter", "task_error", "store_statistics", "release_now",
           "driver_info", "pending_tasks", "remove_engines", "add_engines", "EngineChange", "cancel_driver_tasks"]

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


def cancel_driver_tasks(client_no: int | None = None, force: bool = False, *, driver: Driver | None = None,
                        timeout: float = 10.0) -> int:
    """Cancel every unfinished task of one driver (client number ``client_no``, as in
    ``status()["clients"]``; None: this process's own) and the tasks they submitted; that driver's
    ``jpar.get`` raises TaskCancelledError. ``force`` kills the engines running them (local ones
    are replaced). Actor calls are left alone. Returns how many tasks were cancelled.
    Raises LookupError if no such client is connected. ``driver``: ask through this connection
    instead of the current one (e.g. the sidebar's)."""
    d = driver or require_driver("cancel_driver_tasks()")
    return d.request(CancelClientTasks, d.client_no if client_no is None else int(client_no), bool(force),
                     timeout=timeout)


@dataclass(frozen=True)
class EngineChange:
    """What :func:`add_engines` or :func:`remove_engines` did, for a front end to say:
    ``str(change)`` is e.g. "added engine 3 (+1 CPU)".

    ``resources`` is the change of :func:`jpar.cluster_resources` it makes (``{"CPU": 1.0}``,
    ``{"CPU": -1.0}``; empty when the node's CPU count is fixed), ``note`` says why it is empty."""

    action: str                 # "added", "removing" (engines leave once their running task ends), "removed"
    engine_ids: tuple
    pids: tuple = ()
    resources: dict = field(default_factory=dict)
    note: str = ""

    def __str__(self) -> str:
        ids = ", ".join(map(str, self.engine_ids))
        what = f"{self.action} engine{'s' if len(self.engine_ids) != 1 else ''} {ids}"
        delta = ", ".join(f"{v:+g} {k}" for k, v in sorted(self.resources.items()) if v)
        return f"{what} ({delta or 'no resources: ' + (self.note or 'none advertised')})"


def add_engines(count: int = 1, *, timeout: float | None = None, driver: Driver | None = None) -> EngineChange:
    """Start ``count`` more engines on the head's host, as its children (replaced if they crash,
    stopped with the cluster); returns once they have joined, with what they added: each brings one
    CPU unless the cluster was started with a fixed ``num_cpus``, in which case nothing is started
    and ResourceError says so (an engine more would run no more tasks at once). ``timeout``:
    seconds to wait for them to join (default: the start timeout). ``driver``: as above."""
    d = driver or require_driver("add_engines()")
    wait_s = d.config.start_timeout_s if timeout is None else timeout
    ans = d.request(AddEngines, int(count), timeout=wait_s)
    return EngineChange("added", tuple(ans["engine_ids"]), tuple(ans["pids"]), dict(ans["resources"]),
                        ans.get("fixed", ""))


def remove_engines(count: int = 1, engine_ids=None, *, wait: bool = True, timeout: float | None = None,
                   driver: Driver | None = None) -> EngineChange:
    """Remove engines from the cluster gracefully: ``engine_ids``, or else ``count`` of them (idle
    ones first, then the least busy, the newest first). Each takes no new task, gives back the tasks
    it prefetched but had not started (they run on other engines), finishes its running task, then
    stops (a local one is not replaced) and its node gives back the CPU it brought. Tasks pinned to
    it that had not started fail with ResourceError. Returns an :class:`EngineChange` (``engine_ids``,
    ``pids``, ``resources``: e.g. ``{"CPU": -1.0}``).

    With ``wait``, returns once they are gone from ``status()["engines"]`` (their processes exit
    right after), raising GetTimeoutError after ``timeout`` seconds (they still leave when done).
    Raises ValueError, removing nothing, if that would leave no engine taking tasks (a cluster keeps
    one: stop it instead), LookupError for an unknown engine id. ``driver``: as above."""
    d = driver or require_driver("remove_engines()")
    ids = [int(i) for i in engine_ids or ()]
    ans = d.request(RemoveEngines, 0 if ids else int(count), ids, timeout=10.0 if timeout is None else timeout)
    removed = list(ans["engine_ids"])
    change = EngineChange("removing", tuple(removed), tuple(ans.get("pids", ())), dict(ans.get("resources", {})),
                          ans.get("fixed", ""))
    if wait and removed:
        try:
            d.query("engines_gone", removed, timeout=timeout)
        except GetTimeoutError:
            raise GetTimeoutError(
                f"Engine(s) {removed} are still finishing their running tasks after {timeout} s; each leaves once "
                "done (engines() shows them until then). Wait longer, or cancel those tasks.") from None
        change = dataclasses.replace(change, action="removed")
    return change


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


class EventSubscription:
    """The head's event stream (:class:`~jpar.protocol.Event` records: task transitions, engine
    metrics, engine/actor/cluster changes) as seen from this process, from now on.

    Owned by one thread: call :meth:`poll` (or iterate) from the thread that reads; :meth:`close`
    may be called from any thread and takes effect at that thread's next poll.
    """

    def __init__(self, endpoint: str, signer: Any):
        self.endpoint = endpoint
        self._ch = transport.connect_sub(endpoint, signer)
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


def subscribe_events() -> EventSubscription:
    """Subscribe to the current cluster's event stream (events published from now on)."""
    d = require_driver("subscribe_events()")
    endpoint = d.conn.get("events") or (getattr(d, "info", None) or {}).get("events")
    if not endpoint:
        raise RuntimeError("This cluster's head publishes no event stream (no 'events' endpoint in its "
                           "connection record). Connect to a newer head, or use hooks.status() instead.")
    sub = EventSubscription(endpoint, d.signer)
    sub._wait_live(d)
    return sub


# ---------------------------------------------------------------- progress reporting
_progress_reporter: Callable[[list, str, int], Any] | None = None


def set_progress_reporter(reporter: Callable[[list, str, int], Any] | None) -> None:
    """Install ``reporter(refs, what, target)``: jpar.get/jpar.wait on a list call it (``what`` is "get" or
    "wait", ``target`` how many refs must be ready) and run inside the context manager it returns (or
    without one if it returns None). None uninstalls."""
    global _progress_reporter
    _progress_reporter = reporter


def progress_reporter() -> Callable[[list, str, int], Any] | None:
    """The installed progress reporter, or None."""
    return _progress_reporter


def task_error(task_id: int) -> str | None:
    """``"Type: message"`` of a failed task whose result came back to this process, else None."""
    d = current_driver()
    entry = d.results.get(task_id) if d is not None else None
    if entry is None or not entry[0]:
        return None
    from .serialization import load_result

    try:
        load_result(*entry)
    except BaseException as exc:  # the task's error, rebuilt
        cause = getattr(exc, "cause", None) or exc
        return f"{type(cause).__name__}: {cause}"
    return None


def store_statistics(timeout: float = 10.0) -> dict:
    """Object-store figures per node: ``{node: StoreStatistics}`` (used, capacity, spilled, objects)."""
    return require_driver("store_statistics()").query("object_store", timeout=timeout)


def release_now(timeout: float = 10.0) -> None:
    """Send the releases of refs already garbage collected, and return once the head has applied
    them (the query after them on the same socket is answered after they are processed)."""
    d = require_driver("release_now()")
    d.flush_released()
    d.query("resources", timeout=timeout)


def driver_info() -> dict | None:
    """This process's driver as front ends name it (cluster, address, client number); None if none."""
    d = current_driver()
    if d is None or d.closed:
        return None
    return {"cluster_id": d.cluster_id, "address": d.conn.get("head", ""), "client_no": d.client_no}


def pending_tasks() -> dict:
    """``{task_id: (context, name)}`` of this driver's unfinished tasks that a submit hook saw
    (the context is what the hook returned: the notebook layer's Cell). Empty without a hook."""
    d = current_driver()
    if d is None or d.closed:
        return {}
    contexts = dict(d.task_context)   # one C-level copy: the receiver thread pops finished ones
    origin = d.origin
    out = {}
    for tid, ctx in contexts.items():
        name = origin.get(tid)
        out[tid] = (ctx, name[0] if isinstance(name, tuple) else name or "task")
    return out
