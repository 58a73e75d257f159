"""The ``jpar`` command: start a head or engines, show a cluster's status, stop it.

::

    jpar start --head [--num-engines N] [--port P]     a head (and N local engines), detached
    jpar start --address tcp://HOST:PORT [-n N]        N engines joining that head
    jpar status [--address A]                          engines, resources, tasks
    jpar add-engines [--address A] [-n N]              N more engines on the head's host, each bringing a CPU
    jpar remove-engines [--address A] [-n N | --engine ID ...] [--no-wait]
                                                       drain engines and stop them (not replaced)
    jpar stop [--address A | --all]                    stop a cluster and all its processes
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys

from .config import Config
from .errors import ClusterError, JparError
from .runtime.driver.launcher import engine_count, find_clusters, node_resources, start_head

__all__ = ["main"]


def _connect(address: str | None, config: Config):
    from .backends.native import resolve_address
    from .runtime.driver.driver import Driver

    conn = resolve_address(address or "auto", config)
    return Driver(conn, config.replace(start_timeout_s=min(config.start_timeout_s, 10.0)), kind="cli")


def _backend_of(driver):
    """The hooks (add/remove engines) take a backend: this CLI connection as one."""
    from .backends.native import NativeBackend

    return NativeBackend(driver)


def cmd_start(args, config: Config) -> int:
    if args.head:
        config = config.replace(bind_host=args.bind or config.bind_host, head_port=args.port or config.head_port)
        conn, proc = start_head(config, engine_count(config, args.num_engines), owner=False, detach=True,
                                node=args.node or "")
        path = next((c["file"] for c in find_clusters(config) if c["cluster_id"] == conn["cluster_id"]), "")
        bound = conn.get("bound", conn["head"])   # the head advertises a concrete address for a wildcard bind
        listening = f" (listening on {bound})" if bound != conn["head"] else ""
        print(f"jpar head started (pid {proc.pid}) at {conn['head']}{listening}")
        print(f"connection file: {path}")
        print(f"connect a notebook with: jpar.init(address={conn['head']!r})")
        print(f"add engines with: jpar start --address {conn['head']}")
        return 0
    if not args.address:
        print("jpar start needs --head or --address tcp://HOST:PORT", file=sys.stderr)
        return 2
    from .backends.native import resolve_address

    conn = resolve_address(args.connection_file or args.address, config)
    n = engine_count(config, args.num_engines)
    head = conn.get("head_ipc") if conn.get("local") and conn.get("head_ipc") else conn["head"]
    setup = {"key": conn["key"], "head": head, "node": args.node or socket.gethostname(),
             "resources": node_resources(config, n), "parent_pid": 0, "rundir": conn.get("rundir", ""),
             "log_level": config.log_level, "metrics_interval_s": config.metrics_interval_s,
             "start_timeout_s": config.start_timeout_s}
    pids = []
    for _ in range(n):
        proc = subprocess.Popen([sys.executable, "-m", "jpar.runtime.engine.engine"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        proc.stdin.write((json.dumps(setup) + "\n").encode())
        proc.stdin.close()
        pids.append(proc.pid)
    print(f"started {n} engine(s) (pids {', '.join(map(str, pids))}) joining {conn['head']} as node {setup['node']}")
    return 0


def cmd_status(args, config: Config) -> int:
    d = _connect(args.address, config)
    try:
        st = d.query("status", timeout=10)
    finally:
        d.close()
    if args.json:
        print(json.dumps(st, indent=1, default=str))
        return 0
    print(f"cluster {st['cluster_id']} at {st['head']} (head pid {st['pid']}, up {st['uptime_s']:.0f} s)")
    print("resources: " + ", ".join(f"{k} {st['available'].get(k, 0):g}/{v:g} free" for k, v in st["resources"].items()))
    counts = {k: v for k, v in st["scheduler"]["tasks"].items() if v}
    print("tasks: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none yet"))
    print(f"{'engine':>6} {'node':<16} {'pid':>7} {'cpu%':>6} {'rss MiB':>8} {'queued':>6}")
    for e in sorted(st["engines"], key=lambda e: e["id"]):
        leaving = "  leaving" if e.get("draining") else ""
        print(f"{e['id']:>6} {e['node'][:16]:<16} {e['pid']:>7} {e['cpu']:>6.0f} {e['rss'] / 2**20:>8.0f} {e['queued']:>6}"
              f"{leaving}")
    return 0


def cmd_add_engines(args, config: Config) -> int:
    from .hooks import add_engines

    d = _connect(args.address, config)
    try:
        try:
            change = add_engines(args.num_engines, driver=_backend_of(d))
        except (ValueError, LookupError, JparError) as exc:
            print(f"jpar add-engines: {exc}", file=sys.stderr)
            return 1
        print(f"{change} to cluster at {d.conn['head']} (pids {', '.join(map(str, change.pids))})")
    finally:
        d.close()
    return 0


def cmd_remove_engines(args, config: Config) -> int:
    import dataclasses

    from .errors import GetTimeoutError
    from .hooks import remove_engines

    d = _connect(args.address, config)
    try:
        try:
            change = remove_engines(args.num_engines, args.engine, wait=False, driver=_backend_of(d))
        except (ValueError, LookupError) as exc:
            print(f"jpar remove-engines: {exc}", file=sys.stderr)
            return 1
        removed = list(change.engine_ids)
        which = f"engine{'s' if len(removed) != 1 else ''} {', '.join(map(str, removed))}"
        print(f"{change} from cluster at {d.conn['head']}: each stops once its running task is done",
              flush=True)
        if not args.no_wait:
            try:
                d.query("engines_gone", removed, timeout=args.timeout)
            except GetTimeoutError:
                print(f"jpar remove-engines: {which} still running tasks after {args.timeout} s; they leave once "
                      "done (`jpar status` shows them until then).", file=sys.stderr)
                return 1
            print(dataclasses.replace(change, action="removed"))
    finally:
        d.close()
    return 0


def cmd_stop(args, config: Config) -> int:
    targets = [c["head"] for c in find_clusters(config)] if args.all else [args.address or "auto"]
    if args.all and not targets:
        print("no running jpar cluster found")
        return 0
    for address in targets:
        d = _connect(address, config)
        head_pid = d.conn.get("pid")
        d.close(stop_cluster=True)
        print(f"stopped cluster at {d.conn['head']} (head pid {head_pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jpar", description="Run and inspect jpar clusters.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a head, or engines joining one")
    p.add_argument("--head", action="store_true", help="start a head (with local engines)")
    p.add_argument("--address", help="tcp://HOST:PORT of the head to join")
    p.add_argument("--connection-file", help="the head's connection file (holds the cluster key)")
    p.add_argument("-n", "--num-engines", type=int, help="engines to start (default: one per core)")
    p.add_argument("--port", type=int, help="head TCP port (default: a free one)")
    p.add_argument("--bind", help="interface to bind (default 127.0.0.1); 0.0.0.0 or :: binds all, "
                   "and the head then advertises this host's main address")
    p.add_argument("--node", help="node name the engines report (default: the host name)")
    p = sub.add_parser("status", help="show engines, resources and tasks")
    p.add_argument("--address", help="head address or connection file (default: the newest local cluster)")
    p.add_argument("--json", action="store_true", help="print the raw status as JSON")
    p = sub.add_parser("add-engines", help="start engines on the head's host; each brings one CPU")
    p.add_argument("--address", help="head address or connection file (default: the newest local cluster)")
    p.add_argument("-n", "--num-engines", type=int, default=1, help="how many (default 1)")
    p = sub.add_parser("remove-engines", help="remove engines: each finishes its running task, then stops")
    p.add_argument("--address", help="head address or connection file (default: the newest local cluster)")
    p.add_argument("-n", "--num-engines", type=int, default=1, help="how many (default 1; idle ones first)")
    p.add_argument("--engine", type=int, action="append", metavar="ID", help="remove this engine (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="return at once; the engines leave when done")
    p.add_argument("--timeout", type=float, help="seconds to wait for them to leave (default: no limit)")
    p = sub.add_parser("stop", help="stop a cluster and its processes")
    p.add_argument("--address", help="head address or connection file (default: the newest local cluster)")
    p.add_argument("--all", action="store_true", help="stop every cluster on this machine")
    args = parser.parse_args(argv)
    config = Config.from_env()
    try:
        return {"start": cmd_start, "status": cmd_status, "stop": cmd_stop,
                "add-engines": cmd_add_engines, "remove-engines": cmd_remove_engines}[args.command](args, config)
    except (JparError, ClusterError) as exc:
        print(f"jpar {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
