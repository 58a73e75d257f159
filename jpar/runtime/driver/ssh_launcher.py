"""Engines on other hosts over SSH: ``jpar up --ssh HOSTS`` and ``jpar.init(ssh=[...])``, undone by
``jpar down`` and ``jpar.shutdown()``.

Why: joining a host by hand is four steps on each (copy three key files, copy the cluster key,
``jpar start --address``, and later find and stop what it started). With the OpenSSH client the
user already has (their ``~/.ssh/config``, agent and keys; ``BatchMode``, so it never prompts) one
command does all of it and records what it started, so stopping undoes exactly that::

    this host                                      each host: ssh HOST PYTHON -m jpar.runtime.driver.ssh_launcher
    start_head(bind ADDR, CURVE on) -- stdin -->   {"op": "up", head, cluster key, client keypair +
                                                    server public key, n}: writes DIR/keys (0700,
                                                    files 0600), starts n engines, detached
    record runtime_dir/ssh-ID.json <-- stdout --   {"pids": [...], "dir": DIR}
    down: the head is told to stop -- stdin -->    {"op": "down", pids, DIR}: ends those pids (jpar
                                                    engines only, then their children), removes DIR

Secrets travel only inside the ssh channel (on stdin), never on a command line, and the server's
secret key never leaves this host. The record names the hosts, the engines' pids and their
directories, so ``jpar down`` finds them from any later process on this host.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

from ...config import Config, key_dir, runtime_dir
from ...errors import ClusterError

__all__ = ["SshCluster", "up", "wait_joined", "down", "find_records", "has_remote_engines", "bind_address"]

_MODULE = "jpar.runtime.driver.ssh_launcher"
_STOP_GRACE_S = 5.0     # an engine told to stop by its head gets this long before it is terminated


@dataclasses.dataclass
class SshCluster:
    """What ``up`` started: the head (here) and, per host, the engines' pids and key directory."""

    conn: dict
    head_proc: subprocess.Popen | None
    record: dict

    @property
    def engines(self) -> int:
        return sum(len(h["pids"]) for h in self.record["hosts"])


# ------------------------------------------------------------------------------------ this side
def _ssh(config: Config, host: str, *remote: str) -> list[str]:
    if shutil.which("ssh") is None:
        raise ClusterError("No `ssh` command on this host: install the OpenSSH client (Debian/Ubuntu: "
                           "apt-get install openssh-client) to start engines on other hosts.")
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(config.ssh_connect_timeout_s))}",
            *shlex.split(config.ssh_options), host, *remote]


def _diagnose(host: str, python: str, rc: int, err: str) -> str:
    """What went wrong on ``host`` and what to do, from ssh's exit code and stderr."""
    tail = "\n".join(err.strip().splitlines()[-6:])
    if rc == 255:
        if "Host key verification failed" in err:
            return (f"ssh could not verify the host key of {host}:\n{tail}\nConnect once by hand (`ssh {host}`) "
                    "to check and record its key, then try again.")
        if "Permission denied" in err or "Too many authentication failures" in err:
            return (f"{host} refused ssh authentication:\n{tail}\njpar runs ssh with BatchMode=yes, so it cannot "
                    f"type a password: set up key-based login (ssh-copy-id {host}), load the key into ssh-agent, or "
                    "name it with JPAR_SSH_OPTIONS='-i KEY' (or in ~/.ssh/config).")
        return (f"Could not reach {host} over ssh:\n{tail}\nCheck the host name, that sshd runs there and that this "
                "host can reach it (`ssh -v HOST true` shows where it stops); ssh options go in JPAR_SSH_OPTIONS.")
    if "No module named jpar" in err or "No module named 'jpar" in err:
        from ... import __version__

        return (f"jpar is not importable by {python} on {host}:\n{tail}\nInstall it there (pip install "
                f"jpar=={__version__}, the version here), or name a Python that has it with --python PATH "
                "(jpar.init(ssh_python=...), JPAR_SSH_PYTHON).")
    if rc == 127 or rc == 126 or "No such file or directory" in err or "not found" in err:
        return (f"No Python at {python} on {host} (exit {rc}):\n{tail}\nInstall Python and jpar there, or name "
                "the Python to use with --python PATH (jpar.init(ssh_python=...), JPAR_SSH_PYTHON).")
    return f"Starting jpar on {host} with {python} failed (exit {rc}):\n{tail}"


def _remote(config: Config, host: str, python: str, request: dict, timeout: float) -> dict:
    """Run this module's remote side on ``host`` with ``request`` on stdin; its JSON answer."""
    cmd = _ssh(config, host, shlex.join([python, "-m", _MODULE]))
    try:
        out = subprocess.run(cmd, input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"ssh {host} did not finish within {timeout:.0f} s. Check that the host is up and not "
                           "overloaded; JPAR_SSH_CONNECT_TIMEOUT_S sets how long to wait for it.") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise ClusterError(_diagnose(host, python, out.returncode, out.stderr or out.stdout))
    return json.loads(lines[-1])


def _node_name(host: str) -> str:
    """The node name engines on ``host`` report: the host as the user named it, without user@."""
    return host.rpartition("@")[2]


def bind_address(hosts: list[str], config: Config) -> str:
    """Where the head listens so the hosts can reach it: ``bind_host`` if set off loopback, else the
    local address the kernel routes to the first host from (its real name from ``ssh -G``)."""
    from ..wire import transport

    if not transport.is_loopback_endpoint(f"tcp://{config.bind_host}:0"):
        return config.bind_host
    name = _node_name(hosts[0])
    try:
        g = subprocess.run(_ssh(config, "-G", hosts[0]), capture_output=True, text=True, timeout=20)
        name = next((ln.split(None, 1)[1] for ln in g.stdout.splitlines() if ln.startswith("hostname ")), name)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        addr = socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0]
    except (OSError, IndexError):
        raise ClusterError(f"Cannot resolve {name} (host {hosts[0]}) to choose the address the head listens on. "
                           "Fix the name, or pass --bind ADDR (an address of this host the hosts can reach).") from None
    if transport.is_loopback_endpoint(f"tcp://{addr}:0"):
        return addr   # ssh to this very host: loopback reaches it
    source = transport.callback_host(f"tcp://{addr}:22")
    if transport.is_loopback_endpoint(f"tcp://{source}:0"):
        raise ClusterError(f"This host has no route to {hosts[0]} ({addr}), so no address for the head to listen "
                           "on. Pass --bind ADDR (an address of this host the hosts can reach).")
    return source


def _record_path(config: Config, cluster_id: str) -> str:
    return os.path.join(runtime_dir(config), f"ssh-{cluster_id}.json")


def _save(config: Config, record: dict) -> None:
    path = _record_path(config, record["cluster_id"])
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def find_records(config: Config) -> list[dict]:
    """The records of clusters started over ssh from this host, newest first."""
    out = []
    root = runtime_dir(config)
    for name in os.listdir(root):
        if name.startswith("ssh-") and name.endswith(".json"):
            try:
                with open(os.path.join(root, name)) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
    return sorted(out, key=lambda r: r.get("started", 0), reverse=True)


def has_remote_engines(config: Config, cluster_id: str) -> bool:
    """Whether the cluster ``cluster_id`` has engines on other hosts started over ssh from here (a
    driver must then listen on TCP, not IPC, for their results)."""
    return bool(cluster_id) and os.path.exists(_record_path(config, cluster_id))


def host_resources(hosts: list[str], resources: dict | None) -> dict[str, dict]:
    """Each host's custom resources from ``resources``: names to amounts (every host advertises them),
    or host names (``"*"``: every host) to such dicts; a per-host entry adds to (and overrides) the
    ``"*"`` one. Raises ClusterError for a host that is not among ``hosts`` or a bad amount."""
    resources = resources or {}
    if resources and all(isinstance(v, dict) for v in resources.values()):
        per = dict(resources)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in resources.values()):
        per = {"*": dict(resources)} if resources else {}
    else:
        raise ClusterError(f"resources={resources!r}: give names to amounts for every host, e.g. {{'bigmem': 1}}, "
                           "or hosts to such dicts, e.g. {'gpu-box': {'gpu_node': 1}} ('*': every host).")
    unknown = sorted(set(per) - set(hosts) - {"*"})
    if unknown:
        raise ClusterError(f"resources name {', '.join(map(repr, unknown))}, which is not among the hosts "
                           f"{', '.join(hosts)}: name a host exactly as given to --ssh (or '*' for every host).")
    from .launcher import custom_resources

    out = {}
    for h in hosts:
        try:
            out[h] = custom_resources({**per.get("*", {}), **per.get(h, {})})
        except ValueError as exc:
            raise ClusterError(f"resources for {h}: {exc}.") from None
    return out


def up(hosts: list[str], config: Config, *, engines_per_host: int | None = None, owner: bool = False,
       resources: dict | None = None) -> SshCluster:
    """Start a head here (CURVE on off loopback, keys made if missing) and engines on every host over
    ssh, each host advertising its custom ``resources`` (see :func:`host_resources`); on any failure,
    stop what was started and raise a ClusterError saying what to do."""
    from .launcher import start_head
    from ..wire import keys

    hosts = [h.strip() for h in hosts if h and h.strip()]
    if not hosts:
        raise ClusterError("No hosts to start engines on: name them, e.g. `jpar up --ssh host1,host2`.")
    if engines_per_host is not None and engines_per_host < 1:
        raise ClusterError(f"engines per host must be >= 1, got {engines_per_host}.")
    per_host = host_resources(hosts, resources)
    config = config.replace(bind_host=bind_address(hosts, config))
    python = config.ssh_python or sys.executable
    conn, proc = start_head(config, 0, owner=owner, detach=not owner)
    cid = conn["cluster_id"]
    record = {"cluster_id": cid, "head": conn["head"], "head_pid": conn.get("pid", proc.pid), "started": time.time(),
              "key_dir": key_dir(config), "runtime_dir": runtime_dir(config), "ssh_options": config.ssh_options,
              "hosts": []}
    _save(config, record)
    request = {"op": "up", "dir": f"{config.ssh_remote_dir.rstrip('/')}/{cid}", "n": engines_per_host,
               "conn": {"head": conn["head"], "key": conn["key"], "cluster_id": cid,
                        "curve_serverkey": conn.get("curve_serverkey", "")},
               "keys": keys.join_files(key_dir(config)) if conn.get("curve_serverkey") else {},
               "insecure": config.insecure, "log_level": config.log_level}
    timeout = config.ssh_connect_timeout_s + config.start_timeout_s
    errors = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            futures = {pool.submit(_remote, config, h, python,
                                   dict(request, node=_node_name(h), resources=per_host[h]), timeout): h
                       for h in hosts}
            for fut in concurrent.futures.as_completed(futures):
                host = futures[fut]
                try:
                    got = fut.result()
                except ClusterError as exc:
                    errors.append(str(exc))
                    continue
                except Exception as exc:   # e.g. an answer that is not jpar's: the host's shell printed something
                    errors.append(f"Starting engines on {host} failed: {exc!r}")
                    continue
                record["hosts"].append({"host": host, "python": python, "pids": got["pids"], "dir": got["dir"],
                                        "hostname": got.get("hostname", "")})
                _save(config, record)
    except BaseException:
        _undo(record, config, proc)
        raise
    if errors:
        raise ClusterError("\n\n".join(errors) + "\n\n" + _undo(record, config, proc))
    return SshCluster(conn, proc, record)


def _undo(record: dict, config: Config, head_proc: subprocess.Popen | None) -> str:
    """Stop what a failed start started; says how that went (it never raises over the first error)."""
    try:
        down(record, config, head_proc=head_proc)
        return "Nothing was left running: the head and the engines already started were stopped."
    except ClusterError as exc:
        return f"Stopping what was started failed too:\n{exc}"


def wait_joined(cluster: SshCluster, driver, config: Config) -> None:
    """Wait (an event: the head answers) until every engine started over ssh has joined; if they do not
    within ``start_timeout_s``, stop everything and say why that usually happens."""
    from ...errors import GetTimeoutError

    try:
        driver.query("wait_engines", cluster.engines, timeout=config.start_timeout_s)
    except BaseException as exc:
        driver.close(stop_cluster=True)
        undone = _undo(cluster.record, config, cluster.head_proc)
        if not isinstance(exc, GetTimeoutError):
            raise
        hosts = ", ".join(h["host"] for h in cluster.record["hosts"])
        raise ClusterError(
            f"The engines started on {hosts} did not join the head at {cluster.conn['head']} within "
            f"{config.start_timeout_s} s. Check that those hosts can reach that address (a firewall, or an address "
            "private to this host: pass --bind ADDR / jpar.init(bind_host=ADDR)), and that their jpar is the same "
            f"version as here.\n{undone}") from None


def _stop_head(record: dict, config: Config, head_proc: subprocess.Popen | None) -> None:
    import psutil

    from .driver import Driver
    from .launcher import find_clusters

    conn = next((c for c in find_clusters(config) if c.get("cluster_id") == record["cluster_id"]), None)
    if conn is not None:
        try:
            Driver(dict(conn, local=True), config.replace(start_timeout_s=min(config.start_timeout_s, 10.0)),
                   kind="cli").close(stop_cluster=True)
        except Exception:   # an unanswering head is ended by pid below
            pass
    try:
        head = psutil.Process(record["head_pid"])
        if "jpar.runtime.head" in " ".join(head.cmdline()):
            _, alive = psutil.wait_procs([head], timeout=10)
            for p in alive:
                p.kill()
    except psutil.Error:
        pass
    if head_proc is not None:
        head_proc.wait()
        for f in (head_proc.stdin, head_proc.stdout):
            if f is not None:
                f.close()


def down(record: dict, config: Config, *, head_proc: subprocess.Popen | None = None, stop_head: bool = True) -> list[str]:
    """Stop the head (unless ``stop_head`` is false: a driver already did) and, over ssh, every host's
    engines by the pids in ``record``, and remove their key directories; then the record. Returns one
    line per host. A host that cannot be reached stays in the record (run ``jpar down`` again)."""
    config = config.replace(key_dir=record.get("key_dir", config.key_dir),
                            runtime_dir=record.get("runtime_dir", config.runtime_dir),
                            ssh_options=record.get("ssh_options", config.ssh_options))
    if stop_head:
        _stop_head(record, config, head_proc)
    lines, failed = [], []
    for h in record["hosts"]:
        req = {"op": "down", "pids": h["pids"], "dir": h["dir"], "cluster_id": record["cluster_id"]}
        try:
            got = _remote(config, h["host"], h["python"], req, config.ssh_connect_timeout_s + 30)
            lines.append(f"{h['host']}: engines stopped (pids {', '.join(map(str, h['pids']))}; {got['stopped']} "
                         f"still running ended by pid), removed {h['dir']}")
        except ClusterError as exc:
            failed.append(h)
            lines.append(f"{h['host']}: NOT stopped ({exc})")
    if failed:
        _save(config, dict(record, hosts=failed))
        raise ClusterError("\n".join(lines) + "\nRun `jpar down` again once the hosts above can be reached.")
    try:
        os.unlink(_record_path(config, record["cluster_id"]))
    except OSError:
        pass
    return lines


# ------------------------------------------------------------------------------------ the host's side
def _remote_up(req: dict) -> dict:
    from .launcher import engine_count, start_engines
    from ..wire import keys

    directory = os.path.abspath(os.path.expanduser(req["dir"]))
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    keydir = os.path.join(directory, "keys")
    try:
        if req["keys"]:
            keys.install_join_files(keydir, req["keys"])
        config = Config.from_env(key_dir=keydir, insecure=bool(req["insecure"]), log_level=req["log_level"])
        n = engine_count(config, req["n"])
        pids = start_engines(dict(req["conn"], local=False), config, n, req["node"], resources=req.get("resources"))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)   # a failed start leaves no key behind
        raise
    return {"pids": pids, "dir": directory, "hostname": socket.gethostname()}


def _remote_down(req: dict) -> dict:
    import psutil

    procs = []
    for pid in req["pids"]:
        try:
            p = psutil.Process(pid)
            if "jpar.runtime.engine" in " ".join(p.cmdline()):   # a reused pid is someone else's: left alone
                procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=_STOP_GRACE_S)   # told to stop by their head: most leave
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    directory = req["dir"]
    if os.path.basename(directory) == req["cluster_id"]:   # only the directory up() made for this cluster
        shutil.rmtree(directory, ignore_errors=True)
    return {"stopped": len(procs)}


def _main() -> int:
    req = json.loads(sys.stdin.readline())
    got = _remote_up(req) if req["op"] == "up" else _remote_down(req)
    print(json.dumps(got), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
