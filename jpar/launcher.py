"""Start a head (and its local engines) as child processes, and find running clusters.

Readiness is an event: the head prints its connection record on stdout once its
sockets are bound, and the driver then asks the head to answer when N engines have
registered. Nothing here sleeps to wait for anything.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import select
import socket
import subprocess
import sys

from .config import Config, runtime_dir, visible_gpus
from .errors import ClusterError

__all__ = ["start_head", "find_clusters", "node_resources"]


def node_resources(config: Config, num_engines: int, custom: dict | None = None) -> dict:
    """What this host advertises: CPUs (one per engine by default), GPUs, custom resources."""
    cpus = config.num_cpus or float(num_engines)
    gpus = visible_gpus()
    n_gpus = len(gpus) if config.num_gpus < 0 else int(config.num_gpus)
    res = {"CPU": float(cpus)}
    if n_gpus:
        res["GPU"] = float(n_gpus)
        res["GPU_IDS"] = gpus[:n_gpus] if len(gpus) >= n_gpus else [str(i) for i in range(n_gpus)]
    for k, v in (custom or {}).items():
        res[k] = float(v)
    return res


def start_head(config: Config, num_engines: int, *, owner: bool, resources: dict | None = None,
               node: str = "", detach: bool = False) -> tuple[dict, subprocess.Popen]:
    """Start a head with ``num_engines`` local engines; returns (connection record, process)."""
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
    }
    with open(os.path.join(rundir, "head.log"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jpar.controller"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
    if detach:
        proc.stdout.close()
    return conn, proc


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
        if not _alive(conn.get("pid", 0)):
            try:
                os.unlink(path)
            except OSError:
                pass
            continue
        conn["file"] = path
        conn["local"] = conn.get("host") == socket.gethostname()
        out.append(conn)
    return sorted(out, key=lambda c: c.get("started", 0), reverse=True)


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
