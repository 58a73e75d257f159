"""Code written for Ray's core API runs with `import jpar as ray`."""

import pathlib
import subprocess
import sys

import pytest

import jpar

PROGRAMS = pathlib.Path(__file__).parent / "ray_programs"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("program", sorted(p.name for p in PROGRAMS.glob("*.py")))
def test_ray_program_runs_unchanged(program):
    out = subprocess.run([sys.executable, str(PROGRAMS / program)], capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stderr
    assert "ray program ran unchanged" in out.stdout


def test_core_names_exist():
    for name in ["init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "kill",
                 "get_actor", "cluster_resources", "available_resources", "nodes", "get_runtime_context",
                 "ObjectRef", "exceptions"]:
        assert hasattr(jpar, name), name
    for name in ["RayTaskError", "RayActorError", "GetTimeoutError", "TaskCancelledError", "WorkerCrashedError",
                 "ObjectLostError", "ObjectStoreFullError"]:
        assert issubclass(getattr(jpar.exceptions, name), jpar.JparError), name
