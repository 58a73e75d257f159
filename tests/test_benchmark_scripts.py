"""The benchmark scripts that no `make bench` workload runs still run (their figures are not
checked here: speed is measured in benchmarks/, never asserted by a test)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_curve_benchmark_completes_in_both_modes():
    """It hung once: its client sent object chunks to a ROUTER, whose frame check refuses them."""
    from jpar.runtime.wire import transport

    if not transport.curve_available():
        pytest.skip("libzmq was built without CURVE")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curve.py"), "--quick", "--reps", "1"],
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout + out.stderr
    for measure in ("round trip, 64 B", "64 B msgs/s", "1 MiB msgs, MB/s", "first answer"):
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith(measure)), None)
        assert line is not None, out.stdout
        plain, curve, ratio = (float(x.replace(",", "")) for x in line.split()[-3:])
        assert plain > 0 and curve > 0 and ratio > 0, line
