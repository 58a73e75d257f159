"""A Jupyter application (JupyterLab, Notebook 7, a bare jupyter_server) and Debian's headless Chromium
for the tests that look at jpar the way a person does. One copy of the start / wait / stop dance."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
import uuid

import psutil
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
NO_NEWS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}


@contextlib.contextmanager
def jupyter_app(app: str, root: pathlib.Path, env: dict | None = None, args: tuple = (), start_timeout: float = 40,
                port: int = 0):
    """Run ``python -m <app>`` on 127.0.0.1 with a token and a free port, serving ``root``; yields
    (url, token). On exit its kernels are shut down first (their atexit stops the jpar clusters
    they started), then the server is stopped by its pid."""
    token = uuid.uuid4().hex
    env = dict(env or os.environ)
    # Port 0: the server binds a port the OS gives it and writes it to its runtime file. A port picked
    # here and handed over could be taken in between (the tests' own clusters bind random ports all the
    # time; a ZeroMQ socket answering on it made a fixture fail with BadStatusLine), and a taken port
    # would make the server move to another one silently.
    runtime = pathlib.Path(env.setdefault("JUPYTER_RUNTIME_DIR", str(root / f"rt-{uuid.uuid4().hex[:8]}")))
    log_path = root / f"{app}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.token={token}",
         "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={root}", *args],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = ""
    try:
        deadline = time.monotonic() + start_timeout
        info = runtime / f"jpserver-{proc.pid}.json"
        while True:
            try:
                if not url:
                    url = f"http://127.0.0.1:{json.loads(info.read_text())['port']}"
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except (OSError, ValueError, KeyError):     # no file yet, half written, or not answering yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{app} did not start:\n" + log_path.read_text()[-3000:]) from None
                time.sleep(0.3)   # the server gives no other readiness signal than its file and answering
        yield url, token
    finally:
        try:
            for k in json.loads(urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5).read()) if url else []:
                req = urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=15).read()
        except OSError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def lab_env(tmp_path: pathlib.Path, **extra: str) -> tuple[dict, pathlib.Path]:
    """Environment and settings directory of a throwaway JupyterLab (no news popup, own workspaces)."""
    settings = tmp_path / "settings"
    settings.mkdir(exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(NO_NEWS))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               **extra)
    return env, settings


def require_chromium() -> None:
    """Fail (not skip) without Debian's chromium: ``make test`` installs it, so its absence is a
    broken setup that must not pass as a green run with the browser tests skipped."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium; run `make browser` "
                    "(never `playwright install`)", pytrace=False)


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def open_notebook(page, url: str, token: str, name: str, timeout: int = 45_000) -> None:
    """Open ``name`` in a JupyterLab workspace of its own and wait until its kernel is idle."""
    page.goto(f"{url}/lab/workspaces/t{uuid.uuid4().hex[:8]}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell", timeout=timeout)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle'; }", timeout=timeout)


def process_gone(pid: int, timeout: float = 15.0) -> bool:
    """Whether process ``pid`` has ended (waiting up to ``timeout`` seconds for it to); an exited
    process its parent has not reaped yet (a zombie) has ended."""
    try:
        proc = psutil.Process(pid)
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True
    return True
