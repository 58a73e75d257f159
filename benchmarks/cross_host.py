"""A large object pulled across hosts vs raw TCP between the same two hosts, as ratios, in one run.

The other host is a network namespace joined to this one by a veth pair (tests/netns.py; needs root
and `ip netns`). A head runs on this side bound to its veth address, one engine joins from the
namespace, and this process's driver connects by address and key. Each repetition, interleaved so
load and page cache treat them alike:

- raw TCP: a plain socket server in the namespace sends SIZE bytes from a preallocated buffer to a
  client here that reads them into a preallocated buffer (what a copy across the link costs);
- jpar: a task pinned to the far engine returns np.ones(SIZE // 8) (stored in that host's object
  store; not timed), then this driver's ``jpar.get`` pulls it (timed: 4 MiB chunks, 4 in flight,
  then the array is mapped), once with CurveZMQ (the default off loopback) and once with
  ``--insecure`` (plaintext, still HMAC-signed), each in its own cluster.

Prints MB/s medians and the ratios jpar/raw. The issue's goal: at least 0.8x raw TCP.

Run: .venv/bin/python benchmarks/cross_host.py [--size-mb 1024] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import jpar  # noqa: E402
from tests import netns  # noqa: E402

PORT = 47399


def _ones(n):
    import numpy

    return numpy.ones(n)


def raw_tcp(pair: dict, size: int) -> float:
    """Seconds to move ``size`` bytes over one TCP connection from the namespace to here."""
    server = textwrap.dedent(f"""
        import socket
        buf = bytearray({size})
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("{pair['there']}", {PORT})); s.listen(1)
        print("ready", flush=True)
        c, _ = s.accept(); c.sendall(buf); c.close(); s.close()
    """)
    proc = subprocess.Popen(["ip", "netns", "exec", pair["ns"], sys.executable, "-c", server],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        buf = bytearray(size)
        view = memoryview(buf)
        with socket.create_connection((pair["there"], PORT), timeout=60) as c:
            t0 = time.perf_counter()
            got = 0
            while got < size:
                n = c.recv_into(view[got:], size - got)
                if not n:
                    raise RuntimeError(f"raw TCP: the server closed after {got} of {size} bytes")
                got += n
            return time.perf_counter() - t0
    finally:
        proc.wait(timeout=30)


def jpar_pull(site, size: int) -> float:
    """Seconds for this driver to get() a ``size``-byte array made by the far engine."""
    (far,) = site.engine_ids(netns.FAR)
    ref = jpar.remote(_ones).options(placement=far).remote(size // 8)
    jpar.wait([ref], timeout=600)
    t0 = time.perf_counter()
    arr = jpar.get(ref, timeout=600)
    dt = time.perf_counter() - t0
    assert arr.nbytes == size and float(arr[-1]) == 1.0
    del arr, ref
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    why = netns.netns_unavailable()
    if why:
        print(f"skipped: {why}")
        return 0
    size = args.size_mb << 20
    times: dict[str, list] = {"raw TCP": [], "jpar CURVE": [], "jpar plaintext": []}
    with netns.veth_pair("jpx", 250, unique=True) as pair:
        sites = {}
        try:
            for secure in (True, False):
                s = netns.Site(pair, pathlib.Path(tempfile.mkdtemp(prefix="jpar-xhost-")), secure=secure)
                sites[secure] = s
            for rep in range(args.reps):
                times["raw TCP"].append(raw_tcp(pair, size))
                for secure, label in ((True, "jpar CURVE"), (False, "jpar plaintext")):
                    s = sites[secure]
                    if not s.head["conn"]:
                        s.start_head()
                        s.join(1)
                    s.connect(engines=2)   # this driver, to this cluster (one at a time)
                    times[label].append(jpar_pull(s, size))
                line = ", ".join(f"{k} {size / v[-1] / 1e6:.0f} MB/s" for k, v in times.items())
                print(f"rep {rep}: {line}", flush=True)
        finally:
            for s in sites.values():
                s.close()
    med = {k: size / statistics.median(v) / 1e6 for k, v in times.items()}
    print(f"\n{args.size_mb} MiB across a veth pair, medians of {args.reps}:")
    for k, v in med.items():
        print(f"  {k:15s} {v:8.0f} MB/s   {v / med['raw TCP']:.2f}x raw TCP")
    print("goal: jpar (CURVE, the default off loopback) >= 0.8x raw TCP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
