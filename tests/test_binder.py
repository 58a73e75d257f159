"""The binder/ folder builds on mybinder.org: repo2docker reads it (checked without Docker), and the
README's badge opens JupyterLab on the quickstart notebook."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
BINDER = ROOT / "binder"


def github_repo() -> str:
    """docs/conf.py's GITHUB_REPO: the one place that names the GitHub org/repo (a placeholder until
    the project is published)."""
    tree = ast.parse((ROOT / "docs" / "conf.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["GITHUB_REPO"]:
            return ast.literal_eval(node.value)
    raise AssertionError("docs/conf.py defines no GITHUB_REPO")


@pytest.mark.timeout(90)
def test_repo2docker_dockerfile_runs_postbuild():
    # --no-build prints the Dockerfile repo2docker would build; it needs no Docker daemon.
    out = subprocess.run([sys.executable, "-m", "repo2docker", "--no-build", "--debug", str(ROOT)],
                         capture_output=True, text=True, timeout=80, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    dockerfile = out.stdout + out.stderr
    assert "python=3.11" in dockerfile or "python3.11" in dockerfile, "runtime.txt's python-3.11 was not picked up"
    assert re.search(r'pip install .*-r "?binder/requirements\.txt', dockerfile), "binder/requirements.txt not installed"
    assert re.search(r"^RUN \./binder/postBuild$", dockerfile, re.M), "the Dockerfile does not run binder/postBuild"


def test_binder_files_follow_repo2docker_conventions():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    text = post.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "set -euxo pipefail" in text and re.search(r"^python -m pip install \"\.\[dask,ray\]\"", text, re.M)
    assert "share/jupyter/lab/settings" in text and "binder/overrides.json" in text
    overrides = json.loads((BINDER / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
    # requirements.txt holds third-party packages only: jpar itself comes from postBuild
    reqs = [line for line in (BINDER / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert reqs and not any(r.startswith((".", "jpar")) for r in reqs)


def test_readme_binder_badge_opens_quickstart_in_jupyterlab():
    notebook = "notebooks/01_quickstart.ipynb"
    assert (ROOT / notebook).exists()
    url = f"https://mybinder.org/v2/gh/{github_repo()}/HEAD?urlpath=lab/tree/{notebook}"
    readme = (ROOT / "README.md").read_text()
    assert f"[![Launch Binder](https://mybinder.org/badge_logo.svg)]({url})" in readme
