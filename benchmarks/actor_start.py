"""How long an actor takes from ``.remote()`` to its first answer, one after another, with actor
processes forked from the head's template and started as interpreters (``JPAR_ACTOR_FORK=0``),
in one run (each mode on a cluster of its own, started one after the other).

    .venv/bin/python benchmarks/actor_start.py [--actors 20]

Prints, per mode, the first actor's start (an interpreter in both modes: the template starts with
it) and the median and max of the later ones. A measurement, never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, os, sys, time
import jpar

@jpar.remote
class Echo:
    def ping(self):
        return os.getpid()

jpar.init(num_engines=2)
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    a = Echo.remote()
    jpar.get(a.ping.remote(), timeout=120)
    times.append(time.perf_counter() - t)
    jpar.kill(a)
jpar.shutdown()
print(json.dumps(times))
"""


def run(n: int, fork: bool) -> list[float]:
    env = dict(os.environ, JPAR_ACTOR_FORK="1" if fork else "0")
    out = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, env=env,
                         timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=20)
    n = ap.parse_args().actors
    for fork in (True, False):
        t = run(n, fork)
        later = t[1:] or t
        print(f"{'template forks' if fork else 'interpreters  '}: first {t[0] * 1e3:6.1f} ms, later median "
              f"{statistics.median(later) * 1e3:6.1f} ms, max {max(later) * 1e3:6.1f} ms ({n} actors, one at a time)")


if __name__ == "__main__":
    main()
