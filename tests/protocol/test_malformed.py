"""Malformed frames raise FrameError (a RemoteProtocolError) and never anything else."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, strategies as st

from alorws.errors import AlorError, FrameError, RemoteProtocolError
from alorws.protocol.codec import (
    STREAM_MODELS,
    DataMessage,
    StatusReply,
    decode_frame,
    decode_payload,
    decode_status,
    frame_guid,
    route,
)
from alorws.protocol.enums import Format
from alorws.protocol.market import Quote

from .._hostile import fuzz_settings


BAD_FRAMES = {
    "invalid json": b'{"data": {"c": 1}, "guid": ',
    "not json": b"pong",
    "empty": b"",
    "array": b"[1, 2]",
    "string": b'"hello"',
    "number": b"42",
    "empty object": b"{}",
    "unknown shape": b'{"foo": 1, "bar": [2]}',
    "data without guid": b'{"data": {"c": 1}}',
    "null guid": b'{"data": {"c": 1}, "guid": null}',
    "numeric guid": b'{"data": {"c": 1}, "guid": 17}',
    "empty guid": b'{"data": {"c": 1}, "guid": ""}',
    "null data, no requestGuid": b'{"data": null, "guid": "g"}',
    "status without code": b'{"requestGuid": "g", "message": "x"}',
    "status with string code": b'{"requestGuid": "g", "httpCode": "200"}',
    "status with float code": b'{"requestGuid": "g", "httpCode": 200.5}',
    "numeric requestGuid": b'{"requestGuid": 5, "httpCode": 200}',
    "non-utf8 bytes": b'{"data": {"c": 1}, "guid": "\xff\xfe"}',
    "non-utf8 garbage": b"\xff\xfe\xfd",
    "huge float": b'{"requestGuid": "g", "httpCode": 1e999}',
    "deep nesting": b'{"data": ' + b"[" * 50_000 + b"]" * 50_000 + b', "guid": "g"}',
    "truncated": b'{"data": {"c": 1}, "guid": "g"',
    "trailing junk": b'{"requestGuid": "g", "httpCode": 200} x',
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frame_raises_frame_error(frame: bytes) -> None:
    """Every kind of junk frame raises FrameError with a readable message."""
    with pytest.raises(FrameError) as info:
        route(frame)
    assert isinstance(info.value, RemoteProtocolError)
    assert "skipped" in str(info.value)


def test_text_frames_route_like_bytes() -> None:
    """A str frame routes the same as its UTF-8 bytes."""
    frame = '{"data": {"sym": "SBER"}, "guid": "q1"}'
    assert route(frame) == route(frame.encode())


def test_lone_surrogate_in_text_frame() -> None:
    """A str frame that is not valid Unicode raises FrameError."""
    with pytest.raises(FrameError):
        route('{"data": {}, "guid": "\ud800"}')


def test_unknown_fields_are_ignored() -> None:
    """ALOR adds fields over time: unknown keys in a known shape are ignored, not fatal."""
    msg = route(b'{"data": {"sym": "SBER", "zzz": [1, {"a": 2}]}, "guid": "q", "extra": 1}')
    assert isinstance(msg, DataMessage)
    q = decode_payload(msg.data, Quote, Format.SLIM)
    assert q.symbol == "SBER"
    status = route(b'{"requestGuid": "g", "httpCode": 200, "message": "ok", "new": true}')
    assert status == StatusReply("g", 200, "ok")


def test_status_order_number_kept_as_string() -> None:
    """A /cws reply's orderNumber is a string even when sent as a number."""
    assert decode_status(b'{"requestGuid":"a","httpCode":200,"orderNumber":123}').order_number == (
        "123"
    )


def test_decode_status_refuses_data() -> None:
    """decode_status raises FrameError for a data message."""
    with pytest.raises(FrameError):
        decode_status(b'{"data": {}, "guid": "g"}')


PAYLOADS = {
    "wrong type": (b'{"sym": "SBER", "c": "abc"}', "$.c"),
    "missing required": (b'{"c": 1.0}', "sym"),
    "huge float": (b'{"sym": "SBER", "c": 1e400}', "$.c"),
    "not an object": (b"[1, 2]", ""),
    "bad enum": (b'{"id": 1, "s": "sideways"}', "$.s"),
    "invalid json": (b'{"sym": ', ""),
    "non-utf8": (b'{"sym": "\xff"}', ""),
}


@pytest.mark.parametrize(("payload", "where"), PAYLOADS.values(), ids=PAYLOADS.keys())
def test_bad_payload_raises_frame_error(payload: bytes, where: str) -> None:
    """A payload that does not fit its model raises FrameError naming the bad field."""
    from alorws.protocol.market import Trade

    model = Trade if b'"s"' in payload else Quote
    with pytest.raises(FrameError) as info:
        decode_payload(payload, model, Format.SLIM)
    assert where in str(info.value)


def test_big_integers_are_not_truncated() -> None:
    """Volumes beyond 32 (and 64) bits decode exactly."""
    q = decode_payload(b'{"sym": "X", "v": 123456789012345678901}', Quote, Format.SLIM)
    assert q.volume == 123456789012345678901


@fuzz_settings(150)
@given(st.binary(max_size=200))
def test_route_fuzz_bytes(frame: bytes) -> None:
    """Arbitrary bytes either route or raise FrameError."""
    try:
        route(frame)
    except FrameError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE_KEYS = st.sampled_from(
    ["data", "guid", "requestGuid", "httpCode", "message", "orderNumber"]
)


@fuzz_settings(150)
@given(st.dictionaries(ENVELOPE_KEYS, JSON, max_size=6))
def test_route_fuzz_envelopes(obj: dict[str, object]) -> None:
    """Any JSON object with envelope keys either routes or raises FrameError."""
    try:
        msg = route(msgspec.json.encode(obj))
    except FrameError:
        return
    assert isinstance(msg, DataMessage | StatusReply)


def _compact(data: dict[str, object], middle: dict[str, object], guid: object) -> bytes:
    """``{"data":…,<middle keys>,"guid":…}`` as a server would write it (or a twisted one)."""
    out = b'{"data":' + msgspec.json.encode(data)
    for key, value in middle.items():
        out += b"," + msgspec.json.encode(key) + b":" + msgspec.json.encode(value)
    return out + b',"guid":' + msgspec.json.encode(guid) + b"}"


FRAMES = (
    st.builds(
        _compact,
        st.dictionaries(st.sampled_from(["sym", "guid", "x"]), JSON, max_size=3),
        st.dictionaries(ENVELOPE_KEYS, JSON, max_size=2),
        st.text(max_size=10) | JSON,
    )
    | st.dictionaries(ENVELOPE_KEYS, JSON, max_size=6).map(msgspec.json.encode)
    | st.binary(max_size=120)
)


@fuzz_settings(200)
@given(FRAMES)
def test_frame_guid_agrees_with_route(frame: bytes) -> None:
    """The fast path never raises, and whenever it names a guid, a valid frame is a data
    message of that guid for the full router too."""
    guid = frame_guid(frame)
    if guid is None:
        return
    assert frame.startswith(b'{"data":{')
    try:
        msg = route(frame)
    except FrameError:
        return  # corrupt: the stream's decode reports it
    assert isinstance(msg, DataMessage)
    assert msg.guid.encode() == guid


@pytest.mark.parametrize("model", [Quote])
@fuzz_settings(80)
@given(payload=st.dictionaries(st.text(max_size=6), JSON, max_size=6) | JSON)
def test_decode_frame_fuzz(model: type, payload: object) -> None:
    """Any frame decodes into the model or raises FrameError, nothing else."""
    frame = msgspec.json.encode({"data": payload, "guid": "g"})
    try:
        decode_frame(frame, model, Format.SIMPLE)
    except AlorError as exc:
        assert isinstance(exc, FrameError)


MODELS = sorted(set(STREAM_MODELS.values()), key=lambda m: m.__name__)


@pytest.mark.parametrize("fmt", list(Format))
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@fuzz_settings(30)
@given(payload=st.dictionaries(st.text(max_size=6), JSON, max_size=6) | JSON)
def test_decode_fuzz(model: type, fmt: Format, payload: object) -> None:
    """Any JSON payload decodes into the model or raises FrameError, nothing else."""
    try:
        decode_payload(msgspec.json.encode(payload), model, fmt)
    except AlorError as exc:
        assert isinstance(exc, FrameError)
