"""Request frames real clients send (tests/fixtures/alor/requests.json) decode with the request
and command classes the simulator uses, into what alorws builds for the same request."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

import alorws.protocol as proto
from alorws.protocol import (
    AllTradesRequest,
    AnySubscriptionRequest,
    InstrumentRef,
    SubscriptionOpcode,
    SubscriptionRequest,
    User,
    decode_command,
    encode_authorize,
    encode_command,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
)

from .._fixtures import cases


CASES = [pytest.param(c, id=c["name"]) for c in cases("requests")]
_DECODE: Any = msgspec.json.Decoder(AnySubscriptionRequest).decode  # what the simulator does


def _frame(case: dict[str, Any]) -> bytes:
    return json.dumps(case["frame"], ensure_ascii=False).encode()


def _built(case: dict[str, Any]) -> Any:
    """What alorws builds from the case's ``alorws`` entry (class + kwargs)."""
    entry = case["alorws"]
    kwargs = dict(entry["kwargs"])
    if isinstance(kwargs.get("instrument"), dict):
        kwargs["instrument"] = InstrumentRef(**kwargs["instrument"])
    if isinstance(kwargs.get("user"), str):
        kwargs["user"] = User(kwargs["user"])
    if "order_statuses" in kwargs:
        kwargs["order_statuses"] = tuple(kwargs["order_statuses"])
    return getattr(proto, entry["class"])(**kwargs)


def _wire_name(cls: type[msgspec.Struct], field: str) -> str:
    return next(f.encode_name for f in msgspec.structs.fields(cls) if f.name == field)


@pytest.mark.parametrize("case", [c for c in CASES if "class" in c.values[0]["alorws"]])
def test_request_decodes_as_alorws_builds_it(case: dict[str, Any]) -> None:
    """The frame decodes (unknown keys, nulls, the old opcode, depth 0 and all) into the request
    alorws builds. A field the frame sets that alorws's entry leaves out (``instrumentGroup``
    on an account stream) must hold the frame's value."""
    built = _built(case)
    frame = _frame(case)
    if case["path"] == "/cws":
        decoded: Any = decode_command(frame)
    else:
        decoded = _DECODE(frame)
        assert isinstance(decoded, SubscriptionRequest)
    assert isinstance(decoded, type(built))
    assert decoded.opcode is built.opcode
    got = msgspec.structs.asdict(decoded)
    want = msgspec.structs.asdict(built)
    for field in set(want) - set(case["alorws"]["kwargs"]):
        if got[field] != want[field]:
            assert got[field] == case["frame"][_wire_name(type(built), field)], field
            got[field] = want[field]
    assert got == want


@pytest.mark.parametrize("case", [c for c in CASES if "class" in c.values[0]["alorws"]])
def test_what_alorws_sends_decodes_back(case: dict[str, Any]) -> None:
    """The frame alorws sends for the same request is accepted by the same decoder."""
    built = _built(case)
    if case["path"] == "/cws":
        assert decode_command(encode_command(built)) == built
    else:
        sent = encode_subscribe(built, guid="g-1", token="t")
        assert _DECODE(sent) == built


@pytest.mark.parametrize("case", [c for c in CASES if "fn" in c.values[0]["alorws"]])
def test_control_frames_match(case: dict[str, Any]) -> None:
    """ping, unsubscribe and authorize frames carry exactly the real frame's keys and values."""
    frame = case["frame"]
    encode = {
        "encode_ping": encode_ping,
        "encode_unsubscribe": encode_unsubscribe,
        "encode_authorize": encode_authorize,
    }[case["alorws"]["fn"]]
    assert json.loads(encode(frame["guid"], frame["token"])) == frame


def test_old_all_trades_opcode() -> None:
    """The web terminal's ``AllTradesSubscribe`` is an all-trades request in every field."""
    frame = b'{"opcode":"AllTradesSubscribe","code":"SBER","depth":5,"guid":"g","token":"t"}'
    decoded = _DECODE(frame)
    assert isinstance(decoded, AllTradesRequest)
    assert decoded.opcode is SubscriptionOpcode.ALL_TRADES
    assert msgspec.structs.asdict(decoded) == msgspec.structs.asdict(
        AllTradesRequest(code="SBER", depth=5)
    )


@pytest.mark.parametrize("board", ["null", '""'])
def test_no_board_is_no_board(board: str) -> None:
    """``instrumentGroup`` sent as null or "" is the same request as one without it."""
    frame = f'{{"opcode":"QuotesSubscribe","code":"SBER","instrumentGroup":{board}}}'
    assert _DECODE(frame) == proto.QuotesRequest(code="SBER")
    assert proto.QuotesRequest(code="SBER", instrument_group=None) == proto.QuotesRequest(
        code="SBER"
    )


def test_depth_zero_sends_no_history() -> None:
    """``depth=0`` (AlorPy's default) is a valid all-trades request and is sent as 0."""
    sent = json.loads(encode_subscribe(AllTradesRequest(code="SBER", depth=0), guid="g", token="t"))
    assert sent["depth"] == 0


@pytest.mark.parametrize(
    "cls",
    [
        proto.PositionsRequest,
        proto.SummariesRequest,
        proto.RisksRequest,
        proto.SpectraRisksRequest,
        proto.OwnTradesRequest,
        proto.OrdersRequest,
        proto.StopOrdersRequest,
    ],
)
def test_account_streams_send_a_board(cls: type[SubscriptionRequest]) -> None:
    """Every account stream request can carry ``instrumentGroup``, as AlorPy sends it."""
    request = cls(portfolio="D1", instrument_group="TQBR")  # type: ignore[call-arg]
    sent = json.loads(encode_subscribe(request, guid="g", token="t"))
    assert sent["instrumentGroup"] == "TQBR"
    assert "instrumentGroup" not in json.loads(
        encode_subscribe(cls(portfolio="D1"), guid="g", token="t")  # type: ignore[call-arg]
    )
