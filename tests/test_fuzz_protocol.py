"""The protocol fuzzer: the decoder over arbitrary input, and a live cluster under a flood.

The decoder must answer anything (random bytes, truncated or oversized frames, bad or missing
signatures, replays) with ProtocolError and nothing else. Live, every listening socket of a
cluster (head router on ipc and tcp, event stream, a driver's result socket, object servers)
takes junk, badly signed frames, replays and connection churn while a driver keeps submitting
tasks and checking their results: the cluster keeps serving, and the head's memory and log
stay bounded. ``make test`` runs a 5 s flood; ``make fuzz`` a long one (JPAR_FUZZ_SECONDS).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jpar
from jpar.runtime.wire import protocol as P
from jpar.backends.native import current_driver
from jpar.errors import ProtocolError
from jpar.runtime.store.segments import decode_location, is_location

from .conftest import jpar_children, wait_gone

settings.register_profile("long", max_examples=20000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
FUZZ_SECONDS = float(os.environ.get("JPAR_FUZZ_SECONDS", "5"))
LOG_BOUND = 64 * 1024            # bytes of head.log a flood may cause, whatever its length
RSS_BOUND = 300 * 1024 * 1024    # the head's peak resident memory under a flood

KEY = P.Signer(b"f" * 32)
MESSAGES = (P.Heartbeat(), P.Query(1, "status", None), P.Submit([]), P.Cancel(3, True, False),
            P.Events([P.Event(1.0, "task", 1, "x", None)]))


def valid(i: int) -> list:
    """Message ``i`` signed now: frames encoded at import would be refused as stale once the suite
    has run for the replay window, whatever the test changed in them."""
    frames = P.encode(MESSAGES[i], KEY)
    P.decode(frames, KEY)     # accepted as it is: a refusal below is the change's doing
    return frames


def _decode_refuses(frames, guard=None) -> None:
    try:
        P.decode(frames, KEY, guard)
    except ProtocolError:
        return
    raise AssertionError("decode accepted input it must refuse")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_random_frames_are_refused(frames):
    _decode_refuses(frames)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(MESSAGES) - 1), st.integers(0, 2), st.data())
def test_truncated_or_mutated_frames_are_refused(index, which, data):
    frames = list(valid(index))
    f = frames[which]
    if data.draw(st.booleans()) and f:
        cut = data.draw(st.integers(0, len(f) - 1))
        frames[which] = f[:cut]                                   # truncated
    else:
        i = data.draw(st.integers(0, max(0, len(f) - 1)))
        flip = data.draw(st.integers(1, 255))
        frames[which] = f[:i] + bytes([f[i] ^ flip]) + f[i + 1:] if f else b"\x01"   # one byte changed
    _decode_refuses(frames)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(MESSAGES) - 1), st.binary(min_size=1, max_size=64), st.integers(1, 3))
def test_extra_missing_or_oversized_frames_are_refused(index, extra, where):
    frames = list(valid(index))
    _decode_refuses(frames[:where - 1] + frames[where:])                  # one frame missing
    _decode_refuses(frames + [extra])                                     # one too many
    _decode_refuses([frames[0], frames[1], frames[2] + extra * (1 << 14)])   # oversized body, old signature
    _decode_refuses([b"", frames[1], frames[2]])                           # no signature


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(min_size=16, max_size=16), st.integers(0, 2**64 - 1),
       st.floats(allow_nan=True, allow_infinity=True))
def test_signed_garbage_is_refused_or_decoded_never_crashes(body, session, seq, sent):
    header = P.HEADER.pack(session, seq, sent)
    frames = [KEY.sign([header, body]), header, body]
    try:
        assert isinstance(P.decode(frames, KEY, P.ReplayGuard()), P.Message)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(MESSAGES) - 1), min_size=1, max_size=20))
def test_replays_are_refused(order):
    guard = P.ReplayGuard()
    sent = {i: valid(i) for i in set(order)}
    seen = set()
    for i in order:
        if i in seen:
            _decode_refuses(sent[i], guard)
        else:
            P.decode(sent[i], KEY, guard)
            seen.add(i)


# ---------------------------------------------------------------- live
ATTACKER = r'''
import json, os, random, sys, time, zmq
targets, seconds, recorded = json.loads(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
recorded = [[bytes.fromhex(f) for f in frames] for frames in recorded]
ctx = zmq.Context()
def sock(ep, kind):
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 1000)
    if kind == zmq.SUB:
        s.setsockopt(zmq.SUBSCRIBE, os.urandom(4))
    s.connect(ep)
    return s
socks = [(ep, kind, sock(ep, getattr(zmq, kind))) for ep, kind in targets]
rng = random.Random(1)
sent = churn = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for i, (ep, kind, s) in enumerate(socks):
        if kind == "SUB":
            s.setsockopt(zmq.SUBSCRIBE, os.urandom(rng.randint(0, 20)))   # junk subscriptions
            sent += 1
            continue
        for _ in range(50):
            r = rng.random()
            if r < 0.4:
                frames = [b"x" * 32, b"junk"]
            elif r < 0.6:
                frames = [os.urandom(rng.randint(0, 64)) for _ in range(rng.randint(1, 5))]
            elif r < 0.8:
                frames = [os.urandom(32), os.urandom(32), os.urandom(rng.randint(0, 4096))]   # bad signature
            else:
                frames = rng.choice(recorded)                                              # replay
            try:
                s.send_multipart(frames, zmq.DONTWAIT)
                sent += 1
            except zmq.Again:
                pass
        if rng.random() < 0.05:                                         # connection churn
            s.close()
            socks[i] = (ep, kind, sock(ep, getattr(zmq, kind)))
            churn += 1
print(json.dumps({"sent": sent, "churn": churn}))
'''


@pytest.mark.timeout(120 + 3 * FUZZ_SECONDS)
def test_a_cluster_keeps_serving_while_every_listening_socket_is_flooded():
    import numpy as np

    jpar.init(num_engines=2)
    d = current_driver()
    conn = d.conn
    rundir = conn["rundir"]
    head = psutil.Process(conn["pid"])
    try:
        @jpar.remote
        def big(n):
            return np.full(n, 7, dtype=np.uint8)

        @jpar.remote
        def inc(x):
            return x + 1

        ref = big.remote(1 << 20)                       # an engine's object server starts
        assert int(jpar.get(ref, timeout=30).sum()) == 7 << 20
        blob = d.results[ref.id][1]
        assert is_location(blob)
        targets = [(conn["head_ipc"], "DEALER"), (conn["head"], "DEALER"), (conn["events"], "SUB"),
                   (d.endpoint, "PUSH"), (decode_location(blob).endpoint, "DEALER"),
                   (d.store.server_endpoint(), "DEALER")]
        signer = P.Signer(bytes.fromhex(conn["key"]))
        session = P.Session()
        recorded = [[f.hex() for f in P.encode(m, signer, session)]
                    for m in (P.Heartbeat(), P.FetchObject(1, "x", 0, 10), P.Query(1, "status", None))]
        attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, json.dumps(targets), str(FUZZ_SECONDS),
                                     json.dumps(recorded)], stdout=subprocess.PIPE)
        served = 0
        peak = head.memory_info().rss
        try:
            while attacker.poll() is None:
                refs = [inc.remote(served + i) for i in range(10)]
                assert jpar.get(refs, timeout=60) == [served + i + 1 for i in range(10)]
                served += 10
                peak = max(peak, head.memory_info().rss)
        finally:
            out, _ = attacker.communicate(timeout=60)
        report = json.loads(out)
        assert jpar.get(inc.remote(1), timeout=60) == 2
        assert int(jpar.get(big.remote(1 << 20), timeout=60).sum()) == 7 << 20
        wire = d.query("status", timeout=30)["wire"]
        log_bytes = os.path.getsize(os.path.join(rundir, "head.log"))
        print(f"\nfuzz: {FUZZ_SECONDS:.0f} s, messages sent {report['sent']}, connections churned {report['churn']}, "
              f"tasks served {served}, head dropped {wire['dropped']} (replays refused {wire['replays_refused']}), "
              f"peak head RSS {peak / 2**20:.1f} MiB, head.log {log_bytes} bytes")
        assert served > 0 and report["sent"] > 0 and wire["dropped"] > 0
        assert log_bytes < LOG_BOUND
        assert peak < RSS_BOUND
    finally:
        procs = jpar_children()
        jpar.shutdown()
        assert wait_gone(procs) == []
        shutil.rmtree(rundir, ignore_errors=True)   # kept by the head: the run saw invalid messages
