"""The SSH launcher: ``jpar up --ssh HOST`` starts a head here and engines on HOST over ssh, ``jpar down``
(or ``jpar.shutdown()`` after ``jpar.init(ssh=[...])``) stops them all, and failures say what to do.

The "other host" is a network namespace joined to this one by a veth pair (tests/netns.py), running
a real OpenSSH server (``/usr/sbin/sshd -D -f CONFIG``, listening on the namespace's address only)
with a host key and an authorized key made here. ssh reaches it with ``JPAR_SSH_OPTIONS`` naming
the test's key and an empty ssh config, so nothing of this machine's ssh setup is used or changed.
sshd, the heads and the engines are stopped by pid and the namespace deleted whatever happens.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

import jpar

from . import netns

pytestmark = pytest.mark.timeout(300)


def _skip_reason() -> str | None:
    reason = netns.netns_unavailable()
    if reason:
        return reason
    missing = [p for p in ("/usr/sbin/sshd", "ssh", "ssh-keygen") if shutil.which(p) is None]
    if missing:
        return f"needs OpenSSH ({', '.join(missing)} missing): `make sshd` installs openssh-server and -client"
    return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _ns_pids(ns: str) -> set[int]:
    """Live processes in namespace ``ns``."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=20).stdout
    return {int(p) for p in out.split() if _alive(int(p))}


def _ns_new_pids_exit(ns: str, before: set[int], timeout: float = 15.0) -> list[str]:
    """Wait (for their exit, by psutil) until the processes of ``ns`` that were not there ``before``
    are gone: an ssh session's sshd child closes a moment after the ssh client returned. What is
    still alive after ``timeout`` s, as "pid cmdline"."""
    procs = []
    for pid in _ns_pids(ns) - before:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    out = []
    for p in alive:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())}")
        except psutil.Error:
            pass
    return out


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A namespace running sshd on its own address: {"ns", "there", "here", "options", "key", "sshd"}."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key", "stranger_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True, timeout=30)
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    os.chmod(base / "authorized_keys", 0o600)
    with netns.veth_pair("jps", 249) as pair:
        config = base / "sshd_config"
        config.write_text(f"ListenAddress {pair['there']}\nPort 22\nHostKey {base / 'host_key'}\n"
                          f"AuthorizedKeysFile {base / 'authorized_keys'}\nPidFile none\nStrictModes no\nUsePAM no\n"
                          "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                          "PermitRootLogin prohibit-password\nLogLevel ERROR\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        with open(base / "sshd.log", "wb") as log:
            sshd = subprocess.Popen(["ip", "netns", "exec", pair["ns"], "/usr/sbin/sshd", "-D", "-e", "-f",
                                     str(config)], stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection((pair["there"], 22), timeout=1).close()
                    break
                except OSError:
                    if sshd.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"sshd did not start: {(base / 'sshd.log').read_text()[-400:]}")
                    time.sleep(0.1)
            options = (f"-F /dev/null -i {base / 'client_key'} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no "
                       "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")
            yield dict(pair, options=options, base=base, sshd=sshd.pid)
        finally:
            netns.stop(netns.tree(sshd.pid))
            sshd.wait()


@pytest.fixture
def site(host, tmp_path):
    """This host's runtime and key directories, and the remote host's directory for cluster keys."""
    return {"runtime": tmp_path / "run", "keys": tmp_path / "keys", "remote": tmp_path / "remote"}


def _env(host: dict, site: dict, options: str | None = None) -> dict:
    return netns.env(JPAR_RUNTIME_DIR=str(site["runtime"]), JPAR_KEY_DIR=str(site["keys"]),
                     JPAR_SSH_OPTIONS=options or host["options"], JPAR_SSH_REMOTE_DIR=str(site["remote"]),
                     JPAR_START_TIMEOUT_S="60")


def _records(site: dict) -> list[dict]:
    out = []
    for path in glob.glob(str(site["runtime"] / "ssh-*.json")):
        with open(path) as f:
            out.append(json.load(f))
    return out


def _live_heads(site: dict) -> list[int]:
    pids = []
    for path in glob.glob(str(site["runtime"] / "cluster-*.json")):
        with open(path) as f:
            pid = json.load(f).get("pid", 0)
        if _alive(pid):
            pids.append(pid)
    return pids


def _by_value():
    def whereami():   # defined in a function, so it travels by value: the host cannot import tests/
        return os.readlink("/proc/self/ns/net"), os.getpid(), jpar.get_runtime_context().get_node_id()

    return whereami


_whereami = _by_value()


@pytest.fixture
def cleanup():
    """Pids to stop (with their children) whatever the test did."""
    pids: list[int] = []
    yield pids
    jpar.shutdown()
    netns.stop([p for pid in pids for p in netns.tree(pid)])


def test_up_runs_tasks_in_the_other_host_and_down_leaves_nothing(host, site, monkeypatch, cleanup):
    before = _ns_pids(host["ns"])
    out = netns.jpar_cli("up", "--ssh", host["there"], "--python", sys.executable, "--engines-per-host", "2",
                         "--resources", '{"everywhere": 1}', "--resources", f'{host["there"]}={{"box": 3}}',
                         env=_env(host, site), timeout=180)
    records = _records(site)
    for r in records:
        cleanup += [r["head_pid"], *(p for h in r["hosts"] for p in h["pids"])]
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(records) == 1, records
    rec = records[0]
    engines = rec["hosts"][0]["pids"]
    assert len(engines) == 2 and set(engines) <= _ns_pids(host["ns"]), (engines, _ns_pids(host["ns"]))
    assert rec["head"].startswith(f"tcp://{host['here']}:"), rec   # bound where the host reaches it
    assert "jpar down" in out.stdout and host["there"] in out.stdout, out.stdout
    # the host got the client keypair and the server's public key, private, and never the server secret
    keydir = pathlib.Path(rec["hosts"][0]["dir"]) / "keys"
    assert sorted(os.listdir(keydir)) == ["client.key", "client.key_secret", "server.key"]
    assert oct(os.stat(keydir).st_mode & 0o777) == "0o700"
    assert all(os.stat(keydir / n).st_mode & 0o777 == 0o600 for n in os.listdir(keydir))
    assert (keydir / "client.key_secret").read_text() == (site["keys"] / "client.key_secret").read_text()

    status = netns.jpar_cli("status", env=_env(host, site))       # the CLI reaches it too (over TCP and CURVE)
    assert status.returncode == 0 and status.stdout.count(host["there"]) == 2, status.stdout + status.stderr

    monkeypatch.setenv("JPAR_RUNTIME_DIR", str(site["runtime"]))
    monkeypatch.setenv("JPAR_KEY_DIR", str(site["keys"]))
    jpar.shutdown()
    jpar.init(address="auto")              # a notebook joining the cluster `jpar up` started
    from jpar.backends.native import current_driver

    assert current_driver().endpoint.startswith(f"tcp://{host['here']}:")   # results from other hosts: not IPC
    assert {k: jpar.cluster_resources().get(k) for k in ("everywhere", "box")} == {"everywhere": 1.0, "box": 3.0}
    got = jpar.get([jpar.remote(_whereami).remote() for _ in range(8)], timeout=90)
    jpar.shutdown()
    mine = os.readlink("/proc/self/ns/net")
    assert {g[0] for g in got} != {mine} and all(g[1] in engines for g in got), (got, engines, mine)
    assert {g[2] for g in got} == {host["there"]}

    out = netns.jpar_cli("down", env=_env(host, site), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"engines stopped (pids {engines[0]}, {engines[1]};" in out.stdout, out.stdout
    assert not _alive(rec["head_pid"]) and not any(_alive(p) for p in engines)
    assert _ns_new_pids_exit(host["ns"], before) == []   # sshd only, as before
    assert not os.path.exists(rec["hosts"][0]["dir"]) and not _records(site) and not _live_heads(site)
    again = netns.jpar_cli("down", env=_env(host, site), timeout=60)
    assert again.returncode == 0 and "no cluster started by `jpar up`" in again.stdout, again.stdout + again.stderr


def _no_python_without_jpar() -> str | None:
    """A Python on this machine that cannot import jpar from a home directory, or None."""
    for py in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(py) and subprocess.run([py, "-c", "import jpar"], cwd="/", capture_output=True,
                                                 timeout=60).returncode:
            return py
    return None


@pytest.mark.parametrize("case", ["unreachable", "auth refused", "no python", "no jpar"])
def test_failures_say_what_to_do_and_leave_nothing_running(host, site, case, cleanup):
    options, python, expect = host["options"], sys.executable, ""
    if case == "unreachable":
        options, expect = options + " -p 2", "Could not reach"       # nothing listens there
    elif case == "auth refused":
        options = options.replace("client_key", "stranger_key")
        expect = "refused ssh authentication"
    elif case == "no python":
        python, expect = "/nonexistent/bin/python3", "No Python at /nonexistent/bin/python3"
    else:
        python = _no_python_without_jpar()
        if python is None:
            pytest.skip("every Python here imports jpar from anywhere")
        expect = f"jpar is not importable by {python}"
    before = _ns_pids(host["ns"])
    out = netns.jpar_cli("up", "--ssh", host["there"], "--python", python, "--engines-per-host", "1",
                         env=_env(host, site, options), timeout=180)
    for r in _records(site):
        cleanup += [r["head_pid"], *(p for h in r["hosts"] for p in h["pids"])]
    assert out.returncode == 1, out.stdout + out.stderr
    assert expect in out.stderr and "Nothing was left running" in out.stderr, out.stderr
    assert not _records(site) and not _live_heads(site)
    assert _ns_new_pids_exit(host["ns"], before) == []
    assert not os.path.exists(site["remote"]) or not os.listdir(site["remote"])


def test_init_ssh_from_a_notebook_and_shutdown_stops_everything(host, site, monkeypatch, cleanup):
    monkeypatch.setenv("JPAR_RUNTIME_DIR", str(site["runtime"]))
    monkeypatch.setenv("JPAR_KEY_DIR", str(site["keys"]))
    before = _ns_pids(host["ns"])
    jpar.shutdown()
    ctx = jpar.init(ssh=[host["there"]], num_engines=1, ssh_python=sys.executable, ssh_options=host["options"],
                    ssh_remote_dir=str(site["remote"]), resources={"*": {"shared": 1}, host["there"]: {"sshbox": 2}})
    (rec,) = _records(site)
    cleanup += [rec["head_pid"], *rec["hosts"][0]["pids"]]
    assert ctx.address.startswith(f"tcp://{host['here']}:")
    from jpar.backends.native import current_driver

    assert current_driver().endpoint.startswith(f"tcp://{host['here']}:")
    ns, pid, node = jpar.get(jpar.remote(_whereami).remote(), timeout=90)
    assert ns != os.readlink("/proc/self/ns/net") and pid in rec["hosts"][0]["pids"] and node == host["there"]
    assert {k: jpar.cluster_resources().get(k) for k in ("sshbox", "shared")} == {"sshbox": 2.0, "shared": 1.0}
    ns, pid, node = jpar.get(jpar.remote(_whereami).options(resources={"sshbox": 2}).remote(), timeout=90)
    assert node == host["there"] and pid in rec["hosts"][0]["pids"]     # the host's own resource, placed there
    jpar.shutdown()
    assert not _alive(rec["head_pid"]) and not any(_alive(p) for p in rec["hosts"][0]["pids"])
    assert _ns_new_pids_exit(host["ns"], before) == []
    assert not os.path.exists(rec["hosts"][0]["dir"]) and not _records(site)


def test_host_resources_per_host_and_for_every_host():
    from jpar.errors import ClusterError
    from jpar.runtime.driver.ssh_launcher import host_resources

    hosts = ["a", "user@b"]
    assert host_resources(hosts, None) == {"a": {}, "user@b": {}}
    assert host_resources(hosts, {"bigmem": 1}) == {"a": {"bigmem": 1.0}, "user@b": {"bigmem": 1.0}}
    assert host_resources(hosts, {"*": {"x": 1, "y": 1}, "user@b": {"y": 3, "gpu_node": 1}}) == \
        {"a": {"x": 1.0, "y": 1.0}, "user@b": {"x": 1.0, "y": 3.0, "gpu_node": 1.0}}
    with pytest.raises(ClusterError, match="'c', which is not among the hosts a, user@b"):
        host_resources(hosts, {"c": {"x": 1}})
    with pytest.raises(ClusterError, match="non-negative"):
        host_resources(hosts, {"a": {"x": -1}})
    with pytest.raises(ClusterError, match="JPAR_NUM_CPUS"):
        host_resources(hosts, {"CPU": 4})
    with pytest.raises(ClusterError, match="names to amounts"):
        host_resources(hosts, {"a": {"x": 1}, "y": 2})


def test_up_resources_option_reads_every_host_and_per_host_forms():
    import argparse

    from jpar.cli import _host_resources

    assert _host_resources('{"bigmem": 1}') == ("*", {"bigmem": 1.0})
    assert _host_resources('gpu-box={"gpu_node": 2}') == ("gpu-box", {"gpu_node": 2.0})
    assert _host_resources('user@h={"a": 0.5}') == ("user@h", {"a": 0.5})
    for bad in ('={"a": 1}', 'h={"a": -1}', "h=nope", '{"CPU": 2}'):
        with pytest.raises(argparse.ArgumentTypeError):
            _host_resources(bad)
