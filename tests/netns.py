"""Several "hosts" on one machine, for tests: network namespaces joined to this one by veth pairs,
``jpar`` commands run on either side, and their processes stopped by pid (RECIPES.md, "Several
hosts on one machine").

:func:`veth_pair` makes a namespace and a veth pair on a private /30 (10.<second>.X.1 on this side,
.2 in the namespace) and deletes both whatever happens, so a failed test leaves no interface behind.
Processes are stopped by pid through psutil (terminate, then kill), never by name, so a test run
beside others touches only what it started.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import psutil
import pytest

import jpar
from jpar import hooks
from jpar.config import Config
from jpar.runtime.store.object_store import sweep_cluster

ROOT = pathlib.Path(jpar.__file__).parent.parent
JOIN_FILES = ("server.key", "client.key", "client.key_secret")   # what a joining host gets, never the server secret
_serial = itertools.count()


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``ip ARGS`` here, or in namespace ``ns``; raises RuntimeError with ip's message if it fails."""
    cmd = ["ip", *(["netns", "exec", ns, "ip"] if ns else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces (the reason to print when skipping), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install -y iproute2)"
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    if out.returncode:
        return f"`ip netns` is unavailable: {out.stderr.strip()}"
    return None


def env(**extra: str) -> dict:
    """This environment with no JPAR_* setting, jpar importable, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JPAR_")}
    return dict(base, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")])), **extra)


def jpar_cli(*args: str, env: dict, ns: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """``python -m jpar.cli ARGS`` here, or in namespace ``ns``."""
    cmd = [*(["ip", "netns", "exec", ns] if ns else []), sys.executable, "-m", "jpar.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants ([] if it is gone)."""
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def stop(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Terminate ``procs`` by pid, kill what is left after 15 s; the ones still alive after that."""
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    return alive


def start_head(runtime: pathlib.Path, keydir: pathlib.Path, bind: str, port: int, *extra: str) -> dict:
    """``jpar start --head --bind <bind>``: {"conn", "pid", "procs", "out", "err", "rc", "file"}."""
    out = jpar_cli("start", "--head", "--bind", bind, "--port", str(port), "-n", "1", *extra,
                   env=env(JPAR_RUNTIME_DIR=str(runtime), JPAR_KEY_DIR=str(keydir)))
    info = {"out": out.stdout, "err": out.stderr, "rc": out.returncode, "pid": 0, "procs": [], "conn": None}
    files = glob.glob(str(runtime / "cluster-*.json"))
    if files:
        info["file"] = files[0]
        with open(files[0]) as f:
            info["conn"] = json.load(f)
        info["pid"] = info["conn"]["pid"]
        info["procs"] = tree(info["pid"])
    return info


def copy_join_keys(keydir: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """The key directory of a joining host: the three files the head says to copy, 0600 in 0700."""
    os.makedirs(dest, mode=0o700)
    for name in JOIN_FILES:
        shutil.copy2(keydir / name, dest / name)
    return dest


def start_engines(conn: dict, ns: str, n: int, node: str, *extra: str, **env_extra: str) -> tuple[list, str]:
    """``jpar start --address HEAD -n N --node NODE`` in namespace ``ns``: (their processes, output)."""
    out = jpar_cli("start", "--address", conn["head"], "-n", str(n), "--node", node, *extra, ns=ns,
                   env=env(JPAR_CLUSTER_KEY=conn["key"], **env_extra))
    pids = [int(p) for p in re.findall(r"\d+", out.stdout.partition("pids ")[2].partition(")")[0])]
    return [p for pid in pids for p in tree(pid)], out.stdout + out.stderr


def _free_subnet(second: int) -> int:
    used = ip("-o", "-4", "addr").stdout
    x = next((x for x in ((os.getpid() + i) % 250 + 1 for i in range(250)) if f"10.{second}.{x}." not in used), None)
    if x is None:
        pytest.skip(f"no free 10.{second}.X.0/30 subnet for the test namespace")
    return x


@contextlib.contextmanager
def veth_pair(tag: str, second: int, unique: bool = False):
    """A namespace joined to this one by a veth pair on 10.<second>.X.0/30: yields {"ns", "here",
    "there", "here_dev", "there_dev"}; both are deleted on exit. ``unique`` adds a counter to the
    names, for several pairs made by one process. Skips the test if ``ip netns add`` is refused."""
    ns = f"{tag}{os.getpid()}" + (str(next(_serial)) if unique else "")
    here_dev, there_dev = f"{ns}a", f"{ns}b"
    x = _free_subnet(second)
    try:
        try:
            ip("netns", "add", ns)
        except RuntimeError as exc:
            pytest.skip(f"`ip netns add` is not permitted here: {exc}")
        ip("link", "add", here_dev, "type", "veth", "peer", "name", there_dev)
        ip("link", "set", there_dev, "netns", ns)
        ip("addr", "add", f"10.{second}.{x}.1/30", "dev", here_dev)
        ip("link", "set", here_dev, "up")
        ip("addr", "add", f"10.{second}.{x}.2/30", "dev", there_dev, ns=ns)
        ip("link", "set", there_dev, "up", ns=ns)
        ip("link", "set", "lo", "up", ns=ns)
        yield {"ns": ns, "here": f"10.{second}.{x}.1", "there": f"10.{second}.{x}.2",
               "here_dev": here_dev, "there_dev": there_dev}
    finally:
        ip("netns", "del", ns, check=False)          # takes the veth pair with it
        ip("link", "del", here_dev, check=False)     # in case the pair outlived the namespace


# ---------------------------------------------------------------- a head here, engines there
NEAR, FAR = "near", "far"     # node names: the head's host, the namespace


class Site:
    """A head on this side of ``pair`` (CURVE, or plaintext with ``secure=False``), engines joining it
    from the namespace, and this process's driver; :meth:`close` stops all of it by pid."""

    def __init__(self, pair: dict, base: pathlib.Path, secure: bool):
        self.pair, self.base, self.secure = pair, base, secure
        self.head: dict = {"conn": None, "pid": 0}
        self.procs: list = []
        self.far_procs: list = []   # the engines in the namespace (and what they started)
        self._saved_key_dir = os.environ.get("JPAR_KEY_DIR")

    def start_head(self) -> dict:
        extra = ["--node", NEAR] + ([] if self.secure else ["--insecure"])
        info = start_head(self.base / "run", self.base / "keys", self.pair["here"], 0, *extra)
        self.head = info
        self.procs += info["procs"]
        assert info["rc"] == 0 and info["conn"], f"jpar start --head failed:\n{info['out']}{info['err']}"
        return info["conn"]

    def join(self, n: int, *extra: str, node: str = FAR) -> list:
        """``n`` engines of ``node`` in the namespace (with the 3 key files a joining host gets);
        ``extra``: more ``jpar start`` arguments (``--resources``...). Returns their processes."""
        if self.secure:
            theirs = self.base / "far-keys"
            if not theirs.exists():
                copy_join_keys(self.base / "keys", theirs)
            procs, out = start_engines(self.head["conn"], self.pair["ns"], n, node, *extra, JPAR_KEY_DIR=str(theirs))
        else:
            procs, out = start_engines(self.head["conn"], self.pair["ns"], n, node, "--insecure", *extra)
        self.procs += procs
        self.far_procs += procs
        assert len(procs) >= n, out
        return procs

    def connect(self, engines: int, settle: bool = False) -> None:
        """This process's driver, by address and key; returns once ``engines`` engines have joined
        (with ``settle``, once they are past the first pings on their liveness connections, which
        start the head's timer for them: see jpar.runtime.head.controller_liveness)."""
        conn = self.head["conn"]
        if self.secure:
            os.environ["JPAR_KEY_DIR"] = str(self.base / "keys")
        jpar.shutdown()
        jpar.init(address=conn["head"], cluster_key=conn["key"], insecure=not self.secure)
        deadline = time.monotonic() + 60
        while len(hooks.engines()) < engines:
            assert time.monotonic() < deadline, f"only {hooks.engines()} joined in 60 s"
            time.sleep(0.1)
        if settle:
            time.sleep(2 * Config().heartbeat_s + 0.5)   # a new engine's liveness TTL runs from its first ping

    def engine_ids(self, node: str) -> list[int]:
        return [e["id"] for e in hooks.engines() if e["node"] == node]

    def close(self) -> None:
        jpar.shutdown()
        if self._saved_key_dir is None:
            os.environ.pop("JPAR_KEY_DIR", None)
        else:
            os.environ["JPAR_KEY_DIR"] = self._saved_key_dir
        procs = tree(self.head["pid"]) if self.head["pid"] else []   # engines it respawned too
        for p in self.procs:                # and what the engines started since (actor processes)
            procs += [q for q in tree(p.pid) or [p] if q not in procs]
        left = stop(procs)
        if self.head["conn"]:
            sweep_cluster(bytes.fromhex(self.head["conn"]["key"]))
        assert not left, f"processes survived being stopped: {[p.pid for p in left]}"
