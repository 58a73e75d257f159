"""The multiprocessing examples run the same with jpar and with the stdlib: only the import differs."""

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples" / "multiprocessing").glob("*.py"))


@pytest.mark.timeout(200)
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_prints_the_same_with_jpar_and_the_stdlib(script, tmp_path):
    outputs = []
    for flag in (["--stdlib"], []):
        run = subprocess.run([sys.executable, str(script), *flag], capture_output=True, text=True, timeout=90,
                             cwd=tmp_path)
        assert run.returncode == 0, f"{script.name} {flag}: {run.stderr[-3000:]}"
        outputs.append(run.stdout)
    assert outputs[0].strip() and outputs[0] == outputs[1]


def test_there_are_the_three_examples():
    assert {p.stem for p in EXAMPLES} >= {"producer_consumer", "manager_counter", "process_subclass"}
