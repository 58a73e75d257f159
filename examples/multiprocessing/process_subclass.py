"""A Process subclass overriding run(): each one checks a range of numbers for primes and reports
on a Queue; one fails on purpose to show the exit codes the stdlib gives.

The code is the stdlib's; only the import differs::

    python examples/multiprocessing/process_subclass.py [--stdlib]
"""

import sys

if "--stdlib" in sys.argv:
    import multiprocessing
else:
    import jpar.multiprocessing as multiprocessing


class PrimeCounter(multiprocessing.Process):
    def __init__(self, lo, hi, results):
        super().__init__(name=f"primes-{lo}-{hi}")
        self.lo, self.hi, self.results = lo, hi, results

    def run(self):
        if self.lo < 0:
            raise ValueError("a negative range")        # exit code 1, traceback on stderr
        found = [n for n in range(max(self.lo, 2), self.hi)
                 if all(n % d for d in range(2, int(n ** 0.5) + 1))]
        self.results.put((multiprocessing.current_process().name, len(found)))


def main():
    results = multiprocessing.Queue()
    workers = [PrimeCounter(lo, lo + 2500, results) for lo in range(0, 10000, 2500)]
    bad = PrimeCounter(-5, 0, results)
    for w in workers + [bad]:
        w.start()
    counts = dict(results.get() for _ in workers)
    for w in workers + [bad]:
        w.join()
    for name in sorted(counts):
        print(f"{name}: {counts[name]} primes")
    print("total:", sum(counts.values()))
    print("exit codes:", [w.exitcode for w in workers], "and", bad.exitcode, "for the failing one")
    assert sum(counts.values()) == 1229


if __name__ == "__main__":
    main()
