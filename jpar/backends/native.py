"""The native backend: jpar's own runtime (``jpar.runtime``) behind the seam.

One :class:`NativeBackend` wraps one runtime :class:`~jpar.runtime.driver.driver.Driver` (the
connection to a head) and turns the API's calls into the runtime's messages: a function is
shipped once (by content hash) and a task is a ``TaskSpec``; an actor is an ``ActorSpec`` and its
calls go straight to the actor's process (``runtime.driver.actors``). Inside an engine the same
class wraps the engine's own client, so nested tasks use this path too.
"""

from __future__ import annotations

import pickle
from typing import Any

from . import Backend, Capabilities
from .. import call_sites
from ..config import Config
from ..errors import ClusterError
from ..refs import ObjectRef
from ..runtime.driver.actors import actor_client
from ..runtime.driver.args import put_large, split_refs, top_refs
from ..runtime.driver.driver import Driver
from ..runtime.driver.frontend import FrontEnd
from ..runtime.driver.launcher import engine_count, find_clusters, start_head
from ..runtime.wire import protocol as P
from ..pickling import shipped_definition
from ..runtime.wire import serialization

__all__ = ["NativeBackend"]


class NativeBackend(Backend):
    """The API on a native cluster (this machine's, or a head reached over TCP)."""

    name = "native"
    capabilities = Capabilities(interrupt_running=True, force_cancel=True, actor_restart=True,
                                actor_concurrency=True, placement=True, add_engines=True, notebook_engines=True,
                                free_any=True)

    def __init__(self, driver: Driver):
        self.driver = driver
        self.ssh_record: dict | None = None    # engines started over ssh, stopped with the cluster
        self.frontend = FrontEnd(driver)
        driver.backend = self

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def connect(cls, address: Any, config: Config, init_args: dict) -> "NativeBackend":
        if init_args.get("ssh"):
            if address is not None:
                raise ValueError("jpar.init() takes ssh=[hosts] (start a cluster) or address=... (join one), not both.")
            return cls._start_over_ssh(config, init_args)
        if address is None:
            n = engine_count(config, init_args.get("num_engines"))
            conn, proc = start_head(config, n, owner=True, resources=init_args.get("resources"))
            try:
                driver = Driver(conn, config, owns_cluster=True, process=proc)
                driver.query("wait_engines", n, timeout=config.start_timeout_s)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        else:
            driver = Driver(resolve_address(address, config), config)
        return cls(driver)

    @classmethod
    def _start_over_ssh(cls, config: Config, init_args: dict) -> "NativeBackend":
        """A head here and engines on the hosts over ssh (``jpar.init(ssh=[...])``); the backend
        keeps the record, so closing it stops them (runtime.driver.ssh_launcher)."""
        from ..runtime.driver import ssh_launcher

        hosts = init_args["ssh"]
        hosts = hosts.split(",") if isinstance(hosts, str) else list(hosts)
        cluster = ssh_launcher.up(hosts, config, engines_per_host=init_args.get("num_engines") or config.num_engines
                                  or None, owner=True, resources=init_args.get("resources"))
        try:   # on TCP, not IPC: engines on other hosts send results straight to this driver
            driver = Driver(dict(cluster.conn, local=False), config, owns_cluster=True, process=cluster.head_proc)
        except BaseException:
            ssh_launcher.down(cluster.record, config, head_proc=cluster.head_proc)
            raise
        ssh_launcher.wait_joined(cluster, driver, config)
        b = cls(driver)
        b.ssh_record = cluster.record
        return b

    @property
    def cluster_id(self) -> str:
        return self.driver.cluster_id

    @property
    def closed(self) -> bool:
        return self.driver.closed

    @property
    def released(self):
        return self.driver.released

    def check_alive(self) -> None:
        self.driver._check_alive()

    def close(self) -> None:
        d = self.driver
        d.close(stop_cluster=d.process is not None)
        if self.ssh_record is not None:
            from ..runtime.driver import ssh_launcher

            record, self.ssh_record = self.ssh_record, None
            ssh_launcher.down(record, d.config, stop_head=False)

    def describe(self) -> dict:
        c = self.driver.conn
        st = self.driver.query("status", timeout=10)
        return {"backend": self.name, "address": c["head"], "cluster_id": self.driver.cluster_id,
                "engines": st["engines"], "resources": st["resources"], "status": st,
                "address_info": {"address": c["head"], "events": c.get("events"), "cluster_id": c["cluster_id"],
                                 "connection_file": c.get("file", "")}}

    # -- tasks and objects ----------------------------------------------------------------------
    def submit(self, fn: Any, args: tuple, kwargs: dict, options: Any) -> Any:
        driver = self.driver
        fn_id, blob, resources, retry = _function_definition(fn)
        driver.ensure_function(fn_id, fn._name, lambda: blob)
        args, kwargs, deps = split_refs(args, kwargs, driver.cluster_id)
        args, kwargs, deps, keep = put_large(driver, args, kwargs, deps)   # keep: refs live until submitted
        payload = serialization.dumps_args(fn._name, args, kwargs)
        if len(payload) >= driver.store.threshold and not keep:
            args, kwargs, deps, keep = put_large(driver, args, kwargs, deps, measure=True)
            payload = serialization.dumps_args(fn._name, args, kwargs)
        n = options.num_returns
        task_id = driver.new_ids(n)
        max_retries = driver.config.max_retries if options.max_retries is None else options.max_retries
        if max_retries < 0:
            max_retries = 1 << 30
        driver.submit(P.TaskSpec(task_id, fn_id, fn._name, payload, deps, n, resources,
                                 max_retries, retry, driver.current_task, 0, options.placement, call_sites.current()))
        if n == 1:
            return ObjectRef(task_id, driver.client_no, driver)
        return [ObjectRef(task_id + i, driver.client_no, driver) for i in range(n)]

    def put(self, value: Any) -> ObjectRef:
        return self.driver.put(value)

    def get(self, refs: list, timeout: float | None) -> list:
        return self.driver.get(refs, timeout)

    def wait(self, refs: list, num_returns: int, timeout: float | None, fetch_local: bool) -> tuple[list, list]:
        return self.driver.wait(refs, num_returns, timeout, fetch_local)

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self.driver.cancel(ref, force, recursive)

    def free(self, refs: list) -> None:
        self.driver.free(refs)

    def future(self, ref: ObjectRef):
        return self.driver.future(ref)

    def describe_ref(self, ref: ObjectRef) -> dict:
        return self.driver.describe_ref(ref)

    # -- actors ---------------------------------------------------------------------------------
    def create_actor(self, actor_class: Any, args: tuple, kwargs: dict, options: Any) -> tuple[int, dict, bool]:
        """Start the actor; ``(actor_id, meta, owned)``: not owned when ``get_if_exists`` found one
        (or it is detached), so dropping this handle does not end it."""
        d = self.driver
        client = actor_client(d)
        opts = options
        name = actor_class._name
        fn_id, blob = _class_definition(actor_class)
        d.ensure_function(fn_id, name, lambda: blob)
        dep_refs = top_refs(args, kwargs)
        args, kwargs, deps = split_refs(args, kwargs, d.cluster_id)
        payload = serialization.dumps_args(f"{name}.__init__", args, kwargs)
        if dep_refs:  # the creator resolves constructor refs (an error among them fails __init__)
            d.wait(dep_refs, len(dep_refs), None)
            deps = tuple((oid, *d.results[oid]) for oid in deps)
        meta = {"class_name": name, "methods": actor_class._methods, "max_task_retries": opts.max_task_retries}
        actor_id = d.new_ids()
        spec = P.ActorSpec(actor_id, fn_id, name, payload, deps, opts.resource_tuple(), {
            "max_restarts": opts.max_restarts, "max_task_retries": opts.max_task_retries,
            "max_concurrency": opts.max_concurrency, "is_async": actor_class._is_async, "detached": opts.detached,
            "methods": actor_class._methods, "owner": d.client_no, "owner_endpoint": d.endpoint,
        }, opts.name or "")
        client.open(actor_id, meta, subscribe=False)
        if opts.name:
            answer = client.ask(lambda req: P.CreateActor(req, spec, opts.get_if_exists), timeout=60)
            if answer["error"]:
                raise ValueError(answer["error"])
            if answer["actor_id"] != actor_id:  # get_if_exists found the existing one
                client.forget(actor_id)
                return answer["actor_id"], meta, False
        else:
            d._send(P.CreateActor(0, spec, False))
        return actor_id, meta, not opts.detached

    def call_actor(self, handle: Any, method: str, num_returns: int, args: tuple, kwargs: dict) -> Any:
        d = self.driver
        client = d._actor_client or actor_client(d)
        return client.call(handle._actor_id, handle._meta, method, num_returns, args, kwargs)

    def kill_actor(self, handle: Any, no_restart: bool) -> None:
        actor_client(self.driver).kill(handle._actor_id, handle._meta, no_restart)

    def get_actor(self, name: str, namespace: str | None) -> tuple[int, dict] | None:
        info = self.driver.query("actor", name, timeout=30)
        if info is None:
            return None
        return info["actor_id"], {"class_name": info["class_name"], "methods": info["methods"],
                                  "max_task_retries": info.get("max_task_retries", 0)}

    def actor_handle_made(self, actor_id: int, meta: dict) -> None:
        actor_client(self.driver).handle_made(actor_id)

    def actor_handle_escaped(self, actor_id: int) -> None:
        actor_client(self.driver).escaped.add(actor_id)

    def actor_handle_dropped(self, actor_id: int) -> None:
        client = self.driver._actor_client
        if client is not None:
            client.released.append(actor_id)

    def actor_state(self, actor_id: int) -> str:
        client = self.driver._actor_client
        conn = client.conns.get(actor_id) if client is not None else None
        return conn.state if conn is not None and conn.state != "unknown" else "not called from here yet"

    # -- the cluster ----------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        st = self.driver.query("status", timeout=30)
        by_node: dict[str, dict] = {}
        for e in st["engines"]:
            n = by_node.setdefault(e["node"], {"NodeID": e["node"], "NodeName": e["host"], "Alive": True,
                                               "NodeManagerAddress": e["host"], "Engines": []})
            n["Engines"].append(e["id"])
        for name, res in st.get("node_resources", {}).items():
            if name in by_node:
                by_node[name]["Resources"] = res
        return list(by_node.values())

    def cluster_resources(self) -> dict:
        return self.driver.query("resources", timeout=30)

    def available_resources(self) -> dict:
        return self.driver.query("available", timeout=30)

    def __repr__(self) -> str:
        return f"NativeBackend({self.driver.conn.get('head', '?')!r})"


def _function_definition(fn: Any) -> tuple[int, bytes, tuple, Any]:
    """A RemoteFunction's shipped form, made once per function: (id, pickled code, resources, retry)."""
    fn_id, blob = shipped_definition(fn._backend_cache, "native", fn._fn, fn._name, "the engines")
    prepared = fn._prepared.get("native")
    if prepared is None:
        opts = fn._options
        retry = (opts.retry_exceptions if isinstance(opts.retry_exceptions, bool)
                 else pickle.dumps(tuple(opts.retry_exceptions)))
        prepared = fn._prepared["native"] = (opts.resource_tuple(), retry)
    return fn_id, blob, prepared[0], prepared[1]


def _class_definition(actor_class: Any) -> tuple[int, bytes]:
    return shipped_definition(actor_class._backend_cache, "native", actor_class._cls, actor_class._name, "the engines")


def resolve_address(address: str, config: Config) -> dict:
    """The connection record of ``address``: "auto" (the newest cluster on this machine), a head's
    ``tcp://host:port`` (its key from a connection file here or JPAR_CLUSTER_KEY) or a connection file."""
    import json
    import os
    import socket

    if os.path.isfile(address):
        with open(address) as f:
            conn = json.load(f)
        conn["local"] = conn.get("host") == socket.gethostname() and not _engines_elsewhere(conn, config)
        return conn
    clusters = find_clusters(config)
    for conn in clusters:
        conn["local"] = conn["local"] and not _engines_elsewhere(conn, config)
    if address == "auto":
        if not clusters:
            raise ClusterError("init(address='auto') found no running cluster on this machine. "
                               "Start one with `jpar start --head`, or call jpar.init() without an address.")
        return clusters[0]
    for conn in clusters:
        if address in (conn["head"], conn.get("head_ipc")):
            return conn
    key = config.cluster_key
    if not key:
        raise ClusterError(
            f"No connection file for {address} on this machine, so its key is unknown. Pass the path of the "
            "cluster's connection file (cluster-*.json) as the address, or set JPAR_CLUSTER_KEY.")
    return {"head": address, "key": key, "local": False, "cluster_id": "?"}


def _engines_elsewhere(conn: dict, config: Config) -> bool:
    """A cluster of this host with engines started on other hosts over ssh: a driver joins it over
    TCP, as from another host, so those engines can reach the socket it gets results on."""
    from ..runtime.driver.ssh_launcher import has_remote_engines

    return has_remote_engines(config, conn.get("cluster_id", ""))


def current_driver() -> Driver | None:
    """The runtime Driver under the current backend when it is native, else None: for the native
    runtime's own tools (the CLI, the JupyterLab server extension) and its tests."""
    from . import current

    b = current()
    return b.driver if isinstance(b, NativeBackend) else None


def set_current_driver(driver: Driver | None) -> None:
    """Make ``driver`` (wrapped as a NativeBackend) the current backend; None clears it."""
    from . import set_current

    set_current(None if driver is None else (driver.backend or NativeBackend(driver)))
