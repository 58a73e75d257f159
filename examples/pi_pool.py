"""Monte Carlo estimate of pi with a process pool: the seed notes' program, ported to jpar by
changing one import line.

    from multiprocessing import Pool          # the original
    from jpar.multiprocessing import Pool     # the port: nothing else changes

Run: ``python examples/pi_pool.py`` (200 batches of 100,000 samples, as in the seed notes);
``--compare`` also times the stdlib pool in the same run.
"""

import argparse
import math
import random
import time

from jpar.multiprocessing import Pool  # was: from multiprocessing import Pool


def sample(num_samples):
    """One batch: how many random points of the square fall inside the unit circle."""
    num_inside = 0
    for _ in range(num_samples):
        x, y = random.uniform(-1, 1), random.uniform(-1, 1)
        if math.hypot(x, y) <= 1:
            num_inside += 1
    return num_inside


def approximate_pi(num_samples, batch_size=100_000):
    start = time.time()
    num_inside = sum(sample(batch_size) for _ in range(num_samples // batch_size))
    print("pi ~= {}".format((4 * num_inside) / num_samples))
    print("Finished serially in: {:.2f}s".format(time.time() - start))
    return time.time() - start


def approximate_pi_parallel(num_samples, batch_size=100_000, pool_class=Pool):
    start = time.time()
    num_inside = 0
    with pool_class() as pool:
        for result in pool.map(sample, [batch_size for _ in range(num_samples // batch_size)]):
            num_inside += result
    print("pi ~= {}".format((4 * num_inside) / num_samples))
    print("Finished in parallel ({}.{}) in: {:.2f}s".format(
        pool_class.__module__, pool_class.__name__, time.time() - start))
    return time.time() - start


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--no-serial", action="store_true", help="skip the serial baseline")
    parser.add_argument("--compare", action="store_true", help="also run multiprocessing.Pool")
    args = parser.parse_args()
    n = args.batches * args.batch_size
    serial = None if args.no_serial else approximate_pi(n, args.batch_size)
    parallel = approximate_pi_parallel(n, args.batch_size)
    if serial:
        print("speedup over serial: {:.2f}x".format(serial / parallel))
    if args.compare:
        import multiprocessing

        stdlib = approximate_pi_parallel(n, args.batch_size, multiprocessing.Pool)
        print("jpar / multiprocessing.Pool time: {:.2f}".format(parallel / stdlib))
