"""The sidebar's server extension (jpar.labserver) in a real ``jupyter server`` on 127.0.0.1 with a
token: discovery, status, start/stop, remote heads, the server-sent event stream, and auth.

Clusters live in a private JPAR_RUNTIME_DIR; every head a test starts is stopped (by the API, and
by its pid if that failed).
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from .jupyter_servers import jupyter_app, process_gone

import jupyter_server  # noqa: E402,F401  (the test extra declares it: missing means a broken setup, not a skip)
pytestmark = pytest.mark.timeout(90)

from jpar.labserver import cluster_summary, routes, status_snapshot  # noqa: E402


class Server:
    def __init__(self, url: str, token: str, env: dict):
        self.url, self.token, self.env = url, token, env

    def call(self, method: str, path: str, body: dict | None = None, auth: bool = True, timeout: float = 40):
        headers = {"Authorization": f"token {self.token}"} if auth else {}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stream(self, until, timeout: float = 10.0) -> list:
        """Read /jpar/stream until ``until(events)`` holds; returns the (kind, data) events seen."""
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn.request("GET", "/jpar/stream", headers={"Authorization": f"token {self.token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        events, kind, deadline = [], None, time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                line = resp.fp.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if until(events):
                        return events
            raise AssertionError(f"stream condition not met in {timeout} s; saw {[k for k, _ in events]}")
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labserver")
    env = dict(os.environ, JPAR_RUNTIME_DIR=str(tmp / "jpar"), JUPYTER_RUNTIME_DIR=str(tmp / "rt"))
    with jupyter_app("jupyter_server", tmp, env, start_timeout=30) as (url, token):
        srv = Server(url, token, env)
        yield from _with_heads(srv)


def _with_heads(srv):
    srv.heads = []   # pids of heads started by the tests
    try:
        yield srv
    finally:
        for pid in srv.heads:   # whatever a failed test left running
            try:
                psutil.Process(pid).terminate()
            except psutil.Error:
                pass


def test_snapshot_from_status_needs_no_processes():
    st = {"cluster_id": "c1", "head": "tcp://h:1", "pid": 7, "uptime_s": 3.0,
          "engines": [{"id": 1, "pid": 11, "node": "n", "cpu": 5.0, "rss": 100, "task": 0, "queued": 0},
                      {"id": 0, "pid": 10, "node": "n", "cpu": 1.0, "rss": 50, "task": 3, "queued": 1}],
          "clients": [{"no": 1, "pid": 2, "kind": "driver", "host": "h"}, {"no": 2, "pid": 3, "kind": "lab", "host": "h"}],
          "scheduler": {"tasks": {"running": 1, "done": 4}, "actors": {"alive": 1}},
          "actors": [{"id": 5, "class": "Counter", "name": "", "state": "alive"}]}
    store = {"n": {"bytes_used": 10, "capacity": 100, "spilled_bytes": 0, "object_count": 2}}
    snap = status_snapshot(st, store, {0: {"cpu": 97.0, "rss": 80, "task": 3}}, rate=2.5)
    assert [e["id"] for e in snap["engines"]] == [0, 1]
    assert snap["engines"][0]["cpu"] == 97.0 and snap["engines"][0]["busy"] and not snap["engines"][1]["busy"]
    assert snap["store"] == {"used": 10, "capacity": 100, "spilled": 0, "objects": 2}
    assert [d["kind"] for d in snap["drivers"]] == ["driver"]          # the sidebar's own client is hidden
    assert snap["actors"][0]["class"] == "Counter" and snap["rate"] == 2.5
    assert "key" not in cluster_summary({"head": "tcp://h:1", "key": "ab", "cluster_id": "c1"})


METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH")


def _raw(server, method: str, path: str, headers: dict) -> int:
    """One request with exactly these headers (urllib would add its own Host)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        body = b"{}" if method in ("POST", "PUT", "PATCH") else None
        conn.request(method, path, body=body, headers=dict(headers, **{"Content-Type": "application/json"}))
        resp = conn.getresponse()
        return resp.status
    finally:
        conn.close()


def _route_methods() -> list[tuple[str, str]]:
    """Every route and every method its handler answers, from the list the server registers."""
    found = [(f"/jpar/{path}", m) for path, handler in routes() for m in METHODS if m.lower() in vars(handler)]
    assert ("/jpar/clusters", "DELETE") in found and len(found) >= 9, found
    return found


def test_routes_need_auth(server):
    """Every route, every method (DELETE included): no credentials, no answer."""
    for path, method in _route_methods():
        assert _raw(server, method, path, {}) == 403, (method, path)


def test_a_foreign_host_or_origin_is_refused_even_with_the_token(server):
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own Host; Jupyter refuses it on
    every route. A request that changes something from a page of another origin is refused by jpar
    (Jupyter lets a token-bearing one through); the server's own origin still gets an answer."""
    port = server.url.rsplit(":", 1)[1]
    token = {"Authorization": f"token {server.token}"}
    for path, method in _route_methods():
        assert _raw(server, method, path, dict(token, Host=f"evil.example:{port}")) == 403, (method, path)
        if method != "GET":
            assert _raw(server, method, path, dict(token, Origin="http://evil.example")) == 403, (method, path)
            assert _raw(server, method, path, dict(token, Origin=f"http://127.0.0.1:{port}:1")) == 403, (method, path)
    # the same requests from the server's own origin are answered (400/404: empty bodies, unknown clusters)
    assert _raw(server, "POST", "/jpar/cancel", dict(token, Origin=server.url)) in (400, 404)
    assert _raw(server, "DELETE", "/jpar/clusters?address=tcp://127.0.0.1:1", dict(token, Origin=server.url)) != 403
    assert _raw(server, "GET", "/jpar/clusters", dict(token, Origin="http://evil.example")) == 200   # reads are not changes


def test_cli_cluster_is_discovered_streamed_and_stopped(server):
    code, body = server.call("GET", "/jpar/clusters")
    assert code == 200 and body["clusters"] == []
    out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--head", "-n", "1"], env=server.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("pid ")[1].split(")")[0])
    server.heads.append(pid)
    address = out.stdout.split(" at ")[1].split()[0]
    try:
        t0 = time.monotonic()
        events = server.stream(lambda ev: any(k == "cluster" and d.get("address") == address and d.get("engines")
                                              for k, d in ev), timeout=10)
        assert time.monotonic() - t0 < 5
        lists = [d["clusters"] for k, d in events if k == "clusters"]
        assert any(c["address"] == address and c["pid"] == pid for c in lists[-1])
        snap = next(d for k, d in events if k == "cluster" and d.get("engines"))
        assert len(snap["engines"]) == 1 and "cpu" in snap["engines"][0] and snap["store"]["capacity"] > 0
        assert set(snap["tasks"]) >= {"queued", "running", "done"}

        code, st = server.call("GET", f"/jpar/status?address={address}")
        assert code == 200 and st["pid"] == pid and len(st["engines"]) == 1
        code, st = server.call("GET", "/jpar/status?address=tcp://127.0.0.1:1")
        assert code == 404 and "GET /jpar/clusters" in st["message"]

        code, res = server.call("POST", "/jpar/engines", {"address": address, "engines": 1})
        assert code == 200 and len(res["pids"]) == 1, res
        assert res["message"] == f"added engine {res['engine_ids'][0]} (+1 CPU)" and res["resources"] == {"CPU": 1.0}
        res_pids = res["pids"]
        st = server.call("GET", f"/jpar/status?address={address}")[1]   # answered once the engine has joined
        assert len(st["engines"]) == 2 and st["resources"] == {"CPU": 2.0}, st

        code, res = server.call("POST", "/jpar/stop", {"address": address})
        assert code == 200 and res["pid"] == pid
        assert process_gone(pid)
        assert all(process_gone(e) for e in res_pids)          # the added engine stops with its cluster
        code, body = server.call("GET", "/jpar/clusters")
        assert all(c["address"] != address for c in body["clusters"])
    finally:
        if not process_gone(pid, 0.1):
            psutil.Process(pid).terminate()


def test_remove_engines_and_cancel_a_drivers_tasks(server):
    import jpar
    from jpar.backends.native import resolve_address as _resolve_address
    from jpar.config import Config
    from jpar.runtime.driver.driver import Driver
    from jpar.backends.native import set_current_driver

    out = subprocess.run([sys.executable, "-m", "jpar.cli", "start", "--head", "-n", "2"], env=server.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("pid ")[1].split(")")[0])
    server.heads.append(pid)
    address = out.stdout.split(" at ")[1].split()[0]
    d = None
    try:
        code, body = server.call("GET", "/jpar/clusters")
        conn_file = next(c["file"] for c in body["clusters"] if c["address"] == address)
        config = Config.from_env()
        d = Driver(_resolve_address(conn_file, config), config)    # a notebook's driver on that cluster
        d.query("wait_engines", 2, timeout=30)
        engine_pids = {e["id"]: e["pid"] for e in d.query("status", timeout=10)["engines"]}

        for query in ("engines=0", "engines=two", "engine=x"):
            code, res = server.call("DELETE", f"/jpar/engines?address={address}&{query}")
            assert code == 400 and "integer" in res["message"], (query, res)
        code, res = server.call("DELETE", "/jpar/engines?address=tcp://127.0.0.1:1&engines=1")
        assert code == 404 and "GET /jpar/clusters" in res["message"]
        code, res = server.call("DELETE", f"/jpar/engines?address={address}&engine=99")
        assert code == 404 and "No engine with id 99" in res["message"]
        code, res = server.call("DELETE", f"/jpar/engines?address={address}&engines=1")
        assert code == 200 and res == {"address": address, "removed": [max(engine_pids)], "resources": {"CPU": -1.0},
                                       "message": f"removing engine {max(engine_pids)} (-1 CPU)"}, res
        code, st = server.call("GET", f"/jpar/status?address={address}")   # an idle engine leaves at once
        assert code == 200 and [e["id"] for e in st["engines"]] == [min(engine_pids)]
        assert process_gone(engine_pids[max(engine_pids)])
        code, res = server.call("DELETE", "/jpar/engines", {"address": address, "engines": 1})   # JSON body
        assert code == 400 and "keeps at least one engine" in res["message"]

        set_current_driver(d)
        try:
            ref = jpar.remote(time.sleep).remote(30)
        finally:
            set_current_driver(None)
        d.query("sync", timeout=10)                        # the head has the task
        for body in ({"address": address, "driver": "1"}, {"address": address, "driver": 1, "force": "no"}):
            code, res = server.call("POST", "/jpar/cancel", body)
            assert code == 400 and "driver" in res["message"], body
        code, res = server.call("POST", "/jpar/cancel", {"address": "tcp://127.0.0.1:1", "driver": 1})
        assert code == 404
        code, res = server.call("POST", "/jpar/cancel", {"address": address, "driver": 10_000})
        assert code == 404 and "No client" in res["message"]
        code, res = server.call("POST", "/jpar/cancel", {"address": address, "driver": d.client_no})
        assert code == 200 and res["cancelled"] == 1, res
        with pytest.raises(jpar.TaskCancelledError):
            d.get([ref], timeout=10)
    finally:
        if d is not None:
            d.close()
        code, _ = server.call("POST", "/jpar/stop", {"address": address})
        assert code == 200 and process_gone(pid)


def test_start_button_route_starts_a_detached_cluster(server):
    code, res = server.call("POST", "/jpar/start", {"engines": "two"})
    assert code == 400 and "integer" in res["message"]
    code, res = server.call("POST", "/jpar/start", {"engines": 2})
    assert code == 200, res
    server.heads.append(res["pid"])
    try:
        head = psutil.Process(res["pid"])
        assert head.ppid() != psutil.Process().pid   # detached: not a child of the server or of pytest
        deadline = time.monotonic() + 15      # the head answers before its engines have registered
        while True:
            code, st = server.call("GET", f"/jpar/status?address={res['address']}")
            if code != 200 or len(st["engines"]) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 200 and len(st["engines"]) == 2, st
    finally:
        code, _ = server.call("POST", "/jpar/stop", {"address": res["address"]})
        assert code == 200
        assert process_gone(res["pid"])


def test_remote_heads_added_by_address(server):
    code, res = server.call("POST", "/jpar/clusters", {"address": "not an address", "key": "00" * 32})
    assert code == 400 and "tcp://HOST:PORT" in res["message"]
    code, res = server.call("POST", "/jpar/clusters", {"address": "tcp://10.0.0.9:5555"})
    assert code == 400 and "key" in res["message"]
    code, res = server.call("POST", "/jpar/clusters", {"address": "tcp://10.0.0.9:5555", "key": "ab" * 32})
    assert code == 200 and res["remote"] is True
    code, body = server.call("GET", "/jpar/clusters")
    assert [c["address"] for c in body["clusters"] if c["remote"]] == ["tcp://10.0.0.9:5555"]
    code, res = server.call("DELETE", "/jpar/clusters?address=tcp://10.0.0.9:5555")
    assert code == 200 and res["removed"] is True
    code, body = server.call("GET", "/jpar/clusters")
    assert not any(c["remote"] for c in body["clusters"])


def test_prebuilt_extension_is_shipped_and_enabled():
    """The build (make compiles jupyter_ext/ into jpar/labextension/) is complete and installed."""
    import jpar

    built = __import__("pathlib").Path(jpar.__file__).parent / "labextension"
    meta = json.loads((built / "package.json").read_text())
    assert meta["name"] == "jpar" and (built / meta["jupyterlab"]["_build"]["load"]).exists()
    out = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True, text=True,
                         timeout=60)
    text = out.stdout + out.stderr
    line = next((ln for ln in text.splitlines() if ln.strip().startswith("jpar ")), "")
    assert "enabled" in line and "OK" in line, text
    out = subprocess.run([sys.executable, "-m", "jupyter_server.extension.serverextension", "list"],
                         capture_output=True, text=True, timeout=60)
    assert "jpar.labserver" in out.stdout + out.stderr and "enabled" in out.stdout + out.stderr


def test_wheel_ships_the_prebuilt_extension(tmp_path):
    """The wheel carries the built sidebar and the server extension's switch, so installing it needs
    no Node: installed into an empty prefix, JupyterLab finds the extension there."""
    import zipfile

    import jpar

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(pathlib.Path(jpar.__file__).parent.parent)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("jpar-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    built = pathlib.Path(jpar.__file__).parent / "labextension"
    for f in built.rglob("*"):
        if f.is_file():
            assert f"jpar-0.1.0.data/data/share/jupyter/labextensions/jpar/{f.relative_to(built)}" in names
    assert "jpar-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/jpar.json" in names
    from jpar.multiprocessing import fastsync
    if fastsync._slotlock is not None:   # built here (tests/test_mp_slotlock.py): the wheel carries it, tagged
        assert [n for n in names if n.startswith("jpar/multiprocessing/_slotlock.") and n.endswith(".so")], names
        assert not wheel.name.endswith("-none-any.whl"), wheel.name
    prefix = tmp_path / "prefix"   # --ignore-installed: never uninstall the jpar under test
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q",
                          "--prefix", str(prefix), str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    env = dict(os.environ, JUPYTER_PATH=str(prefix / "share" / "jupyter"), PATH="/usr/sbin:/sbin")   # no node
    out = subprocess.run([sys.executable, "-m", "jupyterlab.labextensions", "list"], capture_output=True, text=True,
                         timeout=60, env=env)
    text = out.stdout + out.stderr
    section = text.split(str(prefix / "share" / "jupyter" / "labextensions"), 1)[-1].strip().splitlines()
    assert section and section[0].split()[0] == "jpar" and "enabled" in section[0] and "OK" in section[0], text
