"""Counting words into a Manager dict from several processes, a Lock around each update.

``d[k] = d.get(k, 0) + 1`` is a read then a write: without the Lock two processes can read the
same value and one increment is lost. The code is the stdlib's; only the import differs::

    python examples/multiprocessing/manager_counter.py [--stdlib]
"""

import sys

if "--stdlib" in sys.argv:
    import multiprocessing
else:
    import jpar.multiprocessing as multiprocessing

WORDS = "the quick brown fox jumps over the lazy dog the end".split()


def count_words(counts, lock, rounds):
    for _ in range(rounds):
        for word in WORDS:
            with lock:
                counts[word] = counts.get(word, 0) + 1


def main():
    with multiprocessing.Manager() as manager:
        counts = manager.dict()
        lock = manager.Lock()
        workers = [multiprocessing.Process(target=count_words, args=(counts, lock, 5)) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        result = dict(sorted(counts.items()))
    print(result)
    assert result["the"] == 3 * 5 * 3 and sum(result.values()) == 3 * 5 * len(WORDS)


if __name__ == "__main__":
    main()
