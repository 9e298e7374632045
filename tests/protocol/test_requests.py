"""/ws subscription requests (docs/protocol.md §4): building, validation, encoding, decoding
(TV-01, TV-16)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from alorws.errors import InvalidArgumentError
from alorws.protocol.enums import Exchange, Format, OrderStatus, SubscriptionOpcode
from alorws.protocol.requests import (
    REQUEST_TYPES,
    AllTradesRequest,
    AnySubscriptionRequest,
    BarsRequest,
    ClustersRequest,
    InstrumentRequest,
    OrderBookRequest,
    OrdersRequest,
    OwnTradesRequest,
    PositionsRequest,
    QuotesRequest,
    RisksRequest,
    SpectraRisksRequest,
    StopOrdersRequest,
    SubscriptionRequest,
    SummariesRequest,
    encode_ping,
    encode_subscribe,
    encode_unsubscribe,
    validate_guid,
)


TOKEN = "eyJhbGciOiJFUzI1NiJ9.e30.sig"
GUID = "7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"

TV01 = '{"opcode":"OrderBookGetAndSubscribe","code":"SBER","exchange":"MOEX","instrumentGroup":"TQBR","depth":5,"format":"Slim","frequency":50,"guid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01","token":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}'  # noqa: E501
TV16 = '{"opcode":"unsubscribe","guid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01","token":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}'  # noqa: E501

# The smallest valid request of each opcode (required fields only).
MINIMAL: dict[type[SubscriptionRequest], dict[str, Any]] = {
    OrderBookRequest: {"code": "SBER"},
    QuotesRequest: {"code": "SBER"},
    BarsRequest: {"code": "SBER", "tf": 60, "from_": 1750662000},
    AllTradesRequest: {"code": "SBER"},
    InstrumentRequest: {"code": "SBER"},
    PositionsRequest: {"portfolio": "D10456"},
    SummariesRequest: {"portfolio": "D10456"},
    RisksRequest: {"portfolio": "D10456"},
    SpectraRisksRequest: {"portfolio": "7500XYZ"},
    OwnTradesRequest: {"portfolio": "D10456"},
    OrdersRequest: {"portfolio": "D10456"},
    StopOrdersRequest: {"portfolio": "D10456"},
    ClustersRequest: {"code": "SBER", "tf": 60, "from_": 1750662000},
}

# Every field of each opcode set (docs/protocol.md §4 tables).
FULL: dict[type[SubscriptionRequest], dict[str, Any]] = {
    OrderBookRequest: {"code": "LKOH", "instrument_group": "TQBR", "depth": 10, "frequency": 100},
    QuotesRequest: {"code": "GAZP", "instrument_group": "TQBR", "frequency": 25},
    BarsRequest: {
        "code": "SBER",
        "tf": "3600",
        "from_": 1750662000,
        "skip_history": False,
        "split_adjust": True,
        "instrument_group": "TQBR",
        "frequency": 250,
        "slice_mode": "DailyIntervals",
    },
    AllTradesRequest: {
        "code": "SBER",
        "instrument_group": "TQBR",
        "depth": 5000,
        "include_virtual_trades": True,
    },
    InstrumentRequest: {"code": "SiU5", "instrument_group": "RFUD"},
    PositionsRequest: {"portfolio": "D10456", "skip_history": True},
    SummariesRequest: {"portfolio": "D10456", "skip_history": False},
    RisksRequest: {"portfolio": "D10456", "skip_history": True},
    SpectraRisksRequest: {"portfolio": "7500XYZ", "skip_history": True},
    OwnTradesRequest: {"portfolio": "D10456", "skip_history": True},
    OrdersRequest: {
        "portfolio": "D10456",
        "skip_history": False,
        "order_statuses": (OrderStatus.WORKING, OrderStatus.FILLED),
    },
    StopOrdersRequest: {
        "portfolio": "D10456",
        "skip_history": False,
        "order_statuses": (OrderStatus.CANCELED, OrderStatus.REJECTED),
    },
    ClustersRequest: {"code": "SBER", "tf": "d", "from_": 1750662000},
}

# Wire keys each opcode may send beyond opcode/guid/token (docs/protocol.md §3.2 envelope +
# docs/protocol.md §4 table).
WIRE_KEYS: dict[type[SubscriptionRequest], set[str]] = {
    OrderBookRequest: {"code", "instrumentGroup", "depth", "frequency"},
    QuotesRequest: {"code", "instrumentGroup", "frequency"},
    BarsRequest: {
        "code",
        "tf",
        "from",
        "skipHistory",
        "splitAdjust",
        "instrumentGroup",
        "frequency",
        "sliceMode",
    },
    AllTradesRequest: {"code", "instrumentGroup", "depth", "includeVirtualTrades"},
    InstrumentRequest: {"code", "instrumentGroup"},
    PositionsRequest: {"portfolio", "skipHistory"},
    SummariesRequest: {"portfolio", "skipHistory"},
    RisksRequest: {"portfolio", "skipHistory"},
    SpectraRisksRequest: {"portfolio", "skipHistory"},
    OwnTradesRequest: {"portfolio", "skipHistory"},
    OrdersRequest: {"portfolio", "skipHistory", "orderStatuses"},
    StopOrdersRequest: {"portfolio", "skipHistory", "orderStatuses"},
    ClustersRequest: {"code", "tf", "from"},
}

CLASSES = list(MINIMAL)


def _sent(request: SubscriptionRequest, guid: str = GUID) -> dict[str, Any]:
    frame = encode_subscribe(request, guid=guid, token=TOKEN)
    decoded: dict[str, Any] = msgspec.json.decode(frame)
    return decoded


# -- test vectors -----------------------------------------------------------------------------


def test_tv01_order_book_request() -> None:
    """TV-01: the order-book subscribe frame is the documented JSON object."""
    request = OrderBookRequest(
        code="SBER",
        exchange=Exchange.MOEX,
        instrument_group="TQBR",
        depth=5,
        format=Format.SLIM,
        frequency=50,
    )
    built = encode_subscribe(request, guid=GUID, token=TOKEN)
    assert msgspec.json.decode(built) == msgspec.json.decode(TV01)


def test_tv01_decodes_back_to_the_request() -> None:
    """TV-01: the simulator's decode of the vector equals the request we built."""
    decoded = msgspec.json.decode(TV01, type=AnySubscriptionRequest)
    assert decoded == OrderBookRequest(
        code="SBER", instrument_group="TQBR", depth=5, format=Format.SLIM, frequency=50
    )


def test_tv16_unsubscribe() -> None:
    """TV-16: unsubscribe carries the subscription's guid and the token, lowercase opcode."""
    assert msgspec.json.decode(encode_unsubscribe(GUID, TOKEN)) == msgspec.json.decode(TV16)


def test_ping_frame() -> None:
    """Ping is {opcode: ping, guid, confirm: true, token} (docs/protocol.md §3.7)."""
    assert msgspec.json.decode(encode_ping("p-1", TOKEN)) == {
        "opcode": "ping",
        "guid": "p-1",
        "confirm": True,
        "token": TOKEN,
    }


# -- every opcode -----------------------------------------------------------------------------


def test_request_types_cover_every_opcode() -> None:
    """REQUEST_TYPES maps every subscription opcode to the class tagged with it."""
    assert set(REQUEST_TYPES) == set(SubscriptionOpcode)
    assert set(REQUEST_TYPES.values()) == set(CLASSES)
    for opcode, cls in REQUEST_TYPES.items():
        assert cls.opcode is opcode
        assert cls.__struct_config__.tag == opcode.value


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_minimal_request_builds(cls: type[SubscriptionRequest]) -> None:
    """Each opcode builds from its required fields; the frame has the documented opcode."""
    request = cls(**MINIMAL[cls])
    sent = _sent(request)
    assert sent["opcode"] == cls.opcode.value
    assert request.opcode is cls.opcode
    assert sent["guid"] == GUID and sent["token"] == TOKEN
    assert sent["exchange"] == "MOEX" and sent["format"] == "Simple"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_unset_optionals_are_absent(cls: type[SubscriptionRequest]) -> None:
    """Optional fields left UNSET are not in the JSON; envelope defaults (and book depth) are."""
    sent = _sent(cls(**MINIMAL[cls]))
    required = {k for k in WIRE_KEYS[cls] if k in {"code", "portfolio", "tf", "from"}}
    expected = {"opcode", "guid", "token", "exchange", "format"} | required
    if cls is OrderBookRequest:
        expected.add("depth")
        assert sent["depth"] == 20
    assert set(sent) == expected


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_full_request_sends_exactly_its_table_fields(cls: type[SubscriptionRequest]) -> None:
    """With every field set, the frame has exactly the docs/protocol.md §4 table's keys plus the
    envelope."""
    sent = _sent(cls(**FULL[cls]))
    assert set(sent) == WIRE_KEYS[cls] | {"opcode", "guid", "token", "exchange", "format"}


@pytest.mark.parametrize("kwargs", [MINIMAL, FULL], ids=["minimal", "full"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_decode_round_trip(
    cls: type[SubscriptionRequest], kwargs: dict[type[SubscriptionRequest], dict[str, Any]]
) -> None:
    """A built frame decoded with AnySubscriptionRequest gives back an equal request."""
    request = cls(**kwargs[cls], exchange=Exchange.SPBX, format=Format.HEAVY)
    frame = encode_subscribe(request, guid=GUID, token=TOKEN)
    decoded = msgspec.json.decode(frame, type=AnySubscriptionRequest)
    assert type(decoded) is cls
    assert decoded == request
    assert hash(decoded) == hash(request)


def test_from_is_sent_as_from() -> None:
    """``from_`` goes on the wire as ``from`` (a Python keyword)."""
    sent = _sent(BarsRequest(code="SBER", tf=60, from_=1750662000))
    assert sent["from"] == 1750662000 and "from_" not in sent
    assert sent["tf"] == "60"


# -- values and normalization -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("simple", "Simple"),
        ("SLIM", "Slim"),
        ("hEaVy", "Heavy"),
        (Format.SLIM, "Slim"),
    ],
)
def test_format_any_case_sent_documented(given: Any, sent: str) -> None:
    """A format given in any case is sent in its documented spelling (docs/protocol.md §3.2)."""
    request = QuotesRequest(code="SBER", format=given)
    assert request.format is Format(sent)
    assert _sent(request)["format"] == sent


@pytest.mark.parametrize(
    ("given", "sent"), [("moex", "MOEX"), ("Spbx", "SPBX"), ("united", "UNITED")]
)
def test_exchange_any_case_sent_documented(given: str, sent: str) -> None:
    """Exchange codes are accepted in any case and sent upper-case."""
    assert _sent(PositionsRequest(portfolio="E1", exchange=given))["exchange"] == sent  # type: ignore[arg-type]


def test_order_statuses_any_case_and_any_iterable() -> None:
    """Statuses may be strings in any case, in a list: they become a tuple of members."""
    request = OrdersRequest(portfolio="D1", order_statuses=["WORKING", "Filled"])  # type: ignore[arg-type]
    assert request.order_statuses == (OrderStatus.WORKING, OrderStatus.FILLED)
    assert _sent(request)["orderStatuses"] == ["working", "filled"]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (1, "1"),
        (60, "60"),
        ("300", "300"),
        ("0060", "60"),
        (14400, "14400"),
        ("D", "D"),
        ("d", "D"),
        ("w", "W"),
        ("M", "M"),
        ("y", "Y"),
    ],
)
@pytest.mark.parametrize("cls", [BarsRequest, ClustersRequest], ids=lambda c: c.__name__)
def test_tf_normalized(cls: type[BarsRequest | ClustersRequest], given: Any, sent: str) -> None:
    """tf accepts int or str seconds and D/W/M/Y in any case (docs/protocol.md §4.3); it is sent as
    a string."""
    request = cls(code="SBER", tf=given, from_=0)
    assert request.tf == sent
    assert _sent(request)["tf"] == sent


def test_tf_int_and_str_requests_are_equal() -> None:
    """tf=60 and tf='60' are the same subscription."""
    a = BarsRequest(code="SBER", tf=60, from_=1)
    b = BarsRequest(code="SBER", tf="60", from_=1)
    assert a == b and hash(a) == hash(b)


def test_frequency_is_not_clamped() -> None:
    """Frequency below the format minimum is sent as is: the server clamps it
    (docs/protocol.md §12.4)."""
    request = OrderBookRequest(code="SBER", format=Format.HEAVY, frequency=0)
    assert Format.HEAVY.min_frequency_ms == 500
    assert _sent(request)["frequency"] == 0


@pytest.mark.parametrize("depth", [1, 20, 50])
def test_book_depth_bounds_accepted(depth: int) -> None:
    """Book depth 1..50 is accepted (docs/protocol.md §4.1)."""
    assert _sent(OrderBookRequest(code="SBER", depth=depth))["depth"] == depth


@pytest.mark.parametrize("depth", [1, 100, 5000])
def test_all_trades_depth_bounds_accepted(depth: int) -> None:
    """All-trades depth 1..5000 is accepted (docs/protocol.md §4.4)."""
    assert _sent(AllTradesRequest(code="SBER", depth=depth))["depth"] == depth


# -- hashing and equality ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_requests_are_hashable_values(cls: type[SubscriptionRequest]) -> None:
    """Equal requests hash equal and collapse to one entry in a set."""
    a, b = cls(**FULL[cls]), cls(**FULL[cls])
    assert a == b and a is not b and hash(a) == hash(b)
    assert len({a, b, cls(**MINIMAL[cls])}) == 2


def test_requests_differ_by_format_and_exchange() -> None:
    """The same instrument in two formats (or exchanges) is two subscriptions."""
    base = QuotesRequest(code="SBER")
    assert base != QuotesRequest(code="SBER", format=Format.SLIM)
    assert base != QuotesRequest(code="SBER", exchange=Exchange.SPBX)
    assert base == QuotesRequest(code="SBER", format="simple", exchange="moex")  # type: ignore[arg-type]


def test_requests_of_different_opcodes_are_not_equal() -> None:
    """Positions and summaries of one portfolio are different subscriptions."""
    positions: SubscriptionRequest = PositionsRequest(portfolio="D1")
    assert positions != SummariesRequest(portfolio="D1")


def test_requests_are_frozen() -> None:
    """Requests cannot be mutated (they key a registry)."""
    request = QuotesRequest(code="SBER")
    with pytest.raises(AttributeError):
        request.code = "GAZP"  # type: ignore[misc]


# -- validation -------------------------------------------------------------------------------

INVALID: list[tuple[type[SubscriptionRequest], dict[str, Any], str]] = [
    (OrderBookRequest, {"code": ""}, "code"),
    (OrderBookRequest, {"code": "   "}, "code"),
    (OrderBookRequest, {"code": None}, "code"),
    (OrderBookRequest, {"code": "SBER", "depth": 0}, "depth"),
    (OrderBookRequest, {"code": "SBER", "depth": 51}, "depth"),
    (OrderBookRequest, {"code": "SBER", "depth": -1}, "depth"),
    (OrderBookRequest, {"code": "SBER", "depth": 10.0}, "depth"),
    (OrderBookRequest, {"code": "SBER", "depth": True}, "depth"),
    (OrderBookRequest, {"code": "SBER", "frequency": -1}, "frequency"),
    (OrderBookRequest, {"code": "SBER", "frequency": 1.5}, "frequency"),
    (OrderBookRequest, {"code": "SBER", "frequency": "100"}, "frequency"),
    (OrderBookRequest, {"code": "SBER", "instrument_group": "  "}, "instrument_group"),
    (OrderBookRequest, {"code": "SBER", "instrument_group": 5}, "instrument_group"),
    (OrderBookRequest, {"code": "SBER", "format": "Fat"}, "format"),
    (OrderBookRequest, {"code": "SBER", "format": 1}, "format"),
    (OrderBookRequest, {"code": "SBER", "exchange": "NYSE"}, "exchange"),
    (QuotesRequest, {"code": "SBER", "frequency": -5}, "frequency"),
    (AllTradesRequest, {"code": "SBER", "depth": -1}, "depth"),
    (AllTradesRequest, {"code": "SBER", "depth": 5001}, "depth"),
    (AllTradesRequest, {"code": "SBER", "include_virtual_trades": 1}, "include_virtual_trades"),
    (BarsRequest, {"code": "SBER", "tf": 0, "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": -60, "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": "0", "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": "1.5", "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": "H", "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": "", "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": 60.0, "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": True, "from_": 0}, "tf"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": -1}, "from_"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": 1.5}, "from_"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": 0, "frequency": -1}, "frequency"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": 0, "skip_history": "no"}, "skip_history"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": 0, "split_adjust": 0}, "split_adjust"),
    (BarsRequest, {"code": "SBER", "tf": "60", "from_": 0, "slice_mode": ""}, "slice_mode"),
    (BarsRequest, {"code": "", "tf": "60", "from_": 0}, "code"),
    (ClustersRequest, {"code": "SBER", "tf": "x", "from_": 0}, "tf"),
    (ClustersRequest, {"code": "SBER", "tf": 60, "from_": -1}, "from_"),
    (InstrumentRequest, {"code": ""}, "code"),
    (PositionsRequest, {"portfolio": ""}, "portfolio"),
    (SummariesRequest, {"portfolio": ""}, "portfolio"),
    (RisksRequest, {"portfolio": " "}, "portfolio"),
    (SpectraRisksRequest, {"portfolio": ""}, "portfolio"),
    (OwnTradesRequest, {"portfolio": ""}, "portfolio"),
    (OwnTradesRequest, {"portfolio": "D1", "skip_history": None}, "skip_history"),
    (OrdersRequest, {"portfolio": ""}, "portfolio"),
    (OrdersRequest, {"portfolio": "D1", "order_statuses": ("active",)}, "order_statuses"),
    (OrdersRequest, {"portfolio": "D1", "order_statuses": "working"}, "order_statuses"),
    (StopOrdersRequest, {"portfolio": "D1", "order_statuses": (1,)}, "order_statuses"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    INVALID,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f) in enumerate(INVALID)],
)
def test_invalid_request_names_the_field(
    cls: type[SubscriptionRequest], kwargs: dict[str, Any], field: str
) -> None:
    """Every validation rule raises InvalidArgumentError (a ValueError) naming its field."""
    with pytest.raises(InvalidArgumentError) as info:
        cls(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{field}: ")


BAD_FRAMES: list[tuple[str, str]] = [
    ('{"opcode":"OrderBookGetAndSubscribe","code":"SBER","depth":51}', "depth"),
    ('{"opcode":"OrderBookGetAndSubscribe","code":"SBER","depth":0}', "depth"),
    ('{"opcode":"OrderBookGetAndSubscribe","code":""}', "code"),
    ('{"opcode":"OrderBookGetAndSubscribe"}', "code"),
    ('{"opcode":"OrderBookGetAndSubscribe","code":"SBER","format":"Fat"}', "format"),
    ('{"opcode":"OrderBookGetAndSubscribe","code":"SBER","frequency":-1}', "frequency"),
    ('{"opcode":"AllTradesGetAndSubscribe","code":"SBER","depth":5001}', "depth"),
    ('{"opcode":"BarsGetAndSubscribe","code":"SBER","tf":"H","from":0}', "tf"),
    ('{"opcode":"BarsGetAndSubscribe","code":"SBER","tf":"60","from":-1}', "from"),
    ('{"opcode":"BarsGetAndSubscribe","code":"SBER","tf":"60"}', "from"),
    ('{"opcode":"ClustersGetAndSubscribe","code":"SBER","tf":"0","from":0}', "tf"),
    ('{"opcode":"PositionsGetAndSubscribeV2","portfolio":""}', "portfolio"),
    (
        '{"opcode":"OrdersGetAndSubscribeV2","portfolio":"D1","orderStatuses":["x"]}',
        "orderStatuses",
    ),
    ('{"opcode":"orderbookgetandsubscribe","code":"SBER"}', "opcode"),
    ('{"code":"SBER"}', "opcode"),
]


@pytest.mark.parametrize(("frame", "field"), BAD_FRAMES)
def test_decoding_invalid_request_raises_validation_error(frame: str, field: str) -> None:
    """The simulator's decode of a bad request raises msgspec.ValidationError naming the field."""
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.json.decode(frame, type=AnySubscriptionRequest)


def test_decoding_accepts_enums_in_any_case() -> None:
    """Format and exchange decode case-insensitively (docs/protocol.md §12.7); order statuses
    too."""
    frame = (
        '{"opcode":"OrdersGetAndSubscribeV2","portfolio":"D1","format":"heavy","exchange":"moex",'
        '"orderStatuses":["Working"],"guid":"g","token":"t"}'
    )
    decoded = msgspec.json.decode(frame, type=AnySubscriptionRequest)
    assert decoded == OrdersRequest(
        portfolio="D1", format=Format.HEAVY, order_statuses=(OrderStatus.WORKING,)
    )


# -- guid and token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "guid",
    ["a", "x" * 50, GUID, "b1_3F", "OrderBookGetAndSubscribe-SBER-1", "with space", "~!@#$%^&*()"],
)
def test_valid_guids(guid: str) -> None:
    """Any 1..50 printable ASCII characters without quote/backslash make a guid."""
    assert validate_guid(guid) == guid
    assert _sent(QuotesRequest(code="SBER"), guid=guid)["guid"] == guid


@pytest.mark.parametrize(
    "guid",
    ["", "x" * 51, 'a"b', "a\\b", "a\nb", "a\tb", "гуид", "\x00", None, 17, b"guid"],
)
@pytest.mark.parametrize("encode", ["subscribe", "unsubscribe", "ping"])
def test_invalid_guids_refused(guid: Any, encode: str) -> None:
    """Every encoder refuses a bad guid with InvalidArgumentError naming ``guid``."""
    with pytest.raises(InvalidArgumentError) as info:
        if encode == "subscribe":
            encode_subscribe(QuotesRequest(code="SBER"), guid=guid, token=TOKEN)
        elif encode == "unsubscribe":
            encode_unsubscribe(guid, TOKEN)
        else:
            encode_ping(guid, TOKEN)
    assert info.value.field == "guid"
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize("token", ["", None, 5, b"eyJ"])
@pytest.mark.parametrize("encode", ["subscribe", "unsubscribe", "ping"])
def test_invalid_tokens_refused(token: Any, encode: str) -> None:
    """Every encoder refuses a missing or non-str token with an error naming ``token``."""
    with pytest.raises(InvalidArgumentError) as info:
        if encode == "subscribe":
            encode_subscribe(QuotesRequest(code="SBER"), guid="g", token=token)
        elif encode == "unsubscribe":
            encode_unsubscribe("g", token)
        else:
            encode_ping("g", token)
    assert info.value.field == "token"


@pytest.mark.parametrize("token", [TOKEN, 'a"b\\c', "line\nbreak\x01", "ключ", "x" * 2000])
def test_token_is_json_escaped(token: str) -> None:
    """Whatever the token holds, the frame is valid JSON carrying it verbatim."""
    for frame in (
        encode_subscribe(QuotesRequest(code="SBER"), guid="g", token=token),
        encode_unsubscribe("g", token),
        encode_ping("g", token),
    ):
        assert msgspec.json.decode(frame)["token"] == token


def test_encode_subscribe_refuses_non_requests() -> None:
    """Only SubscriptionRequest objects can be encoded as subscriptions."""
    with pytest.raises(InvalidArgumentError) as info:
        encode_subscribe({"opcode": "QuotesSubscribe"}, guid="g", token=TOKEN)  # type: ignore[arg-type]
    assert info.value.field == "request"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_repr_contains_the_token(cls: type[SubscriptionRequest]) -> None:
    """Requests hold no token, so neither their repr nor str can show one."""
    request = cls(**FULL[cls])
    encode_subscribe(request, guid="g", token=TOKEN)
    assert TOKEN not in repr(request) and TOKEN not in str(request)
    assert "token" not in repr(request).lower()
    assert not hasattr(request, "token") and not hasattr(request, "guid")


def test_repr_omits_unset_fields() -> None:
    """A request's repr lists only what was set, keeping logs short."""
    assert repr(QuotesRequest(code="SBER")) == "QuotesRequest(code='SBER')"


def test_frames_are_compact_bytes() -> None:
    """Encoders return bytes with no whitespace (one text frame each, docs/protocol.md §3.1)."""
    frame = encode_subscribe(OrderBookRequest(code="SBER"), guid="g", token=TOKEN)
    assert isinstance(frame, bytes)
    assert b" " not in frame and b"\n" not in frame
    assert frame.startswith(b'{"opcode":"OrderBookGetAndSubscribe",')
    assert frame.endswith(b',"guid":"g","token":"' + TOKEN.encode() + b'"}')
