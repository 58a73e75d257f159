"""The test harness's Jupyter server start: it must reach its own server whatever else holds ports.

A port chosen before the server starts can be taken in between by anything on the machine (the
suite's own clusters bind ZeroMQ sockets on random ports all the time); the server then moves to
another port, and a harness that kept the port it chose talked to a ZeroMQ socket instead
(``http.client.BadStatusLine: ÿ`` at fixture setup). The harness reads the port the server reports.
"""

import json
import urllib.request

import psutil
import pytest
import zmq

from .jupyter_servers import jupyter_app

pytestmark = pytest.mark.timeout(90)


def _listening_ports() -> set:
    """TCP ports our child processes listen on; a child that exits meanwhile (the server starts and
    reaps short-lived helpers) is skipped: a CI run failed here on such a process with NoSuchProcess."""
    ports = set()
    for p in psutil.Process().children(recursive=True):
        try:
            ports.update(c.laddr.port for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return ports


def test_a_port_taken_by_a_zeromq_socket_does_not_fool_the_harness(tmp_path):
    ctx = zmq.Context()
    squatter = ctx.socket(zmq.ROUTER)
    try:
        taken = squatter.bind_to_random_port("tcp://127.0.0.1")
        # the server is asked for the taken port (as if it had been taken after being chosen)
        with jupyter_app("jupyter_server", tmp_path, port=taken, start_timeout=60) as (url, token):
            port = int(url.rsplit(":", 1)[1])
            assert port != taken
            status = json.loads(urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=10).read())
            assert "started" in status
            assert port in _listening_ports()
    finally:
        squatter.close(0)
        ctx.term()
