"""A 64 MB shared-memory filesystem, as Docker and Binder give: the store copes, nothing is lost.

A real tmpfs of that size is mounted for the test (these machines run tests as root)."""

import os
import subprocess
import tempfile

import numpy as np
import pytest

import jpar

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_shm():
    path = tempfile.mkdtemp(prefix="jpar-smallshm-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", path], capture_output=True, text=True)
    assert mounted.returncode == 0, f"cannot mount a test tmpfs (run the tests as root): {mounted.stderr}"
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=True)
        os.rmdir(path)


@jpar.remote
def total(arr):
    return float(arr.sum())


def test_store_on_a_64_mb_shm_spills_and_loses_nothing(small_shm, caplog):
    jpar.init(num_engines=2, object_store_dir=small_shm)
    try:
        big = np.arange(12_000_000, dtype=np.float64)          # 96 MB: larger than the whole filesystem
        ref = jpar.put(big)
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("larger than the object store" in m for m in warned), warned   # the user is told why
        assert np.array_equal(jpar.get(ref), big)
        assert jpar.get(total.remote(ref)) == float(big.sum())
        parts = [jpar.put(np.full(2_000_000, i, dtype=np.float64)) for i in range(6)]  # 6 x 16 MB > 64 MB
        assert [jpar.get(total.remote(p)) for p in parts] == [float(i * 2_000_000) for i in range(6)]
        assert [float(jpar.get(p)[0]) for p in parts] == [float(i) for i in range(6)]
        stats = jpar.hooks.store_statistics()
        node = next(iter(stats.values()))
        assert node.capacity <= 64 * 2**20
        assert node.spilled_bytes > 0                         # what did not fit went to disk, not away
    finally:
        jpar.shutdown()
    assert [n for n in os.listdir(small_shm) if n.startswith("jpar")] == []
