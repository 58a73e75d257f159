"""The Jupyter server extension behind the JupyterLab sidebar: cluster discovery, status, start/stop,
and a live stream of every watched cluster, all under the Jupyter server's own port.

::

    runtime dir cluster-*.json ---+                         (find_clusters, every 0.5 s, server side)
    remote heads added by address +--> Hub (one thread) ---- starts one Watcher per cluster
                                                               while a browser listens
    head PUB --Events--> Watcher thread (a short-lived jpar client of kind "lab")
                           metrics events -> engines' CPU/RSS; task events -> finished count
                           every 1 s: status + object_store queries
                           at most 4 times a second: a snapshot --+
                                                                   v
    GET /jpar/stream (server-sent events) <-- IOLoop queues <-- Hub.publish (thread-safe)

Routes (authenticated ``APIHandler``\\ s; JSON in and out):

=========================  ====================================================================
GET  /jpar/clusters        clusters found on this machine plus remote heads added by address
POST /jpar/clusters        ``{"address": "tcp://h:p", "key": "<hex>"}``: add a remote head
DELETE /jpar/clusters      ``?address=...``: forget a remote head
GET  /jpar/status          ``?address=...``: one status answer (engines, tasks, store, actors)
POST /jpar/start           ``{"engines": N}``: a detached local cluster, like ``jpar start --head``
POST /jpar/stop            ``{"address": ...}``: stop that cluster and all its processes
POST /jpar/engines         ``{"address": ..., "engines": N}``: N more local engines joining it
DELETE /jpar/engines       ``?address=...&engines=N`` (or ``&engine=ID``, repeatable; or the same as a JSON
                           body): remove engines gracefully, ``{"address", "removed": [ids]}``; each
                           finishes its running task, then stops (the stream shows it go)
POST /jpar/cancel          ``{"address": ..., "driver": no, "force": false}``: cancel every unfinished
                           task of driver ``no`` (a ``drivers`` entry's ``no``): ``{"cancelled": n}``;
                           with ``"tasks": ["ID" or "FIRST-LAST", ...]`` (decimal task ids, as a
                           notebook's kernel lists them per cell) only those: ``{"cancelled": n}``
                           counts the ids asked for
GET  /jpar/stream          ``text/event-stream``: ``clusters`` and ``cluster`` snapshots, pushed
=========================  ====================================================================

The kernel is never involved: the server is its own jpar client, so the sidebar works with no
notebook open and across kernel restarts. Engines never import this module. A Dask or Ray cluster
this server can neither find nor speak to: the kernel that drives it pushes its card to the sidebar
over the sidebar's comm (:mod:`jpar.notebook.sidebar_cluster`); no route here is involved.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import subprocess
import sys
import threading
import time
from typing import Any

from .config import Config
from .errors import import_optional

_SERVER = "The jpar server extension (the JupyterLab sidebar)"
tornado = import_optional("tornado", _SERVER, "pip install jupyterlab")
import_optional("jupyter_server", _SERVER, "pip install jupyterlab")
import tornado.iostream  # noqa: E402  (tornado is there: checked just above)
import tornado.web  # noqa: E402
from jupyter_server.base.handlers import APIHandler  # noqa: E402
from jupyter_server.utils import url_path_join  # noqa: E402

from .backends.native import NativeBackend
from .runtime.driver.frontend import EventSubscription
from .runtime.driver.launcher import find_clusters

__all__ = ["Hub", "Watcher", "cluster_summary", "status_snapshot", "kernel_pids", "task_ids"]

log = logging.getLogger("jpar.labserver")

SCAN_INTERVAL_S = 0.5     # discovery: how often the runtime dir is listed (server side)
RETRY_S = 5.0             # a cluster that could not be watched is tried again after this long
STATUS_INTERVAL_S = 1.0   # per watched cluster: how often status and store figures are asked
MAX_HZ = 4.0              # snapshots pushed per cluster per second, at most
FINISHED = ("done", "failed", "cancelled")


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "jpar.labserver"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    km = getattr(serverapp, "kernel_manager", None)
    hub = Hub(Config.from_env(), kernel_pids=(lambda: kernel_pids(km)) if km is not None else None)
    web_app = serverapp.web_app
    base = url_path_join(web_app.settings["base_url"], "jpar")
    args = {"hub": hub}
    web_app.add_handlers(".*$", [(url_path_join(base, path), handler, args) for path, handler in routes()])
    web_app.settings["jpar_hub"] = hub
    serverapp.log.info("jpar sidebar server extension loaded at %s", base)


def routes() -> list[tuple[str, type]]:
    """Every route under ``/jpar/`` and its handler (one list: the server registers it, the tests walk
    it, so a route added here is checked for auth, Host and Origin without being named twice)."""
    return [("clusters", ClustersHandler), ("status", StatusHandler), ("start", StartHandler),
            ("stop", StopHandler), ("engines", EnginesHandler), ("cancel", CancelHandler),
            ("stream", StreamHandler)]


# ------------------------------------------------------------------------ pure helpers
def cluster_summary(conn: dict) -> dict:
    """What the sidebar lists for a cluster (no key: the browser never sees it), with the native
    backend's capability flags: the card's buttons follow them, as they do on the cards that a
    kernel pushes for a Dask or Ray cluster (:mod:`jpar.notebook.sidebar_cluster`)."""
    return {"id": conn.get("cluster_id", "?"), "address": conn["head"], "pid": conn.get("pid", 0),
            "host": conn.get("host", ""), "started": conn.get("started", 0), "local": bool(conn.get("local")),
            "remote": bool(conn.get("remote")), "file": conn.get("file", ""), "backend": NativeBackend.name,
            "source": "server", "capabilities": dataclasses.asdict(NativeBackend.capabilities)}


def _store_figures(raw: Any) -> dict:
    """``{node: StoreStatistics}`` -> totals the sidebar shows."""
    used = capacity = spilled = objects = 0
    for s in (raw or {}).values():
        get = (lambda k: s.get(k, 0)) if isinstance(s, dict) else (lambda k: getattr(s, k, 0))
        used += int(get("bytes_used") or 0)
        capacity += int(get("capacity") or 0)
        spilled += int(get("spilled_bytes") or 0)
        objects += int(get("object_count") or 0)
    return {"used": used, "capacity": capacity, "spilled": spilled, "objects": objects}


def status_snapshot(st: dict, store: Any, engines: dict | None = None, rate: float = 0.0) -> dict:
    """The sidebar's view of one cluster from the head's status answer (plus live metrics)."""
    live = engines or {}
    rows = []
    for e in sorted(st.get("engines", ()), key=lambda e: e["id"]):
        m = live.get(e["id"], {})
        # an engine is measured once it sent a sample: a metrics event, or the head's copy of one
        # (the head reports rss 0 until then); before that the sidebar shows "-", not 0 % / 0 MiB
        measured = bool(m) or bool(e.get("rss"))
        rows.append({"id": e["id"], "node": e.get("node", ""), "pid": e.get("pid", 0),
                     "cpu": round(float(m.get("cpu", e.get("cpu", 0.0))), 1) if measured else None,
                     "rss": int(m.get("rss", e.get("rss", 0))) if measured else None,
                     "queued": e.get("queued", 0), "busy": bool(m.get("task", e.get("task", 0))),
                     "draining": bool(e.get("draining", False))})
    sched = st.get("scheduler", {})
    actors = [{"id": a.get("id"), "class": a.get("class", "?"), "name": a.get("name", ""), "state": a.get("state", "?")}
              for a in st.get("actors", ()) or () if isinstance(a, dict)]
    drivers = [c for c in st.get("clients", ()) if c.get("kind") not in ("lab", "cli")]
    return {"id": st.get("cluster_id", "?"), "address": st.get("head", ""), "pid": st.get("pid", 0),
            "uptime": round(st.get("uptime_s", 0.0), 1), "engines": rows, "tasks": dict(sched.get("tasks", {})),
            "rate": round(rate, 1), "resources": st.get("resources", {}), "available": st.get("available", {}),
            "store": _store_figures(store), "actors": actors, "actor_counts": sched.get("actors", {}),
            "drivers": drivers, "memory_total": _memory_total()}


def task_ids(spec: Any, limit: int = 1_000_000) -> list[int]:
    """``["12", "20-23"]`` -> ``[12, 20, 21, 22, 23]``: task ids as the sidebar sends them (decimal
    strings, since ids pass 2**53; runs of consecutive ids as FIRST-LAST). ValueError if malformed."""
    if not isinstance(spec, list):
        raise ValueError("\"tasks\" must be a list of task ids (\"ID\" or \"FIRST-LAST\" strings).")
    out: list[int] = []
    for item in spec:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", str(item))
        if not m:
            raise ValueError(f"\"tasks\": {item!r} is not a task id (\"ID\" or \"FIRST-LAST\", decimal).")
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if last < first or len(out) + last - first + 1 > limit:
            raise ValueError(f"\"tasks\": {item!r} is not a valid range (or asks for over {limit} ids).")
        out.extend(range(first, last + 1))
    return out


def kernel_pids(kernel_manager: Any) -> dict[int, str]:
    """``{pid: kernel id}`` of the kernels this Jupyter server started on this machine, so the
    sidebar can name a driver by its notebook (drivers report their pid to the head)."""
    out: dict[int, str] = {}
    for kid in list(kernel_manager.list_kernel_ids()):
        try:
            prov = kernel_manager.get_kernel(kid).provisioner
            pid = getattr(prov, "pid", None) or getattr(getattr(prov, "process", None), "pid", None)
        except Exception:   # gone meanwhile, or a provisioner without a local process
            continue
        if pid:
            out[int(pid)] = kid
    return out


def _memory_total() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:   # psutil is a dependency; stay alive without it anyway
        return 0


def _connect(conn: dict, config: Config):
    from .runtime.driver.driver import Driver

    return Driver(conn, config.replace(start_timeout_s=min(config.start_timeout_s, 5.0)), kind="lab")


# ------------------------------------------------------------------------ threads
class Watcher:
    """One cluster, watched from a thread of the server: events and status in, snapshots out."""

    def __init__(self, conn: dict, config: Config, publish):
        self.conn = conn
        self.config = config
        self.publish = publish            # publish(address, snapshot or None) from this thread
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"jpar-lab-{conn.get('cluster_id')}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        address = self.conn["head"]
        try:
            d = _connect(self.conn, self.config)
        except Exception as exc:   # head gone or wrong key: say so once, the hub drops it
            log.info("jpar sidebar: cannot watch %s: %s", address, exc)
            self.publish(address, {"address": address, "error": str(exc)})
            return
        sub = None
        try:
            endpoint = d.conn.get("events") or (d.info or {}).get("events")
            sub = EventSubscription(endpoint, d.signer) if endpoint else None
            engines: dict[int, dict] = {}
            marks: list = []
            last_status = 0.0
            last_push = 0.0
            st = store = None
            dirty = False
            while not self.stopping.is_set() and not d.closed:
                if sub is not None:
                    events = sub.poll(0.1)
                else:   # a head without an event stream: status only
                    self.stopping.wait(0.25)
                    events = []
                for ev in events:
                    if ev.kind == "metrics" and isinstance(ev.info, dict):
                        engines[ev.key] = ev.info
                        dirty = True
                    elif ev.kind in ("task", "engine", "actor", "cluster"):
                        dirty = True
                now = time.monotonic()
                if now - last_status >= STATUS_INTERVAL_S or (dirty and now - last_status >= 1 / MAX_HZ):
                    st = d.query("status", timeout=5)
                    store = d.query("object_store", timeout=5)
                    last_status = now
                    done = sum(st.get("scheduler", {}).get("tasks", {}).get(k, 0) for k in FINISHED)
                    marks.append((now, done))
                    while len(marks) > 2 and now - marks[0][0] > 3.0:
                        marks.pop(0)
                    dirty = True
                if dirty and st is not None and now - last_push >= 1 / MAX_HZ:
                    (t0, f0), (t1, f1) = marks[0], marks[-1]
                    rate = (f1 - f0) / (t1 - t0) if t1 - t0 > 0.05 else 0.0
                    self.publish(address, status_snapshot(st, store, engines, rate))
                    last_push = now
                    dirty = False
        except Exception as exc:   # the head stopped or stopped answering
            log.info("jpar sidebar: stopped watching %s: %s", address, exc)
            self.publish(address, {"address": address, "error": str(exc)})
        finally:
            if sub is not None:
                sub.close()
            try:
                d.close()
            except Exception:
                pass


class Hub:
    """Discovery plus one Watcher per cluster while at least one browser stream listens."""

    def __init__(self, config: Config, kernel_pids=None):
        self.config = config
        self.kernel_pids = kernel_pids              # () -> {pid: kernel id} of this server's kernels
        self.remotes: dict[str, dict] = {}          # address -> conn (with key), added by the user
        self.lock = threading.Lock()
        self.listeners: set = set()                 # (loop, asyncio.Queue)
        self.watchers: dict[str, Watcher] = {}
        self.clusters: list[dict] = []              # last summaries sent
        self.latest: dict[str, dict] = {}           # address -> last snapshot
        self.failed: dict[str, float] = {}          # address -> when watching it failed (monotonic)
        self._thread: threading.Thread | None = None
        self._scan_lock = threading.Lock()          # one rescan at a time (scan thread, request threads)

    # discovery
    def conns(self) -> list[dict]:
        found = find_clusters(self.config)
        seen = {c["head"] for c in found}
        with self.lock:
            remotes = [dict(c) for a, c in self.remotes.items() if a not in seen]
        return found + remotes

    def find(self, address: str) -> dict | None:
        return next((c for c in self.conns() if address in (c["head"], c.get("cluster_id"))), None)

    def add_remote(self, address: str, key: str) -> dict:
        if not re.fullmatch(r"tcp://[^\s:/]+:\d+", address):
            raise ValueError(f"{address!r} is not a head address; give it as tcp://HOST:PORT.")
        key = key or self.config.cluster_key
        if not re.fullmatch(r"[0-9a-fA-F]{16,}", key or ""):
            raise ValueError("A remote head needs its cluster key (hex, from its connection file's \"key\"); "
                             "pass it as \"key\" or set JPAR_CLUSTER_KEY for the Jupyter server.")
        conn = {"head": address, "key": key, "local": False, "remote": True, "cluster_id": address}
        with self.lock:
            self.remotes[address] = conn
        return conn

    def remove_remote(self, address: str) -> bool:
        with self.lock:
            return self.remotes.pop(address, None) is not None

    # streaming
    def listen(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        with self.lock:
            self.listeners.add((loop, q))
            snapshots = list(self.latest.values())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._scan_loop, name="jpar-lab-hub", daemon=True)
                self._thread.start()
        q.put_nowait(("clusters", {"clusters": self.clusters}))
        for snap in snapshots:
            q.put_nowait(("cluster", snap))
        return q

    def unlisten(self, q: asyncio.Queue) -> None:
        with self.lock:
            self.listeners = {(lp, x) for lp, x in self.listeners if x is not q}

    def publish(self, kind: str, data: dict) -> None:
        with self.lock:
            listeners = list(self.listeners)
        for loop, q in listeners:
            try:
                loop.call_soon_threadsafe(q.put_nowait, (kind, data))
            except RuntimeError:   # that loop is closed
                self.unlisten(q)

    def _publish_cluster(self, address: str, snap: dict) -> None:
        snap = dict(snap, address=address)
        if snap.get("drivers") and self.kernel_pids is not None:
            try:
                pids = self.kernel_pids()
            except Exception:   # a kernel being started or stopped: name it next time
                pids = {}
            snap["drivers"] = [dict(d, kernel_id=pids[d["pid"]]) if d.get("pid") in pids else d
                               for d in snap["drivers"]]
        with self.lock:
            self.latest[address] = snap
            if snap.get("error"):
                self.failed[address] = time.monotonic()
        self.publish("cluster", snap)

    def rescan(self) -> None:
        """Discover now (also after start/stop, so the browser hears at once)."""
        with self._scan_lock:
            self._rescan()

    def _rescan(self) -> None:
        conns = self.conns()
        summaries = [cluster_summary(c) for c in conns]
        addresses = {c["head"] for c in conns}
        with self.lock:
            listening = bool(self.listeners)
            gone = [a for a in self.watchers if a not in addresses or not listening]
            dead = [a for a, w in self.watchers.items() if not w.thread.is_alive()]
            for a in set(gone) | set(dead):
                self.watchers.pop(a).stop()
                self.latest.pop(a, None)
            now = time.monotonic()
            new = [c for c in conns if listening and c["head"] not in self.watchers
                   and now - self.failed.get(c["head"], -RETRY_S) >= RETRY_S]
            for c in new:
                self.failed.pop(c["head"], None)
        for c in new:
            self.watchers[c["head"]] = Watcher(c, self.config, self._publish_cluster)
        if summaries != self.clusters:
            self.clusters = summaries
            self.publish("clusters", {"clusters": summaries})

    def _scan_loop(self) -> None:
        while True:
            try:
                self.rescan()
            except Exception:   # keep discovering whatever one scan hit
                log.exception("jpar sidebar: discovery failed")
            with self.lock:
                if not self.listeners:
                    for w in self.watchers.values():
                        w.stop()
                    self.watchers.clear()
                    self.latest.clear()
                    self._thread = None
                    return
            time.sleep(SCAN_INTERVAL_S)

    # one-shot requests (run in an executor thread)
    def status(self, address: str) -> dict:
        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        d = _connect(conn, self.config)
        try:
            return status_snapshot(d.query("status", timeout=5), d.query("object_store", timeout=5))
        finally:
            d.close()

    def start(self, engines: int) -> dict:
        """A detached local cluster (the ``jpar start --head`` command, so the head outlives the server)."""
        out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--head", "-n", str(engines)],
                             capture_output=True, text=True, timeout=self.config.start_timeout_s + 30)
        m = re.search(r"pid (\d+)\) at (\S+)", out.stdout)
        if out.returncode or not m:
            raise RuntimeError(f"jpar start --head failed: {out.stderr.strip() or out.stdout.strip()}")
        self.rescan()
        return {"pid": int(m.group(1)), "address": m.group(2)}

    def add_engines(self, address: str, engines: int) -> dict:
        """``engines`` more engines on the head's host (children of its head) of a cluster whose connection
        file is here; answers what they added (``message``: e.g. "added engine 3 (+1 CPU)") or, as a 400,
        why none can add capacity (a cluster started with a fixed num_cpus)."""
        from .errors import ResourceError
        from .hooks import add_engines

        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        if not conn.get("file"):
            raise ValueError("Engines can be added from here only to clusters with a connection file on this "
                             "machine; on the head's machine run `jpar add-engines` instead.")
        d = _connect(conn, self.config)
        try:
            change = add_engines(engines, driver=NativeBackend(d))
        except ResourceError as exc:
            raise ValueError(str(exc)) from None
        finally:
            d.close()
        return {"address": conn["head"], "pids": list(change.pids), "engine_ids": list(change.engine_ids),
                "resources": change.resources, "message": str(change)}

    def remove_engines(self, address: str, count: int = 1, engine_ids=None) -> dict:
        """Drain ``count`` engines (or those ids) of a cluster; answered at once, they leave when done."""
        from .hooks import remove_engines

        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        d = _connect(conn, self.config)
        try:
            change = remove_engines(count, engine_ids, wait=False, driver=NativeBackend(d))
        finally:
            d.close()
        return {"address": conn["head"], "removed": list(change.engine_ids), "resources": change.resources,
                "message": str(change)}

    def cancel_driver(self, address: str, client_no: int, force: bool = False) -> dict:
        """Cancel every unfinished task of one driver of a cluster (its number in ``drivers``)."""
        from .hooks import cancel_driver_tasks

        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        d = _connect(conn, self.config)
        try:
            return {"address": conn["head"], "driver": client_no,
                    "cancelled": cancel_driver_tasks(client_no, force, driver=NativeBackend(d))}
        finally:
            d.close()

    def cancel_tasks(self, address: str, tasks: list, force: bool = False) -> dict:
        """Cancel tasks by id, whichever driver owns them (that driver's ``get`` raises
        TaskCancelledError): how the sidebar cancels one cell's tasks without asking the kernel,
        which may be busy running that very cell."""
        ids = task_ids(tasks)
        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        d = _connect(conn, self.config)
        try:
            d.cancel_ids(ids, force, True)
            d.query("status", timeout=5)    # answered after the cancels (one connection, in order)
        finally:
            d.close()
        return {"address": conn["head"], "cancelled": len(ids)}

    def stop(self, address: str) -> dict:
        conn = self.find(address)
        if conn is None:
            raise LookupError(f"No jpar cluster at {address!r}; GET /jpar/clusters lists the known ones.")
        d = _connect(conn, self.config)
        d.close(stop_cluster=True)
        with self.lock:
            w = self.watchers.pop(conn["head"], None)
            self.latest.pop(conn["head"], None)
        if w is not None:
            w.stop()
        self.remove_remote(conn["head"])
        self.rescan()
        return {"stopped": conn["head"], "pid": conn.get("pid", 0)}


# ------------------------------------------------------------------------ handlers
class _Base(APIHandler):
    """Every route: Jupyter's auth (``@tornado.web.authenticated`` on each method), Jupyter's Host
    check (a request whose Host is not this server's is refused: DNS rebinding), and, for requests
    that change something, an Origin that must be this server's own. Jupyter lets a token-bearing
    request from any origin through; a web page cannot attach the token, but a cluster is worth a
    second lock, so a foreign Origin is refused whatever the credentials."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    async def prepare(self) -> None:
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and not self._origin_allowed():
            raise tornado.web.HTTPError(403, f"Cross-origin {self.request.method} from "
                                             f"{self.request.headers.get('Origin')} refused: jpar's routes take "
                                             "changes only from pages of this Jupyter server (or its allow_origin).")
        await super().prepare()

    def _origin_allowed(self) -> bool:
        """Jupyter's own Origin rule (same host, or the server's ``allow_origin``/``allow_origin_pat``),
        without its exemption for token-bearing requests."""
        self._strict_origin = True
        try:
            return self.check_origin()
        finally:
            self._strict_origin = False

    def skip_check_origin(self) -> bool:
        return False if getattr(self, "_strict_origin", False) else super().skip_check_origin()

    def body(self) -> dict:
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "The request body must be JSON.") from None

    async def run(self, fn, *args) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except LookupError as exc:
            raise tornado.web.HTTPError(404, str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        except Exception as exc:
            raise tornado.web.HTTPError(502, f"{type(exc).__name__}: {exc}") from None


class ClustersHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        conns = await self.run(self.hub.conns)
        self.finish(json.dumps({"clusters": [cluster_summary(c) for c in conns]}))

    @tornado.web.authenticated
    async def post(self) -> None:
        b = self.body()
        conn = await self.run(self.hub.add_remote, str(b.get("address", "")), str(b.get("key", "")))
        await self.run(self.hub.rescan)
        self.finish(json.dumps(cluster_summary(conn)))

    @tornado.web.authenticated
    async def delete(self) -> None:
        removed = self.hub.remove_remote(self.get_argument("address", ""))
        await self.run(self.hub.rescan)
        self.finish(json.dumps({"removed": removed}))


class StatusHandler(_Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.finish(json.dumps(await self.run(self.hub.status, self.get_argument("address", ""))))


class StartHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        n = self.body().get("engines", 2)
        if not isinstance(n, int) or not 1 <= n <= 256:
            raise tornado.web.HTTPError(400, "\"engines\" must be an integer from 1 to 256.")
        self.finish(json.dumps(await self.run(self.hub.start, n)))


class StopHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        self.finish(json.dumps(await self.run(self.hub.stop, str(self.body().get("address", "")))))


class EnginesHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        b = self.body()
        n = b.get("engines", 1)
        if not isinstance(n, int) or not 1 <= n <= 256:
            raise tornado.web.HTTPError(400, "\"engines\" must be an integer from 1 to 256.")
        self.finish(json.dumps(await self.run(self.hub.add_engines, str(b.get("address", "")), n)))

    @tornado.web.authenticated
    async def delete(self) -> None:
        b = self.body()
        if not isinstance(b, dict):
            raise tornado.web.HTTPError(400, "The request body must be a JSON object.")
        n, ids = self.get_argument("engines", None), self.get_arguments("engine")
        try:
            n = b.get("engines", 1) if n is None else int(n)
            ids = [int(i) for i in ids] if ids else b.get("engine_ids", [])
        except ValueError:
            n = None
        if (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 256 or not isinstance(ids, list)
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise tornado.web.HTTPError(400, "\"engines\" must be an integer from 1 to 256, and \"engine\" "
                                             "(\"engine_ids\" in a JSON body) engine ids (integers).")
        address = self.get_argument("address", None) or str(b.get("address", ""))
        self.finish(json.dumps(await self.run(self.hub.remove_engines, address, n, ids)))


class CancelHandler(_Base):
    @tornado.web.authenticated
    async def post(self) -> None:
        b = self.body()
        no, force = b.get("driver"), b.get("force", False)
        if "tasks" in b:
            if not isinstance(force, bool):
                raise tornado.web.HTTPError(400, "\"force\" must be true or false.")
            self.finish(json.dumps(await self.run(self.hub.cancel_tasks, str(b.get("address", "")), b["tasks"], force)))
            return
        if not isinstance(no, int) or isinstance(no, bool) or not isinstance(force, bool):
            raise tornado.web.HTTPError(400, "\"driver\" must be a driver's number (an integer, the \"no\" of "
                                             "a status \"drivers\" entry) and \"force\" true or false.")
        self.finish(json.dumps(await self.run(self.hub.cancel_driver, str(b.get("address", "")), no, force)))


class StreamHandler(_Base):
    """Server-sent events: ``event: clusters`` (the list) and ``event: cluster`` (one snapshot)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")      # nginx (JupyterHub proxies): don't buffer
        q = self._queue = self.hub.listen()
        try:
            self.write(": jpar\n\n")
            await self.flush()
            while True:
                try:
                    kind, data = await asyncio.wait_for(q.get(), 15)
                    if kind == "closed":
                        return
                    self.write(f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n")
                except asyncio.TimeoutError:
                    self.write(": keep-alive\n\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            self.hub.unlisten(q)

    def on_connection_close(self) -> None:
        q = getattr(self, "_queue", None)
        if q is not None:
            q.put_nowait(("closed", {}))
