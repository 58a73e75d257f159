"""What CurveZMQ costs: signed jpar messages over TCP with CURVE vs plaintext, as ratios, in one run.

A server process holds a ROUTER made by jpar's transport (bind_router: what the head and the object
servers use); a client talks to it through a DEALER (connect_dealer: what engines and drivers use),
as a reader pulls an object: each request is a FetchObject, each answer an ObjectChunk of the size
asked for (its bytes in a frame of their own, as in a real pull). Every message is a real protocol message, HMAC-signed and checked as in a cluster, so the
only difference between the two modes is CURVE. Both modes run on 127.0.0.1, interleaved, so the
network and the machine's load are the same for both: CURVE is forced there by treating loopback
as "off loopback" in both processes (a cluster never does that; on loopback it stays plaintext).

Measured: the round trip of a small message (one at a time), small messages per second with 100
in flight, bulk MB/s with 1 MiB messages (4 in flight, like an object transfer), and the time to a
first answer on a fresh connection (connect, handshake with a ZAP check, one message).

Run: .venv/bin/python benchmarks/curve.py [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jpar.runtime.wire import keys, transport  # noqa: E402
from jpar.runtime.wire import protocol as P  # noqa: E402

KEY = b"b" * 32
SMALL = b"x" * 64
BULK = b"y" * (1 << 20)


def _setup(mode: str, keydir: str, role: str) -> None:
    if mode == "curve":
        transport.is_loopback_endpoint = lambda ep: not ep.startswith("tcp://")   # see the docstring
        keys.secure_process(keydir, role=role)
    else:
        transport.configure_security(None, insecure=True)


def _echo(mode: str, keydir: str, pipe) -> None:
    """The serving peer: answers every FetchObject with a chunk of the length asked for (and a
    Shutdown with itself), as an object server does."""
    _setup(mode, keydir, keys.SERVER)
    ch, bound = transport.bind_router(["tcp://127.0.0.1:0"], P.Signer(KEY))
    pipe.send(bound[0])
    stop = []

    def answer(identity, msg):
        if type(msg) is P.Shutdown:
            stop.append(1)
            ch.send_to(identity, msg)
        else:
            data = SMALL if msg.length == len(SMALL) else BULK
            ch.send_to(identity, P.ObjectChunk(msg.req_id, msg.offset, len(data), data))

    while not stop:
        ch.sock.poll(1000)
        ch.drain_from(answer)
    ch.close()


def _measure(endpoint: str, n_rtt: int, n_msgs: int, n_bulk: int) -> dict:
    signer = P.Signer(KEY)
    t0 = time.perf_counter()
    ch = transport.connect_dealer(endpoint, signer, heartbeat=None)
    ch.send(P.FetchObject(0, "bench", 0, len(SMALL)))
    assert ch.recv(timeout_ms=30000) is not None, "no answer from the serving process"
    first = time.perf_counter() - t0
    rtts = []
    for i in range(n_rtt):
        t = time.perf_counter()
        ch.send(P.FetchObject(i, "bench", 0, len(SMALL)))
        ch.recv(timeout_ms=30000)
        rtts.append(time.perf_counter() - t)
    out = {"first_ms": first * 1e3, "rtt_us": statistics.median(rtts) * 1e6}
    for label, payload, n, window in (("msgs_per_s", SMALL, n_msgs, 100), ("bulk_MBps", BULK, n_bulk, 4)):
        t = time.perf_counter()
        sent = got = 0
        while got < n:
            while sent < n and sent - got < window:
                ch.send(P.FetchObject(sent, "bench", 0, len(payload)))
                sent += 1
            if ch.recv(timeout_ms=30000) is None:
                raise RuntimeError("the serving process stopped answering")
            got += 1
        dt = time.perf_counter() - t
        out[label] = n / dt if label == "msgs_per_s" else n * len(payload) / dt / 1e6
    ch.send(P.Shutdown("done"))
    ch.recv(timeout_ms=30000)
    ch.close()
    return out


def _client(mode: str, keydir: str, sizes: tuple, pipe) -> None:
    _setup(mode, keydir, keys.CLIENT)
    endpoint = pipe.recv()
    pipe.send(_measure(endpoint, *sizes))


def run_once(mode: str, keydir: str, sizes: tuple) -> dict:
    """One measurement: an echo process and a client process, both fresh (so each mode starts cold)."""
    ctx = mp.get_context("spawn")
    echo_end, echo_child = ctx.Pipe()
    client_end, client_child = ctx.Pipe()
    echo = ctx.Process(target=_echo, args=(mode, keydir, echo_child))
    client = ctx.Process(target=_client, args=(mode, keydir, sizes, client_child))
    echo.start()
    client.start()
    try:
        endpoint = echo_end.recv()
        assert (transport.CURVE_MARK in endpoint) == (mode == "curve"), endpoint
        client_end.send(endpoint)
        deadline = time.monotonic() + 600
        while not client_end.poll(1):   # a client that failed says so at once (its traceback is above)
            if not client.is_alive():
                raise RuntimeError(f"{mode}: the client process ended without a result (exit code {client.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{mode}: no result in 600 s")
        return client_end.recv()
    finally:
        for p in (client, echo):
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="runs per mode, interleaved (default 3)")
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = ap.parse_args()
    sizes = (500, 5000, 64) if args.quick else (3000, 40000, 512)   # round trips, small msgs, 1 MiB msgs
    if not transport.curve_available():
        sys.exit("libzmq was built without CURVE: nothing to compare")
    with tempfile.TemporaryDirectory(prefix="jpar-curve-bench-") as tmp:
        keydir = os.path.join(tmp, "keys")
        keys.create_keys(keydir)
        results: dict = {"plain": [], "curve": []}
        for rep in range(args.reps):
            for mode in ("plain", "curve"):
                r = run_once(mode, keydir, sizes)
                results[mode].append(r)
                print(f"rep {rep + 1} {mode:5}: " + "  ".join(f"{k} {v:,.1f}" for k, v in r.items()), flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    print(f"\nmedians of {args.reps} run(s) per mode; ratio = curve / plain "
          f"(pyzmq {__import__('zmq').__version__}, libzmq {__import__('zmq').zmq_version()}, {os.cpu_count()} cores)")
    print(f"{'measure':<34} {'plain':>12} {'curve':>12} {'ratio':>7}")
    names = {"rtt_us": "round trip, 64 B (us, lower better)", "msgs_per_s": "64 B msgs/s, 100 in flight",
             "bulk_MBps": "1 MiB msgs, MB/s, 4 in flight", "first_ms": "first answer, new connection (ms)"}
    for k, label in names.items():
        p, c = med["plain"][k], med["curve"][k]
        print(f"{label:<34} {p:>12,.1f} {c:>12,.1f} {c / p:>7.2f}")


if __name__ == "__main__":
    main()
