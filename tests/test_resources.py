"""Capacity follows engines: an added engine brings its CPU, a removed one gives it back, and a
declared ``num_cpus`` sets how many engines start. Concurrency is proved by the tasks' own start and
end times and pids (measured inside the tasks), never by timing the test."""

import os
import subprocess
import sys
import time

import pytest

import jpar
from jpar.config import Config
from jpar.runtime.driver.launcher import engine_count, node_resources
from jpar.runtime.wire.protocol import TaskSpec
from jpar.runtime.head.scheduler import DrainEngine, RetireEngine, Scheduler, SendFailure

from .conftest import jpar_children, wait_gone

pytestmark = pytest.mark.timeout(120)


@jpar.remote
def stamp(seconds):
    """When this task started and ended, measured on its engine, and where it ran."""
    start = time.time()
    time.sleep(seconds)
    return os.getpid(), start, time.time()


def assert_all_overlap(stamps, n):
    """All ``n`` tasks ran at once: each started before any of them ended, in ``n`` processes."""
    pids = {p for p, _, _ in stamps}
    assert len(pids) == n, f"{n} tasks ran in {len(pids)} processes: {stamps}"
    latest_start = max(s for _, s, _ in stamps)
    earliest_end = min(e for _, _, e in stamps)
    assert latest_start < earliest_end, f"the {n} tasks did not all run at once: {stamps}"


@pytest.fixture
def fresh():
    """A test that starts its own cluster (init with its own arguments) and leaves nothing behind."""
    assert not jpar.is_initialized()
    yield
    procs = jpar_children()
    jpar.shutdown()
    assert wait_gone(procs) == []


# ---------------------------------------------------------------- pure: what a node advertises
def test_node_cpus_follow_engines_unless_declared():
    assert node_resources(Config(), 2) == {"per_engine": {"CPU": 1.0}}
    assert node_resources(Config(num_cpus=3), 2) == {"CPU": 3.0}
    assert engine_count(Config(num_cpus=3)) == 3            # Ray starts one worker per declared CPU
    assert engine_count(Config(num_cpus=2.5)) == 3
    assert engine_count(Config(num_cpus=3), 2) == 2         # num_engines given still wins
    assert engine_count(Config(num_engines=5, num_cpus=3)) == 5
    assert engine_count(Config()) == (os.cpu_count() or 1)


def spec(tid, cpus=1.0):
    return TaskSpec(tid, 1, "f", b"", (), 1, (("CPU", cpus),), 0, False, 0, 0, -1)


def test_scheduler_node_grows_and_shrinks_with_its_engines():
    s = Scheduler()
    s.client_added(1)
    per_engine = {"per_engine": {"CPU": 1.0}}
    for eid in range(2):
        s.engine_added(eid, "n", per_engine)
    assert s.resources() == {"CPU": 2.0}
    s.engine_added(2, "n", per_engine)
    assert s.resources() == {"CPU": 3.0} and s.engine_share(2) == ({"CPU": 1.0}, "n")
    acts = s.submit(1, [spec(100, cpus=3.0)])                 # fits only while all three engines are there
    assert not any(type(a) is SendFailure for a in acts)
    # a fixed node (num_cpus declared) keeps its count whatever its engines do
    f = Scheduler()
    f.engine_added(0, "m", {"CPU": 4.0})
    f.engine_added(1, "m", {"CPU": 4.0})
    assert f.resources() == {"CPU": 4.0} and f.node_grows("m") == {}
    f.engine_removed(1)
    assert f.resources() == {"CPU": 4.0}


def test_scheduler_gives_back_a_drained_engines_cpu_and_fails_what_no_longer_fits():
    s = Scheduler()
    s.client_added(1)
    for eid in range(3):
        s.engine_added(eid, "n", {"per_engine": {"CPU": 1.0}})
    acts = s.drain_engines(1)
    (eid,) = [a.engine_id for a in acts if type(a) is DrainEngine]
    assert any(type(a) is RetireEngine for a in acts)          # idle: retired at once
    s.engine_removed(eid, "removed on request")
    assert s.resources() == {"CPU": 2.0} and s.available() == {"CPU": 2.0}
    acts = s.submit(1, [spec(200, cpus=3.0)])                  # no node can ever give 3 now
    assert any(type(a) is SendFailure for a in acts)


# ---------------------------------------------------------------- a real cluster
def test_added_engine_brings_a_cpu_and_removing_it_gives_it_back(fresh):
    jpar.init(num_engines=2)
    assert jpar.cluster_resources() == {"CPU": 2.0}
    change = jpar.hooks.add_engines(1)
    (new,) = change.engine_ids
    assert change.resources == {"CPU": 1.0} and str(change) == f"added engine {new} (+1 CPU)"
    assert new in [e["id"] for e in jpar.hooks.engines()] and change.pids[0] in [p.pid for p in jpar_children()]
    assert jpar.cluster_resources() == {"CPU": 3.0} and jpar.available_resources() == {"CPU": 3.0}
    assert_all_overlap(jpar.get([stamp.remote(2) for _ in range(3)], timeout=60), 3)

    gone = jpar.hooks.remove_engines(engine_ids=[new])
    assert gone.engine_ids == (new,) and gone.resources == {"CPU": -1.0}
    assert str(gone) == f"removed engine {new} (-1 CPU)"
    assert jpar.cluster_resources() == {"CPU": 2.0}


def test_no_engine_is_added_where_num_cpus_is_fixed(fresh):
    jpar.init(num_cpus=2)
    with pytest.raises(jpar.ResourceError, match=r"fixed CPU count \(2, declared with num_cpus="):
        jpar.hooks.add_engines(1)
    assert len(jpar.hooks.engines()) == 2 and jpar.cluster_resources() == {"CPU": 2.0}
    gone = jpar.hooks.remove_engines(1)          # allowed; the fixed count stays and the result says why
    assert gone.resources == {} and "fixed CPU count" in str(gone)
    assert jpar.cluster_resources() == {"CPU": 2.0}


def test_cli_add_engines_says_what_it_added(fresh):
    ctx = jpar.init(num_engines=1)
    out = subprocess.run([sys.executable, "-m", "jpar.cli", "add-engines", "--address", ctx.address],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "added engine 1 (+1 CPU)" in out.stdout
    assert jpar.cluster_resources() == {"CPU": 2.0}
    assert_all_overlap(jpar.get([stamp.remote(1) for _ in range(2)], timeout=60), 2)


def test_num_cpus_sets_how_many_tasks_run_at_once(fresh):
    jpar.init(num_cpus=4)                        # no num_engines: one engine per declared CPU, as Ray's workers
    assert len(jpar.hooks.engines()) == 4 and jpar.cluster_resources() == {"CPU": 4.0}
    assert_all_overlap(jpar.get([stamp.remote(1) for _ in range(4)], timeout=60), 4)


def test_num_engines_given_wins_over_num_cpus(fresh):
    jpar.init(num_cpus=3, num_engines=1)
    assert len(jpar.hooks.engines()) == 1 and jpar.cluster_resources() == {"CPU": 3.0}


def test_jpar_start_resources_take_a_json_object_of_amounts():
    from jpar.cli import _resources

    assert _resources('{"bigmem": 1, "ssd": 0.5}') == {"bigmem": 1.0, "ssd": 0.5}
    assert node_resources(Config(num_cpus=2), 1, {"bigmem": 1.0}) == {"CPU": 2.0, "bigmem": 1.0}
    for bad, why in [("bigmem", "not JSON"), ("[1]", "JSON object"), ('{"x": -1}', "non-negative"),
                     ('{"x": true}', "non-negative"), ('{"CPU": 4}', "JPAR_NUM_CPUS")]:
        out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--address", "tcp://127.0.0.1:9",
                              "--resources", bad], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and why in out.stderr, (bad, out.stderr)
