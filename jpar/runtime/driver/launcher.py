"""Start a head (and its local engines) as child processes, and find running clusters.

Readiness is an event: the head prints its connection record on stdout once its
sockets are bound, and the driver then asks the head to answer when N engines have
registered. Nothing here sleeps to wait for anything.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import time

from ...config import Config, runtime_dir, visible_gpus
from ...errors import ClusterError
from ..head.scheduler_state import PER_ENGINE

__all__ = ["start_head", "start_engines", "find_clusters", "node_resources", "engine_count", "prune_run_dirs", "remove_sockets"]


def engine_count(config: Config, num_engines: int | None = None) -> int:
    """How many engines a host starts: ``num_engines`` (or JPAR_NUM_ENGINES) if given, else one per
    declared CPU (``num_cpus=4`` runs 4 tasks at once, as Ray starts 4 workers), else one per core."""
    n = num_engines if num_engines is not None else config.num_engines
    if not n:
        n = math.ceil(config.num_cpus) if config.num_cpus > 0 else (os.cpu_count() or 1)
    if n < 1:
        from ...errors import ConfigError

        raise ConfigError(f"num_engines must be >= 1, got {n}.")
    return int(n)


def custom_resources(value) -> dict:
    """A host's custom resources, checked: a mapping of names to non-negative numbers, CPU and GPU
    not among them (jpar counts those). Raises ValueError saying what is wrong."""
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise ValueError(f"{value!r}: give a JSON object (a dict) of resource names to non-negative numbers, "
                         "e.g. {\"bigmem\": 1}")
    if {"CPU", "GPU"} & set(value):
        raise ValueError("CPU and GPU are counted by jpar on each host: set JPAR_NUM_CPUS / JPAR_NUM_GPUS there "
                         "instead of naming them in resources")
    return {k: float(v) for k, v in value.items()}


def node_resources(config: Config, num_engines: int, custom: dict | None = None) -> dict:
    """What this host advertises: GPUs, custom resources, and CPUs: the declared ``num_cpus``
    (a fixed count), or else one per engine, growing and shrinking with the node's engines
    (the :data:`~jpar.runtime.head.scheduler_state.PER_ENGINE` entry tells the scheduler so)."""
    gpus = visible_gpus()
    n_gpus = len(gpus) if config.num_gpus < 0 else int(config.num_gpus)
    res: dict = {"CPU": float(config.num_cpus)} if config.num_cpus > 0 else {PER_ENGINE: {"CPU": 1.0}}
    if n_gpus:
        res["GPU"] = float(n_gpus)
        res["GPU_IDS"] = gpus[:n_gpus] if len(gpus) >= n_gpus else [str(i) for i in range(n_gpus)]
    for k, v in (custom or {}).items():
        res[k] = float(v)
    return res


def start_head(config: Config, num_engines: int, *, owner: bool, resources: dict | None = None,
               node: str = "", detach: bool = False) -> tuple[dict, subprocess.Popen]:
    """Start a head with ``num_engines`` local engines; returns (connection record, process).

    Off loopback the head's keys are checked (and made when there are none) here, before anything
    starts; the record's ``key_files_created`` lists what was made (for ``jpar start`` to print)."""
    from ..wire import keys

    head_keys = keys.prepare_head(config)
    cluster_id = secrets.token_hex(5)
    rundir = os.path.join(runtime_dir(config), cluster_id)
    os.makedirs(rundir, mode=0o700)
    env = dict(os.environ)
    paths = [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    setup = {
        "cluster_id": cluster_id, "key": secrets.token_hex(32), "rundir": rundir, "num_engines": num_engines,
        "owner_pid": os.getpid() if owner else 0, "resources": node_resources(config, num_engines, resources),
        "node": node or socket.gethostname(), "env": env, "cwd": os.getcwd(),
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "security": keys.settings(config),
    }
    with open(os.path.join(rundir, "head.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jpar.runtime.head.controller"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log, start_new_session=True, env=env,
        )
    proc.stdin.write((json.dumps(setup) + "\n").encode())
    proc.stdin.close()
    ready, _, _ = select.select([proc.stdout], [], [], config.start_timeout_s)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        log = _tail(os.path.join(rundir, "head.log"))
        raise ClusterError(f"The jpar head did not start within {config.start_timeout_s} s.\n{log}"
                           "Check the log above; JPAR_LOG_LEVEL=DEBUG shows more.")
    conn = json.loads(line)
    conn["local"] = True
    conn["key_files_created"] = head_keys.created
    if detach:
        proc.stdout.close()
    return conn, proc


def start_engines(conn: dict, config: Config, n: int, node: str, wait: bool = False,
                  resources: dict | None = None) -> list[int]:
    """Start ``n`` engines on this host joining the head of ``conn`` (detached, each in a session of
    its own, so they outlive the command or ssh session that started them); returns their pids.
    Missing or exposed CURVE keys fail here, clearly, not in an engine's silent exit. ``wait``: return
    once each engine said it joined (a line on a pipe of its own, see Engine._report), or raise a
    ClusterError saying why that usually fails: the head drops a hello it cannot verify without a word
    (it answers no one without the key), so an engine can only tell that no welcome came."""
    from ..wire import keys, transport

    head = conn.get("head_ipc") if conn.get("local") and conn.get("head_ipc") else conn["head"]
    security = keys.settings(config, server_public=conn.get("curve_serverkey", ""))
    if transport.needs_curve(head) and not config.insecure:
        keys.load_identity(security["key_dir"], server_public=security["server_public"])
    setup = {"key": conn["key"], "head": head, "node": node, "resources": node_resources(config, n, resources),
             "parent_pid": 0, "rundir": conn.get("rundir", ""), "log_level": config.log_level,
             "metrics_interval_s": config.metrics_interval_s, "start_timeout_s": config.start_timeout_s,
             "security": security, "rejoin_s": config.rejoin_s, "actor_fork": config.actor_fork}
    pids, reports = [], []
    for _ in range(n):
        r = w = None
        if wait:
            r, w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-m", "jpar.runtime.engine.engine"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                pass_fds=(w,) if wait else ())
        proc.stdin.write((json.dumps(dict(setup, status_fd=w) if wait else setup) + "\n").encode())
        proc.stdin.close()
        pids.append(proc.pid)
        if wait:
            os.close(w)
            reports.append(os.fdopen(r, "rb"))
    if wait:
        _joined_or_raise(pids, reports, head, config.start_timeout_s + 15)
    return pids


def _joined_or_raise(pids: list[int], reports: list, head: str, timeout: float) -> None:
    """Read each engine's one line (see start_engines); raise if one did not join."""
    import selectors

    said: dict[int, str] = {}
    sel = selectors.DefaultSelector()
    for pid, f in zip(pids, reports):
        sel.register(f, selectors.EVENT_READ, pid)
    deadline = time.monotonic() + timeout
    try:
        while len(said) < len(pids) and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                said[key.data] = key.fileobj.readline().decode(errors="replace").strip() or "exited before joining"
                sel.unregister(key.fileobj)
    finally:
        sel.close()
        for f in reports:
            f.close()
    failed = {pid: said.get(pid, f"said nothing within {timeout:g} s") for pid in pids
              if not said.get(pid, "").startswith("joined")}
    if failed:
        lines = "\n".join(f"  engine pid {pid}: {why}" for pid, why in failed.items())
        raise ClusterError(
            f"{len(failed)} of {len(pids)} engine(s) did not join the head at {head}:\n{lines}\n"
            "The head answers nothing to a hello it cannot verify, so check, in this order: the cluster key "
            "(JPAR_CLUSTER_KEY, or the connection file: it must be the head's), this host's CURVE keys (the "
            "three files `jpar start --head` listed, in JPAR_KEY_DIR), and that this host reaches that "
            "address (a firewall, or an address private to the head's host). Engines that did not join exit "
            "by themselves.")


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def find_clusters(config: Config) -> list[dict]:
    """Connection records of clusters running on this machine, newest first; stale ones removed."""
    out = []
    for path in glob.glob(os.path.join(runtime_dir(config), "cluster-*.json")):
        try:
            with open(path) as f:
                conn = json.load(f)
        except (OSError, ValueError):
            continue
        if not _alive(conn.get("pid", 0)):   # its head crashed: its file and sockets go, its logs stay
            try:
                os.unlink(path)
            except OSError:
                pass
            rundir = conn.get("rundir") or ""
            if os.path.dirname(os.path.abspath(rundir)) == os.path.abspath(runtime_dir(config)):
                remove_sockets(rundir)
            continue
        conn["file"] = path
        conn["local"] = conn.get("host") == socket.gethostname()
        out.append(conn)
    return sorted(out, key=lambda c: c.get("started", 0), reverse=True)


RUN_DIRS_KEPT = 10        # run directories of finished clusters kept (with their logs) at most
_STARTING_S = 120.0       # a run directory this young may belong to a head still starting
_RUN_DIR_NAME = re.compile(r"[0-9a-f]{10}")   # a cluster id (start_head)


def remove_sockets(rundir: str) -> None:
    """Remove the ipc sockets in a run directory (the logs stay)."""
    import stat

    try:
        names = os.listdir(rundir)
    except OSError:
        return
    for name in names:
        path = os.path.join(rundir, name)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass


def prune_run_dirs(root: str, keep: str = "", most: int = RUN_DIRS_KEPT) -> None:
    """Bound what finished clusters leave in ``root``: the run directories of clusters no longer
    running lose their sockets, and only the newest ``most`` of them are kept (for their logs).
    ``keep`` (the caller's own run directory) and the directories of running clusters are untouched."""
    import shutil
    import time

    live = {os.path.abspath(keep)} if keep else set()
    for path in glob.glob(os.path.join(root, "cluster-*.json")):
        try:
            with open(path) as f:
                conn = json.load(f)
        except (OSError, ValueError):
            continue
        if _alive(conn.get("pid", 0)):
            live.add(os.path.abspath(conn.get("rundir") or ""))
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    dead = []
    now = time.time()
    for entry in os.scandir(root):
        path = os.path.abspath(entry.path)
        try:
            if (not entry.is_dir(follow_symlinks=False) or not _RUN_DIR_NAME.fullmatch(entry.name) or path in live
                    or now - entry.stat().st_mtime < _STARTING_S):
                continue
            dead.append((entry.stat().st_mtime, path))
        except OSError:
            continue
    dead.sort(reverse=True)
    for i, (_, path) in enumerate(dead):
        if i < most:
            remove_sockets(path)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
