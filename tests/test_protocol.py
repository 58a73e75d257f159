"""The wire protocol: typed messages round-trip, anything unsigned, foreign or replayed is rejected."""

import pickle
import time

import pytest

from jpar.runtime.wire import protocol as P
from jpar.errors import ProtocolError

KEY = P.Signer(b"k" * 32)


def signed(body: bytes, session: bytes = b"s" * 16, seq: int = 1, sent: float | None = None) -> list:
    """Frames carrying ``body`` as a holder of KEY would sign them."""
    header = P.HEADER.pack(session, seq, time.time() if sent is None else sent)
    return [KEY.sign([header, body]), header, body]


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


def test_tampered_body_or_header_is_rejected():
    sig, header, body = P.encode(P.Query(1, "status"), KEY)
    with pytest.raises(ProtocolError, match="signature"):
        P.decode([sig, header, body[:-1] + b"X"], KEY)
    with pytest.raises(ProtocolError, match="signature"):   # the sequence number is signed too
        P.decode([sig, header[:16] + (99).to_bytes(8, "little") + header[24:], body], KEY)


def test_wrong_version_is_rejected():
    body = pickle.dumps((P.PROTOCOL_VERSION + 1, P.Heartbeat.CODE, []))
    with pytest.raises(ProtocolError, match="version"):
        P.decode(signed(body), KEY)


def test_a_replayed_message_is_refused_and_a_session_must_increase():
    guard = P.ReplayGuard()
    session = P.Session()
    first = P.encode(P.Hello("driver", 1, "h", "ipc://x", True), KEY, session)
    second = P.encode(P.Heartbeat(), KEY, session)
    assert isinstance(P.decode(first, KEY, guard), P.Hello)
    with pytest.raises(ProtocolError, match="replayed"):
        P.decode(first, KEY, guard)                     # the same frames again
    assert isinstance(P.decode(second, KEY, guard), P.Heartbeat)
    with pytest.raises(ProtocolError, match="replayed"):
        P.decode(first, KEY, guard)                     # an older one of the same session
    other = P.encode(P.Heartbeat(), KEY)                # another sender: its own sequence
    assert isinstance(P.decode(other, KEY, guard), P.Heartbeat)
    assert guard.refused == 2


def test_a_stale_message_is_refused_and_idle_sessions_are_forgotten():
    guard = P.ReplayGuard(window_s=60)
    body = pickle.dumps((P.PROTOCOL_VERSION, P.Heartbeat.CODE, []))
    with pytest.raises(ProtocolError, match="stale"):
        P.decode(signed(body, sent=time.time() - 61), KEY, guard)
    with pytest.raises(ProtocolError, match="stale"):
        P.decode(signed(body, sent=float("nan")), KEY, guard)
    P.decode(signed(body, session=b"a" * 16), KEY, guard)
    assert len(guard) == 1
    guard._last[b"a" * 16][1] -= 121         # idle for more than twice the window
    guard._next_sweep = 0
    P.decode(signed(body, session=b"b" * 16), KEY, guard)
    assert len(guard) == 1                   # "a" forgotten: its old messages are stale anyway


@pytest.mark.parametrize("payload", [
    (P.PROTOCOL_VERSION, 9999, []),                   # unknown code
    (P.PROTOCOL_VERSION, P.Query.CODE, [1]),          # missing fields
    (P.PROTOCOL_VERSION, P.Submit.CODE, [[(1, 2)]]),  # malformed record
    "not a tuple",
])
def test_signed_but_malformed_is_rejected(payload):
    body = pickle.dumps(payload)
    with pytest.raises(ProtocolError):
        P.decode(signed(body), KEY)


def test_too_few_frames_and_garbage():
    with pytest.raises(ProtocolError):
        P.decode([b"only one"], KEY)
    with pytest.raises(ProtocolError):
        P.decode([b"\x00" * 32, b"\xff\xfe garbage"], KEY)
    with pytest.raises(ProtocolError):
        P.decode([b"\x00" * 32, b"\x00" * 32, b"\xff\xfe garbage"], KEY)


def test_the_docs_state_the_current_version():
    import pathlib

    page = pathlib.Path(__file__).parent.parent / "docs" / "reference" / "protocol.md"
    assert f"# Wire protocol (version {P.PROTOCOL_VERSION})" in page.read_text()


def test_empty_key_refused():
    with pytest.raises(ProtocolError):
        P.Signer(b"")


def test_an_object_chunk_carries_its_bytes_as_a_signed_frame_of_their_own():
    data = bytes(range(256)) * 4096                      # 1 MiB
    frames = P.encode(P.ObjectChunk(7, 4096, 1 << 30, memoryview(data)[16:]), KEY)
    assert len(frames) == 4 and bytes(frames[3]) == data[16:] and len(frames[2]) < 200   # not in the pickle
    back = P.decode([*frames[:3], memoryview(bytes(frames[3]))], KEY)
    assert (back.req_id, back.offset, back.total, bytes(back.data)) == (7, 4096, 1 << 30, data[16:])


def test_attachment_frames_are_checked():
    chunk = P.encode(P.ObjectChunk(1, 0, 3, b"abc"), KEY)
    with pytest.raises(ProtocolError, match="signature"):    # the attachment is signed
        P.decode([*chunk[:3], b"abd"], KEY)
    sig, header, body, att = chunk
    with pytest.raises(ProtocolError, match="signature"):    # bytes moved from the body into it: refused
        P.decode([sig, header, body[:-1], body[-1:] + att], KEY)
    with pytest.raises(ProtocolError, match="needs attachment"):   # a chunk without one
        P.decode(signed(pickle.dumps((P.PROTOCOL_VERSION, P.ObjectChunk.CODE, [1, 0, 3, b""]))), KEY)
    hb = P.encode(P.Heartbeat(), KEY)                      # a message that takes none, given one
    header, body, extra = hb[1], hb[2], b"x"
    forged = [KEY.sign([header, body, P._BODY_LEN.pack(len(body)), extra]), header, body, extra]
    with pytest.raises(ProtocolError, match="takes no attachment"):
        P.decode(forged, KEY)
    with pytest.raises(ProtocolError, match="got 5 frame"):
        P.decode([*chunk, b"more"], KEY)
