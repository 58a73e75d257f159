"""A local Ray, then a `ray start` head, in one process (jpar.shutdown(), then jpar.init() again,
as a notebook does): the second cluster's actors run, an actor handle of the first says its
connection is closed, and dropping it leaves the second cluster's actors alone.

With Ray's authentication mode changed between the two (2.60 turns token authentication on by
default; the tests' heads run without it), the second cluster's actors ended before running ("all
references to the actor were removed"): the suite sets one mode for the session, see
tests/conftest.py."""

from __future__ import annotations

import gc
import os

import pytest

import jpar

pytestmark = pytest.mark.timeout(240)

ray = pytest.importorskip("ray")


@jpar.remote
class Box:
    def pid(self):
        return os.getpid()


@pytest.fixture
def local_ray(monkeypatch):
    """jpar starting a local Ray of its own (no address), Ray's usage stats off; shut down after."""
    if jpar.is_initialized():
        jpar.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    yield
    if jpar.is_initialized():
        jpar.shutdown()


def test_a_local_ray_then_a_started_head(local_ray, tmp_path_factory):
    from tests import test_backend_ray

    jpar.init(backend="ray", num_cpus=1)
    try:
        stale = [Box.remote() for _ in range(2)]
        assert len(set(jpar.get([b.pid.remote() for b in stale], timeout=120))) == 2
    finally:
        jpar.shutdown()
    started = test_backend_ray._start_head(tmp_path_factory.mktemp("ray"))   # short: Ray's socket paths
    assert started is not None, "ray start --head did not come up"
    proc, reader, address = started
    try:
        jpar.init(backend="ray", address=address)
        try:
            fresh = [Box.options(max_restarts=1).remote() for _ in range(2)]
            before = jpar.get([b.pid.remote() for b in fresh], timeout=120)
            with pytest.raises(jpar.ClusterError, match=r"jpar.shutdown\(\) closed"):
                stale[0].pid.remote()
            with pytest.raises(jpar.ClusterError, match=r"jpar.shutdown\(\) closed"):
                jpar.kill(stale[1])
            del stale
            gc.collect()
            assert jpar.get([b.pid.remote() for b in fresh], timeout=60) == before
        finally:
            jpar.shutdown()
    finally:
        assert not test_backend_ray._stop_head(proc, reader)
