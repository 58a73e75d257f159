"""jpar.multiprocessing's queues, locks and shared values beside the stdlib's, on one host, in one run.

- queue round trip: the parent puts an item, a child process gets it and puts it on a second
  queue, the parent gets it back (two queue hops across processes);
- queue pipelined: the parent puts N items and an end mark, the child gets them all, then answers once;
- lock acquire+release and ``with v.get_lock(): v.value += 1``: uncontended, in the parent;
- Event set+is_set+clear: uncontended, in the parent;
- Event ping-pong: the parent sets one event, a child process waiting on it clears it and sets a
  second one, which the parent waits on (two cross-process wake-ups per round).

The stdlib's side uses ``multiprocessing.get_context("spawn")`` processes and objects; jpar's
side uses a jpar Process and jpar's objects (state server on this host: queues over its local
socket; locks and values on its shared memory, the same-host fast path of
jpar.multiprocessing.fastsync). Each line is the median of ``--repeat`` runs; the last column is
jpar's time over the stdlib's.
Run: .venv/bin/python benchmarks/mp_sync.py [--n 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import jpar
import jpar.multiprocessing as jmp


def echo(q_in, q_out) -> None:
    while True:
        x = q_in.get()
        if x is None:
            return
        q_out.put(x)


def drain(q_in, q_out) -> None:
    while True:
        x = q_in.get()
        if x is None:
            return
        if x == "end":
            q_out.put("done")


def pong(ping, pong_, rounds) -> None:
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong_.set()


def event_cases(mp, n: int, repeat: int) -> dict:
    ev = mp.Event()
    local = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            ev.set()
            ev.is_set()
            ev.clear()
        local.append((time.perf_counter() - t) / n)
    rounds = max(1, n // 10)
    ping, back = mp.Event(), mp.Event()
    p = mp.Process(target=pong, args=(ping, back, rounds * repeat + 1))
    p.start()
    ping.set(), back.wait(), back.clear()   # the child is up
    wake = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(rounds):
            ping.set()
            back.wait()
            back.clear()
        wake.append((time.perf_counter() - t) / rounds)
    p.join()
    return {"Event set+is_set+clear": statistics.median(local),
            "Event ping-pong (set -> wait in another process)": statistics.median(wake)}


def queue_cases(mp, n: int, repeat: int) -> dict:
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(a, b))
    p.start()
    a.put(0), b.get()                      # the child is up and connected
    rtt = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(n):
            a.put(i)
            b.get()
        rtt.append((time.perf_counter() - t) / n)
    a.put(None)
    p.join()
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=drain, args=(a, b))
    p.start()
    piped = []
    for _ in range(repeat):
        t = time.perf_counter()
        for i in range(n):
            a.put(i)
        a.put("end")
        b.get()
        piped.append((time.perf_counter() - t) / n)
    a.put(None)
    p.join()
    return {"queue round trip (put+get there and back)": statistics.median(rtt),
            "queue pipelined put->get, per item": statistics.median(piped)}


def local_cases(mp, n: int, repeat: int) -> dict:
    lock = mp.Lock()
    v = mp.Value("i", 0)
    lk, inc = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        lk.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        for _ in range(n):
            with v.get_lock():
                v.value += 1
        inc.append((time.perf_counter() - t) / n)
    assert v.value == n * repeat
    return {"Lock acquire+release": statistics.median(lk),
            "Value += 1 under its lock": statistics.median(inc)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    jpar.init(num_engines=2)
    std = multiprocessing.get_context("spawn")
    results = {}
    for name, mp in (("stdlib", std), ("jpar", jmp)):
        r = queue_cases(mp, args.n, args.repeat)
        r.update(local_cases(mp, args.n, args.repeat))
        r.update(event_cases(mp, args.n, args.repeat))
        results[name] = r
    print(f"{'case':50s} {'stdlib us':>10s} {'jpar us':>10s} {'ratio':>7s}")
    for case, s in results["stdlib"].items():
        j = results["jpar"][case]
        print(f"{case:50s} {s * 1e6:10.2f} {j * 1e6:10.2f} {j / s:7.1f}x")
    jpar.shutdown()


if __name__ == "__main__":
    main()
