"""libzmq's own CURVE throughput, with nothing of jpar's: 1 MiB messages one way, PUSH -> PULL over
127.0.0.1 TCP, plaintext then CURVE, in one run. It bounds jpar's CURVE figures (benchmarks/curve.py,
benchmarks/cross_host.py) from above on a machine: no HMAC, no pickling, no pull logic here.

Run: .venv/bin/python benchmarks/curve_zmq_only.py [--reps 2] [--mib 1024]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import zmq

SIZE = 1 << 20


def _sink(curve: bool, keys: tuple, n: int, pipe) -> None:
    sock = zmq.Context.instance().socket(zmq.PULL)
    if curve:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = keys
    pipe.send(sock.bind_to_random_port("tcp://127.0.0.1"))
    for _ in range(n + 1):   # the first message proves the connection (and the handshake)
        sock.recv(copy=False)
    sock.close(0)


def run(curve: bool, n: int) -> float:
    """MB/s of ``n`` 1 MiB messages from this process to a fresh receiving process."""
    server, client = zmq.curve_keypair(), zmq.curve_keypair()
    here, there = mp.Pipe()
    p = mp.get_context("spawn").Process(target=_sink, args=(curve, server, n, there))
    p.start()
    sock = zmq.Context.instance().socket(zmq.PUSH)
    if curve:
        sock.curve_serverkey = server[0]
        sock.curve_publickey, sock.curve_secretkey = client
    sock.connect(f"tcp://127.0.0.1:{here.recv()}")
    sock.send(b"x")
    data = b"y" * SIZE
    t = time.perf_counter()
    for _ in range(n):
        sock.send(data)
    p.join(300)
    dt = time.perf_counter() - t
    sock.close(0)
    if p.exitcode != 0:
        raise RuntimeError(f"the receiving process ended with {p.exitcode}")
    return n * SIZE / dt / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--mib", type=int, default=1024, help="MiB sent per run (default 1024)")
    args = ap.parse_args()
    for _ in range(args.reps):
        plain, curve = run(False, args.mib), run(True, args.mib)
        print(f"plaintext {plain:,.0f} MB/s   CURVE {curve:,.0f} MB/s   CURVE / plaintext {curve / plain:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
