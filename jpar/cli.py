"""The ``jpar`` command: start a head or engines, show a cluster's status, stop it.

::

    jpar start --head [--num-engines N] [--port P] [--bind ADDR] [--insecure]
                                                       a head (and N local engines), detached; off
                                                       loopback its sockets use CurveZMQ (keys made
                                                       if missing) unless --insecure
    jpar start --address tcp://HOST:PORT [-n N] [--resources JSON]
                                                       N engines joining that head (with this host's
                                                       client keys when it is on another host); the
                                                       host advertises JSON's resources too
    jpar keys [--dir DIR] [--force]                    make the cluster's CurveZMQ keys (0600, in 0700)
    jpar status [--address A]                          engines, resources, tasks
    jpar add-engines [--address A] [-n N]              N more engines on the head's host, each bringing a CPU
    jpar remove-engines [--address A] [-n N | --engine ID ...] [--no-wait]
                                                       drain engines and stop them (not replaced)
    jpar stop [--address A | --all]                    stop a cluster and all its processes
    jpar up --ssh HOST[,HOST...] [--python PATH] [--engines-per-host N] [--bind ADDR]
                                                       a head here and engines on each host over ssh
                                                       (keys copied there: never the server secret)
    jpar down [--cluster ID | --all]                   stop what `jpar up` started, on every host
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys

from .config import Config, key_dir
from .errors import ClusterError, JparError
from .runtime.driver.launcher import custom_resources, engine_count, find_clusters, start_engines, start_head

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


def _resources(text: str) -> dict:
    """``--resources``: a JSON object of names to non-negative amounts."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}); write e.g. '{{\"bigmem\": 1}}'") from None
    try:
        return custom_resources(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _host_resources(text: str) -> tuple[str, dict]:
    """``jpar up --resources``: ``JSON`` (every host, "*") or ``HOST=JSON`` (that host)."""
    host, sep, rest = text.partition("=")
    if not sep or text.lstrip().startswith("{"):
        return "*", _resources(text)
    if not host.strip():
        raise argparse.ArgumentTypeError("name the host before '=', e.g. 'gpu-box={\"gpu_node\": 1}'")
    return host.strip(), _resources(rest)


def cmd_start(args, config: Config) -> int:
    if args.head:
        config = config.replace(bind_host=args.bind or config.bind_host, head_port=args.port or config.head_port)
        conn, proc = start_head(config, engine_count(config, args.num_engines), owner=False, detach=True,
                                node=args.node or "", resources=args.resources)
        path = next((c["file"] for c in find_clusters(config) if c["cluster_id"] == conn["cluster_id"]), "")
        bound = conn.get("bound", conn["head"])   # the head advertises a concrete address for a wildcard bind
        listening = f" (listening on {bound})" if bound != conn["head"] else ""
        print(f"jpar head started (pid {proc.pid}) at {conn['head']}{listening}")
        print(f"connection file: {path}")
        print(f"connect a notebook with: jpar.init(address={conn['head']!r})")
        print(f"add engines with: jpar start --address {conn['head']}")
        if conn.get("curve_serverkey"):
            from .runtime.wire import keys

            for f in conn.get("key_files_created", []):
                print(f"created key file {f}")
            print(keys.join_instructions(key_dir(config), conn["head"]))
        return 0
    if not args.address:
        print("jpar start needs --head or --address tcp://HOST:PORT", file=sys.stderr)
        return 2
    from .backends.native import resolve_address

    conn = resolve_address(args.connection_file or args.address, config)
    n = engine_count(config, args.num_engines)
    node = args.node or socket.gethostname()
    pids = start_engines(conn, config, n, node, wait=True, resources=args.resources)   # a ClusterError says why one did not join
    print(f"started {n} engine(s) (pids {', '.join(map(str, pids))}) that joined {conn['head']} as node {node}")
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


def cmd_up(args, config: Config) -> int:
    from .runtime.driver import ssh_launcher
    from .runtime.driver.driver import Driver

    config = config.replace(bind_host=args.bind or config.bind_host, ssh_python=args.python or config.ssh_python)
    resources: dict = {}
    for host, amounts in args.resources:
        resources.setdefault(host, {}).update(amounts)
    cluster = ssh_launcher.up(args.ssh.split(","), config, engines_per_host=args.engines_per_host,
                              resources=resources or None)
    conn = cluster.conn
    try:
        d = Driver(conn, config.replace(start_timeout_s=min(config.start_timeout_s, 10.0)), kind="cli")
    except BaseException:
        ssh_launcher.down(cluster.record, config)
        raise
    ssh_launcher.wait_joined(cluster, d, config)
    d.close()
    print(f"jpar head started (pid {conn['pid']}) at {conn['head']}")
    for f in conn.get("key_files_created", []):
        print(f"created key file {f}")
    for h in cluster.record["hosts"]:
        print(f"{h['host']}: {len(h['pids'])} engine(s) (pids {', '.join(map(str, h['pids']))}), keys in {h['dir']}")
    print(f"connect a notebook with: jpar.init(address={conn['head']!r})")
    print(f"stop the engines on every host and the head with: jpar down (this cluster: --cluster {conn['cluster_id']})")
    return 0


def cmd_down(args, config: Config) -> int:
    from .runtime.driver import ssh_launcher

    records = ssh_launcher.find_records(config)
    if args.cluster:
        records = [r for r in records if r["cluster_id"] == args.cluster]
    elif not args.all:
        records = records[:1]
    if not records:
        print("no cluster started by `jpar up` found" + (f" with id {args.cluster}" if args.cluster else ""))
        return 0
    for r in records:
        for line in ssh_launcher.down(r, config):
            print(line)
        print(f"stopped cluster {r['cluster_id']} at {r['head']} (head pid {r['head_pid']})")
    return 0


def cmd_keys(args, config: Config) -> int:
    from .runtime.wire import keys

    directory = key_dir(config)
    written = keys.create_keys(directory, force=args.force)
    keys.load_identity(directory, role=keys.SERVER)   # what a head will load: refused now if not private
    for f in written:
        print(f"wrote {f}")
    if not written:
        print(f"the keys in {directory} are already there (--force makes new ones)")
    print(keys.join_instructions(directory, "tcp://HEAD:PORT"))
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
                   "and the head then advertises this host's main address. Off loopback every connection "
                   "uses CurveZMQ keys (see `jpar keys`) unless --insecure")
    p.add_argument("--node", help="node name the engines report (default: the host name)")
    p.add_argument("--resources", type=_resources, default=None, metavar="JSON",
                   help="custom resources this host advertises, e.g. '{\"bigmem\": 1}': tasks and actors asking for "
                   "them (.options(resources=...)) run here")
    p.add_argument("--key-dir", help="directory of the CurveZMQ keys used off loopback (default "
                   "JPAR_KEY_DIR, else ~/.jpar/keys); a head off loopback makes them there if missing")
    p.add_argument("--insecure", action="store_true", help="off loopback, run in plaintext without CurveZMQ "
                   "(messages stay HMAC-signed): only on a network you trust; logs a warning")
    p = sub.add_parser("up", help="start a head here and engines on other hosts over ssh",
                       description="Start a head on this host (listening where the hosts can reach it; CurveZMQ on, "
                       "keys made if missing) and engines on every host over ssh (OpenSSH, BatchMode, your ssh "
                       "config and keys; extra ssh options in JPAR_SSH_OPTIONS, e.g. '-i KEY'). Each host gets the "
                       "client keypair and the server's public key (0600, in a 0700 directory under "
                       "JPAR_SSH_REMOTE_DIR), never the server's secret key. `jpar down` undoes it all.")
    p.add_argument("--ssh", required=True, metavar="HOST[,HOST...]", help="hosts to start engines on "
                   "(ssh destinations: host, user@host, or an alias of ~/.ssh/config)")
    p.add_argument("--python", help="the hosts' Python, which must import jpar (default JPAR_SSH_PYTHON, else the "
                   "same path as this Python)")
    p.add_argument("--engines-per-host", type=int, metavar="N", help="engines on each host (default: one per core "
                   "of that host)")
    p.add_argument("--bind", help="address of this host the head listens on (default: the one that routes to the "
                   "first host)")
    p.add_argument("--resources", type=_host_resources, action="append", default=[], metavar="[HOST=]JSON",
                   help="custom resources the hosts advertise: '{\"bigmem\": 1}' for every host, "
                   "'gpu-box={\"gpu_node\": 1}' for one (repeatable; a host's own entry adds to the common one)")
    p.add_argument("--key-dir", help="directory of the cluster's CurveZMQ keys on this host (default JPAR_KEY_DIR, "
                   "else ~/.jpar/keys); made if missing")
    p = sub.add_parser("down", help="stop a cluster started by `jpar up`: its head and the engines on every host")
    p.add_argument("--cluster", metavar="ID", help="which cluster (default: the newest started by `jpar up`)")
    p.add_argument("--all", action="store_true", help="every cluster started by `jpar up` from this host")
    p = sub.add_parser("keys", help="make the cluster's CurveZMQ keys (server and client keypairs)",
                       description="Write server.key, server.key_secret, client.key and client.key_secret "
                       "(mode 0600, in a 0700 directory) unless they exist. Copy server.key, client.key and "
                       "client.key_secret to every host that joins; the server secret stays on the head's host.")
    p.add_argument("--dir", help="key directory (default JPAR_KEY_DIR, else ~/.jpar/keys)")
    p.add_argument("--force", action="store_true", help="replace existing keys (joined hosts need the new files)")
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
    logging.basicConfig(level=logging.WARNING, format="jpar %(levelname)s: %(message)s")
    try:
        config = Config.from_env(key_dir=getattr(args, "key_dir", None) or getattr(args, "dir", None),
                                 insecure=True if getattr(args, "insecure", False) else None)
        return {"start": cmd_start, "status": cmd_status, "stop": cmd_stop, "keys": cmd_keys,
                "add-engines": cmd_add_engines, "remove-engines": cmd_remove_engines, "up": cmd_up,
                "down": cmd_down}[args.command](args, config)
    except (JparError, ClusterError) as exc:
        print(f"jpar {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
