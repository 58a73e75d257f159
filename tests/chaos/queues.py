"""Chaos rounds for jpar.multiprocessing's queues: producers and consumers SIGKILLed mid-stream.

Each round starts producer and consumer Processes around one Queue (bounded or not, small items or
items large enough to overflow its shared-memory ring) and SIGKILLs some of them at random moments,
in the middle of their puts and gets (a killed process may hold the queue's lock). Consumers report
every item they get, tagged with their number, on a second queue. When the survivors are done, the
parent drains what is left. Judged against what the module promises::

    duplicates      an item delivered twice (must be 0)
    disorder        a consumer saw one producer's items out of order (must be 0)
    lost            an item of a producer that was not killed, never delivered, beyond one per killed
                    consumer (the item it had taken when it died; the stdlib loses the same): must be 0
    hangs           a get or join that ran out of its timeout (must be 0)

The randomness is seeded (``--seed``, printed) so a run replays::

    python -m tests.chaos.queues [--rounds 20] [--seed N]
"""

from __future__ import annotations

import argparse
import queue
import random
import sys
import time
from dataclasses import dataclass, field

import jpar
import jpar.multiprocessing as mp

__all__ = ["QueueChaosReport", "run_queue_chaos", "main"]

END = "end"


def produce(q, k: int, n: int, size: int) -> None:
    pad = b"p" * size
    for i in range(n):
        q.put((k, i, pad))


def consume(q, out, c: int) -> None:
    while True:
        item = q.get(timeout=60)
        if item == END:
            out.put((c, END, 0))
            return
        out.put((c, item[0], item[1]))


@dataclass
class QueueChaosReport:
    rounds: int = 0
    delivered: int = 0
    kills: int = 0
    mid_stream: int = 0     # producers killed while still putting
    duplicates: int = 0
    disorder: int = 0
    lost: int = 0
    hangs: int = 0
    problems: list = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.duplicates or self.disorder or self.lost or self.hangs)

    def line(self) -> str:
        return (f"{self.rounds} rounds, {self.delivered} items delivered, {self.kills} processes killed "
                f"({self.mid_stream} producers while putting): "
                f"duplicates {self.duplicates}, disorder {self.disorder}, lost {self.lost}, hangs {self.hangs}")


def one_round(report: QueueChaosReport, rng: random.Random, timeout: float) -> None:
    maxsize = rng.choice((0, 0, 16))
    size = rng.choice((16, 16, 300_000))           # 300 kB items: the 8 MiB ring overflows
    n = 60 if size > 1000 else 8000
    producers, consumers = rng.randint(2, 3), rng.randint(2, 3)
    q, out = mp.Queue(maxsize), mp.Queue()
    prods = [mp.Process(target=produce, args=(q, k, n, size)) for k in range(producers)]
    cons = [mp.Process(target=consume, args=(q, out, c)) for c in range(consumers)]
    for p in prods + cons:
        p.start()
    victims = rng.sample(prods, rng.randint(0, 1)) + rng.sample(cons, rng.randint(0, 1))
    time.sleep(rng.uniform(0.02, 0.3))              # a random moment of the stream
    for v in victims:
        report.mid_stream += v in prods and v.is_alive()
        v.kill()
    report.kills += len(victims)
    killed_prods = {prods.index(v) for v in victims if v in prods}
    killed_cons = sum(1 for v in victims if v in cons)
    for p in prods:
        p.join(timeout)
        if p.exitcode is None:
            report.hangs += 1
            report.problems.append(f"producer {p.pid} still running after {timeout} s")
            p.kill()
    live = [c for c in cons if c not in victims]
    for _ in live:
        q.put(END)
    got: list = []
    ended = 0
    deadline = time.monotonic() + timeout
    while ended < len(live):
        try:
            c, k, i = out.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            report.hangs += 1
            report.problems.append(f"consumers sent {ended} of {len(live)} ends in {timeout} s")
            break
        if k == END:
            ended += 1
        else:
            got.append((c, k, i))
    for p in cons:
        p.join(timeout)
    for p in prods + cons:
        # a victim killed (-9), or a producer that put its last item just before the kill (0)
        expected = (-9, 0) if p in victims and p in prods else (-9,) if p in victims else (0,)
        if p.exitcode not in expected:
            report.hangs += 1
            report.problems.append(f"{'producer' if p in prods else 'consumer'} {p.pid} ended with exit code "
                                   f"{p.exitcode}, not {' or '.join(map(str, expected))}")
    while True:                                     # what no consumer took (its taker was killed first)
        try:
            item = q.get(timeout=0.5)
        except queue.Empty:
            break
        if item != END:
            got.append((-1, item[0], item[1]))
    report.rounds += 1
    report.delivered += len(got)
    items = [(k, i) for _, k, i in got]
    dup = len(items) - len(set(items))
    if dup:
        report.duplicates += dup
        report.problems.append(f"{dup} item(s) delivered twice")
    for c in {c for c, _, _ in got if c >= 0}:
        for k in range(producers):
            seq = [i for cc, kk, i in got if cc == c and kk == k]
            if seq != sorted(seq):
                report.disorder += 1
                report.problems.append(f"consumer {c} got producer {k}'s items out of order")
    have = set(items)
    for k in range(producers):
        if k in killed_prods:
            continue
        missing = [i for i in range(n) if (k, i) not in have]
        if len(missing) > killed_cons:
            report.lost += len(missing) - killed_cons
            report.problems.append(f"producer {k} (not killed): {len(missing)} item(s) never delivered, "
                                   f"{killed_cons} consumer(s) killed")


def run_queue_chaos(rounds: int, seed: int | None = None, timeout: float = 60.0) -> QueueChaosReport:
    seed = random.randrange(1 << 30) if seed is None else seed
    print(f"queue chaos: seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    report = QueueChaosReport()
    owns = not jpar.is_initialized()
    if owns:
        jpar.init(num_engines=2)
    try:
        for _ in range(rounds):
            one_round(report, rng, timeout)
    finally:
        if owns:
            jpar.shutdown()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    report = run_queue_chaos(args.rounds, args.seed)
    print(report.line())
    for p in report.problems:
        print("  " + p)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
