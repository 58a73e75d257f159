"""A producer/consumer pipeline: producers wait for a start Event, then put numbers on a Queue; a
consumer sums them until every producer has said it is done.

The code is the stdlib's; only the import differs. Run it on a jpar cluster (a local one starts on
first use), or with ``--stdlib`` to run the very same code with the stdlib's multiprocessing::

    python examples/multiprocessing/producer_consumer.py [--stdlib]
"""

import sys

if "--stdlib" in sys.argv:
    import multiprocessing
else:
    import jpar.multiprocessing as multiprocessing

PRODUCERS = 4
ITEMS = 25


def produce(start, queue, first):
    start.wait()                          # nobody produces before the consumer is listening
    for i in range(first, first + ITEMS):
        queue.put(i * i)
    queue.put(None)                       # this producer is done


def consume(start, queue, results):
    start.set()
    total = count = done = 0
    while done < PRODUCERS:
        item = queue.get()
        if item is None:
            done += 1
        else:
            total += item
            count += 1
    results.put((count, total))


def main():
    start = multiprocessing.Event()
    queue = multiprocessing.Queue()
    results = multiprocessing.Queue()
    producers = [multiprocessing.Process(target=produce, args=(start, queue, p * ITEMS))
                 for p in range(PRODUCERS)]
    consumer = multiprocessing.Process(target=consume, args=(start, queue, results))
    for p in producers + [consumer]:
        p.start()
    count, total = results.get()
    for p in producers + [consumer]:
        p.join()
    print(f"consumed {count} items, sum of squares {total}")
    print("exit codes:", [p.exitcode for p in producers + [consumer]])
    assert total == sum(i * i for i in range(PRODUCERS * ITEMS))


if __name__ == "__main__":
    main()
