"""Every real ALOR message under tests/fixtures/alor decodes through the public API into what its
``expect`` says: /ws data frames and payloads (route + decode_payload, and decode_frame), /ws
status replies and /cws replies (route, decode_status)."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

import alorws.protocol as proto
from alorws.protocol import (
    DataMessage,
    Format,
    StatusReply,
    decode_frame,
    decode_payload,
    decode_status,
    route,
)

from .._fixtures import cases, names


def _params(files: list[str]) -> list[Any]:
    return [
        pytest.param(f, case, id=f"{f.split('/')[-1]}-{case['name']}")
        for f in files
        for case in cases(f)
    ]


DATA = _params([f for f in names("ws") if f != "ws/status"])
STATUS = _params(["ws/status", "cws"])


def _encode(obj: Any) -> bytes:
    """JSON as the server writes it: compact, UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _read(obj: Any, path: str) -> Any:
    """The value at an ``expect`` path: ``a[0].b``; ``""`` is the whole value."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        obj = obj[int(part[1:-1])] if part.startswith("[") else getattr(obj, part)
    return obj


def check(obj: Any, expect: dict[str, Any], error: Any = None) -> None:
    """Every ``expect`` entry holds on ``obj``, with its JSON type (text stays text)."""
    for path, want in expect.items():
        if path == "error_type":
            assert type(error).__name__ == want, path
            continue
        got = _read(obj, path)
        if want == "<UNSET>":
            assert got is msgspec.UNSET, path
        elif want is None or isinstance(want, bool):
            assert got is want, (path, got)
        else:
            assert got == want, (path, got, want)
            if isinstance(want, str):
                assert isinstance(got, str), (path, got)
            elif isinstance(want, int | float):
                assert isinstance(got, int | float) and not isinstance(got, bool), (path, got)


@pytest.mark.parametrize(("file", "case"), DATA)
def test_data_message_decodes(file: str, case: dict[str, Any]) -> None:
    """A real data message decodes into its model with the expected values, by both paths."""
    model = getattr(proto, case["model"])
    fmt = Format(case["format"])
    if "payload" in case:  # a data object recorded without its envelope
        obj = decode_payload(_encode(case["payload"]), model, fmt)
        assert type(obj) is proto.format_class(model, fmt) and isinstance(obj, model)
        check(obj, case["expect"])
        return
    frame = _encode(case["frame"])
    routed = route(frame)
    assert isinstance(routed, DataMessage) and routed.guid == case["frame"]["guid"]
    two_pass = decode_payload(routed.data, model, fmt)
    one_pass = decode_frame(frame, model, fmt)
    assert two_pass == one_pass and isinstance(one_pass, model)
    check(one_pass, case["expect"])


@pytest.mark.parametrize(("file", "case"), STATUS)
def test_status_reply_decodes(file: str, case: dict[str, Any]) -> None:
    """A real /ws status reply or /cws reply routes to a StatusReply with the expected values."""
    frame = _encode(case["frame"])
    reply = route(frame)
    assert isinstance(reply, StatusReply)
    assert decode_status(frame) == reply
    assert reply.request_guid == case["frame"]["requestGuid"]
    assert reply.message == case["frame"]["message"]
    check(reply, case["expect"], reply.error())
    assert (reply.error() is None) is reply.ok


def test_every_fixture_file_is_covered() -> None:
    """The parametrization above reads every /ws and /cws fixture file there is."""
    assert {f for f, _ in (p.values for p in DATA + STATUS)} == {*names("ws"), "cws"}
