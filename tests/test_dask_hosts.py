"""The dask backend on a Dask cluster of two hosts: a scheduler and a worker here, a worker on another
"host", and this process's driver connecting by address.

The other host is a network namespace joined by a veth pair (tests/netns.py), with its own host name
and its own /dev/shm (``unshare --uts --mount``), so nothing can pass through shared memory or be
taken for local by name: what jpar does across hosts on Dask has to go through Dask. The tests
check where tasks run (by resources), that values made on one host are read on the other (task
results and ``put`` values, 8 MB each), that output printed on the far host reaches this driver,
that an actor there answers, and that the cluster view and the store view list both hosts. Every
process is stopped by pid and the namespace deleted, whatever a test did.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import jpar
from jpar import hooks

from . import netns

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(180)

_SKIP = netns.netns_unavailable()
if _SKIP:
    pytest.skip(_SKIP, allow_module_level=True)

FAR_HOST = "jpar-far-host"


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _worker_cmd(scheduler: str, host: str, resources: str) -> list:
    return [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--host", host, "--nworkers", "1",
            "--nthreads", "1", "--no-dashboard", "--resources", resources, "--death-timeout", "60"]


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """A scheduler and a worker ({"near": 1}) on this side of the veth, a worker ({"far": 1}) in the
    namespace under its own host name and /dev/shm; yields the scheduler's address."""
    log_dir = tmp_path_factory.mktemp("dask-hosts")
    shm_before = set(os.listdir("/dev/shm"))
    procs: list = []
    with netns.veth_pair("jpd", 251, unique=True) as pair:
        here, there = pair["here"], pair["there"]
        port = _free_port(here)
        address = f"tcp://{here}:{port}"
        env = netns.env()
        try:
            def start(cmd, name):
                out = open(log_dir / f"{name}.log", "w")
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
                out.close()

            start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", here, "--port", str(port),
                   "--no-dashboard"], "scheduler")
            start(_worker_cmd(address, here, "CPU=1,near=1"), "worker-near")
            inner = (f"hostname {FAR_HOST} && mount -t tmpfs tmpfs /dev/shm && exec "
                     + " ".join(_worker_cmd(address, there, "CPU=1,far=1")))
            start(["ip", "netns", "exec", pair["ns"], "unshare", "--uts", "--mount", "--propagation", "private",
                   "sh", "-c", inner], "worker-far")
            client = distributed.Client(address, timeout=60, set_as_default=False)
            try:
                client.wait_for_workers(2, timeout=90)
            finally:
                client.close()
            jpar.init(backend="dask", address=address)
            yield {"address": address, "pair": pair, "logs": log_dir}
        finally:
            jpar.shutdown()
            _stop(procs)
    left = sorted(set(os.listdir("/dev/shm")) - shm_before)
    assert not left, f"left in /dev/shm: {left}"


def _stop(procs: list) -> None:
    """SIGTERM first, so Dask's processes close and their multiprocessing semaphores are unlinked (a
    SIGKILLed worker leaves its sem.mp-* files in /dev/shm); what is left after 30 s is SIGKILLed."""
    trees = [netns.tree(p.pid) for p in procs]
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for tree in trees:
        for q in reversed(tree):
            try:
                q.kill()
            except Exception:   # noqa: BLE001  (gone already)
                pass
    for p in procs:
        p.wait(timeout=30)


def _by_value():
    """The functions and class the workers run, made here so cloudpickle ships them by value (the
    workers never import this test module)."""

    def where():
        return socket.gethostname(), os.readlink("/proc/self/ns/net")

    def ones(n):
        return np.ones(n)

    def total(arr):
        return float(arr.sum()), socket.gethostname()

    def shout(text):
        print(text, flush=True)
        return socket.gethostname()

    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n, socket.gethostname()

    return [jpar.remote(f) for f in (where, ones, total, shout, Counter)]


where, ones, total, shout, Counter = _by_value()


FAR = {"resources": {"far": 1}}
NEAR = {"resources": {"near": 1}}


def test_tasks_run_on_the_host_their_resources_name(two_hosts):
    here_ns = os.readlink("/proc/self/ns/net")
    far_host, far_ns = jpar.get(where.options(**FAR).remote(), timeout=60)
    near_host, near_ns = jpar.get(where.options(**NEAR).remote(), timeout=60)
    assert (far_host, far_ns != here_ns) == (FAR_HOST, True)
    assert (near_host, near_ns) == (socket.gethostname(), here_ns)
    hosts = {e["host"] for e in hooks.engines()}
    assert hosts == {two_hosts["pair"]["here"], two_hosts["pair"]["there"]}, hooks.engines()


def test_values_cross_between_hosts_through_dask(two_hosts):
    made_far = ones.options(**FAR).remote(1_000_000)                 # 8 MB, in the far worker's memory
    assert jpar.get(total.options(**NEAR).remote(made_far), timeout=60) == (1_000_000.0, socket.gethostname())
    assert float(jpar.get(made_far, timeout=60).sum()) == 1_000_000.0
    arr = np.arange(1_000_000, dtype=np.float64)
    assert jpar.get(total.options(**FAR).remote(jpar.put(arr)), timeout=60) == (float(arr.sum()), FAR_HOST)
    stores = hooks.store_statistics()
    assert {two_hosts["pair"]["here"], two_hosts["pair"]["there"]} <= set(stores), stores


def test_output_printed_on_the_far_host_reaches_the_driver(two_hosts):
    got, seen = [], threading.Event()

    def handler(chunk, context):
        got.append(chunk.text)
        if "hello from far" in "".join(got):
            seen.set()

    hooks.set_output_handler(handler)
    try:
        assert jpar.get(shout.options(**FAR).remote("hello from far"), timeout=60) == FAR_HOST
        assert seen.wait(30), got
    finally:
        hooks.set_output_handler(None)


def test_an_actor_on_the_far_host_keeps_its_state(two_hosts):
    c = Counter.options(**FAR).remote()
    assert jpar.get([c.add.remote(k) for k in (1, 2, 3)], timeout=60) == [(1, FAR_HOST), (3, FAR_HOST),
                                                                          (6, FAR_HOST)]
    jpar.kill(c)
