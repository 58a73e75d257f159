"""1 GiB puts in a row, each ref dropped before the next: the first writes fresh shared memory
(page faults), later ones reuse the store's pooled segments. Compared with a warm memcpy in the
same run. Run: .venv/bin/python benchmarks/put_reuse.py
"""

import gc
import time

import numpy as np

import jpar


def main() -> None:
    jpar.init(num_engines=2)
    a = np.ones(1 << 27)                                         # 1 GiB of float64
    for i in range(4):
        t = time.perf_counter()
        ref = jpar.put(a)
        print(f"put {i}: {a.nbytes / (time.perf_counter() - t) / 1e9:.2f} GB/s", flush=True)
        del ref
        gc.collect()
    b = np.empty_like(a)
    np.copyto(b, a)                                              # fault b's pages first: a warm memcpy
    t = time.perf_counter()
    np.copyto(b, a)
    print(f"memcpy into warm memory: {a.nbytes / (time.perf_counter() - t) / 1e9:.2f} GB/s")
    jpar.shutdown()


if __name__ == "__main__":
    main()
