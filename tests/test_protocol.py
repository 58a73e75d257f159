"""The wire protocol: typed messages round-trip, anything unsigned or foreign is rejected."""

import pickle

import pytest

from jpar import protocol as P
from jpar.errors import ProtocolError

KEY = P.Signer(b"k" * 32)


def spec(tid=1):
    return P.TaskSpec(tid, 7, "f", b"args", (), 1, (("CPU", 1.0),), 3, False, 0, 0, -1)


def test_every_message_round_trips_with_records_typed():
    msg = P.Submit([spec(1), spec(2)])
    back = P.decode(P.encode(msg, KEY), KEY)
    assert isinstance(back, P.Submit)
    assert back.tasks == [spec(1), spec(2)]
    assert isinstance(back.tasks[0], P.TaskSpec)


def test_codes_are_unique_and_describe_lists_them():
    codes = [c for c, _, _ in P.describe()]
    assert len(codes) == len(set(codes)) == len(P.MESSAGES)


def test_wrong_key_is_rejected():
    frames = P.encode(P.Heartbeat(), P.Signer(b"other key"))
    with pytest.raises(ProtocolError, match="signature"):
        P.decode(frames, KEY)


def test_tampered_body_is_rejected():
    sig, body = P.encode(P.Query(1, "status"), KEY)
    with pytest.raises(ProtocolError, match="signature"):
        P.decode([sig, body[:-1] + b"X"], KEY)


def test_wrong_version_is_rejected():
    body = pickle.dumps((P.PROTOCOL_VERSION + 1, P.Heartbeat.CODE, []))
    with pytest.raises(ProtocolError, match="version"):
        P.decode([KEY.sign([body]), body], KEY)


@pytest.mark.parametrize("payload", [
    (P.PROTOCOL_VERSION, 9999, []),                   # unknown code
    (P.PROTOCOL_VERSION, P.Query.CODE, [1]),          # missing fields
    (P.PROTOCOL_VERSION, P.Submit.CODE, [[(1, 2)]]),  # malformed record
    "not a tuple",
])
def test_signed_but_malformed_is_rejected(payload):
    body = pickle.dumps(payload)
    with pytest.raises(ProtocolError):
        P.decode([KEY.sign([body]), body], KEY)


def test_too_few_frames_and_garbage():
    with pytest.raises(ProtocolError):
        P.decode([b"only one"], KEY)
    with pytest.raises(ProtocolError):
        P.decode([b"\x00" * 32, b"\xff\xfe garbage"], KEY)


def test_empty_key_refused():
    with pytest.raises(ProtocolError):
        P.Signer(b"")
