"""/cws order commands (docs/protocol.md §6): building, validation, encoding, decoding
(TV-17..TV-19)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from alorws.errors import FrameError, InvalidArgumentError
from alorws.protocol.commands import (
    COMMAND_TYPES,
    AnyCommand,
    Command,
    CommandFrameError,
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    DeleteLimit,
    DeleteMarket,
    DeleteStop,
    DeleteStopLimit,
    InstrumentRef,
    UpdateLimit,
    UpdateMarket,
    UpdateStop,
    UpdateStopLimit,
    User,
    decode_command,
    encode_authorize,
    encode_command,
)
from alorws.protocol.enums import CommandOpcode, Condition, Exchange, Side, TimeInForce


TOKEN = "eyJhbGciOiJFUzI1NiJ9.e30.sig"

TV17_AUTH = '{"opcode":"authorize","guid":"a-000001","token":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}'
TV17_CREATE = '{"opcode":"create:limit","guid":"a-000002","side":"buy","quantity":3,"price":7000.0,"instrument":{"symbol":"LKOH","exchange":"MOEX","instrumentGroup":"TQBR"},"user":{"portfolio":"D10456"},"timeInForce":"oneday","comment":"tv17","checkDuplicates":true}'  # noqa: E501
TV18 = '{"opcode":"create:market","guid":"a-000003","side":"sell","quantity":0,"instrument":{"symbol":"LKOH","exchange":"MOEX"},"user":{"portfolio":"D10456"}}'  # noqa: E501
TV19_UPDATE = '{"opcode":"update:limit","guid":"a-000004","orderId":"53420019002","side":"buy","quantity":3,"price":7005.0,"instrument":{"symbol":"LKOH","exchange":"MOEX"},"user":{"portfolio":"D10456"}}'  # noqa: E501
TV19_DELETE = '{"opcode":"delete:limit","guid":"a-000005","orderId":"53420019115","exchange":"MOEX","user":{"portfolio":"D10456"}}'  # noqa: E501

LKOH = InstrumentRef("LKOH", Exchange.MOEX)
USER = User("D10456")

ORDER = {"side": Side.BUY, "quantity": 3, "instrument": LKOH}
STOP = {"trigger_price": 6990.0, "condition": Condition.LESS_OR_EQUAL}

# The smallest valid command of each opcode (required fields only).
MINIMAL: dict[type[Command], dict[str, Any]] = {
    CreateMarket: ORDER,
    CreateLimit: {**ORDER, "price": 7000.0},
    CreateStop: {**ORDER, **STOP},
    CreateStopLimit: {**ORDER, **STOP, "price": 6985.0},
    UpdateMarket: {**ORDER, "order_id": "1"},
    UpdateLimit: {**ORDER, "order_id": "1", "price": 7005.0},
    UpdateStop: {**ORDER, **STOP, "order_id": "1"},
    UpdateStopLimit: {**ORDER, **STOP, "order_id": "1", "price": 6985.0},
    DeleteMarket: {"order_id": "1", "exchange": Exchange.MOEX},
    DeleteLimit: {"order_id": "1", "exchange": Exchange.MOEX},
    DeleteStop: {"order_id": "1", "exchange": Exchange.MOEX},
    DeleteStopLimit: {"order_id": "1", "exchange": Exchange.MOEX},
}

_COMMON = {"comment": "c", "allow_margin": True, "board": "TQBR"}
_STOP_OPT = {"stop_end_unix_time": 1750700000, "protecting_seconds": 15, "activate": False}
# Every field of each opcode set (docs/protocol.md §6.3 table).
OPTIONAL: dict[type[Command], dict[str, Any]] = {
    CreateMarket: {**_COMMON, "time_in_force": TimeInForce.IMMEDIATE_OR_CANCEL},
    CreateLimit: {
        **_COMMON,
        "time_in_force": TimeInForce.BOOK_OR_CANCEL,
        "iceberg_fixed": 1,
        "iceberg_variance": 5.0,
    },
    CreateStop: {**_COMMON, **_STOP_OPT},
    CreateStopLimit: {
        **_COMMON,
        **_STOP_OPT,
        "time_in_force": TimeInForce.ONE_DAY,
        "iceberg_fixed": 1,
        "iceberg_variance": 0.0,
    },
    UpdateMarket: {**_COMMON, "time_in_force": TimeInForce.FILL_OR_KILL},
    UpdateLimit: {**_COMMON, "iceberg_fixed": 2},
    UpdateStop: {**_COMMON, **_STOP_OPT},
    UpdateStopLimit: {
        **_COMMON,
        **_STOP_OPT,
        "time_in_force": TimeInForce.GOOD_TILL_CANCELLED,
        "iceberg_fixed": 2,
    },
    DeleteMarket: {},
    DeleteLimit: {},
    DeleteStop: {},
    DeleteStopLimit: {},
}

_BASE = {"opcode", "guid", "user", "checkDuplicates"}
_ORDER_KEYS = _BASE | {"side", "quantity", "instrument", "comment", "allowMargin", "board"}
_STOP_KEYS = {"triggerPrice", "condition", "stopEndUnixTime", "protectingSeconds", "activate"}
# docs/protocol.md §6.3: the wire keys of each column.
WIRE_KEYS: dict[type[Command], set[str]] = {
    CreateMarket: _ORDER_KEYS | {"timeInForce"},
    CreateLimit: _ORDER_KEYS | {"price", "timeInForce", "icebergFixed", "icebergVariance"},
    CreateStop: _ORDER_KEYS | _STOP_KEYS,
    CreateStopLimit: _ORDER_KEYS
    | _STOP_KEYS
    | {"price", "timeInForce", "icebergFixed", "icebergVariance"},
    UpdateMarket: _ORDER_KEYS | {"orderId", "timeInForce"},
    UpdateLimit: _ORDER_KEYS | {"orderId", "price", "icebergFixed"},
    UpdateStop: _ORDER_KEYS | _STOP_KEYS | {"orderId"},
    UpdateStopLimit: _ORDER_KEYS | _STOP_KEYS | {"orderId", "price", "timeInForce", "icebergFixed"},
    DeleteMarket: _BASE | {"orderId", "exchange"},
    DeleteLimit: _BASE | {"orderId", "exchange"},
    DeleteStop: _BASE | {"orderId", "exchange"},
    DeleteStopLimit: _BASE | {"orderId", "exchange"},
}

CLASSES = list(MINIMAL)


def _build(cls: type[Command], *, full: bool = False, **extra: Any) -> Command:
    kwargs = {**MINIMAL[cls], **(OPTIONAL[cls] if full else {}), **extra}
    kwargs.setdefault("guid", "g-1")
    kwargs.setdefault("user", USER)
    return cls(**kwargs)


def _sent(cmd: Command) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(encode_command(cmd))
    return decoded


# -- test vectors -----------------------------------------------------------------------------


def test_tv17_authorize() -> None:
    """TV-17: authorize carries opcode, guid and token."""
    built = encode_authorize("a-000001", TOKEN)
    assert msgspec.json.decode(built) == msgspec.json.decode(TV17_AUTH)


def test_tv17_create_limit() -> None:
    """TV-17: create:limit is the documented JSON object."""
    cmd = CreateLimit(
        guid="a-000002",
        side=Side.BUY,
        quantity=3,
        price=7000.0,
        instrument=InstrumentRef("LKOH", Exchange.MOEX, "TQBR"),
        user=User("D10456"),
        time_in_force=TimeInForce.ONE_DAY,
        comment="tv17",
    )
    assert msgspec.json.decode(encode_command(cmd)) == msgspec.json.decode(TV17_CREATE)


def test_tv18_zero_quantity_refused() -> None:
    """TV-18: our builder refuses quantity 0 before it reaches the server."""
    with pytest.raises(InvalidArgumentError) as info:
        CreateMarket(
            guid="a-000003",
            side=Side.SELL,
            quantity=0,
            instrument=InstrumentRef("LKOH", Exchange.MOEX),
            user=User("D10456"),
        )
    assert info.value.field == "quantity"


def test_tv18_decoded_by_the_simulator() -> None:
    """TV-18: decode_command refuses the frame, naming quantity and keeping the guid."""
    with pytest.raises(CommandFrameError, match="quantity") as info:
        decode_command(TV18.encode())
    assert info.value.guid == "a-000003"


def test_tv19_update_limit() -> None:
    """TV-19: update:limit matches the vector (plus checkDuplicates, which is always sent)."""
    cmd = UpdateLimit(
        guid="a-000004",
        order_id="53420019002",
        side=Side.BUY,
        quantity=3,
        price=7005.0,
        instrument=LKOH,
        user=USER,
    )
    # docs/protocol.md §6.1: checkDuplicates defaults to on, so sending it explicitly changes
    # nothing.
    expected = {**msgspec.json.decode(TV19_UPDATE), "checkDuplicates": True}
    assert msgspec.json.decode(encode_command(cmd)) == expected


def test_tv19_delete_limit() -> None:
    """TV-19: delete:limit matches the vector (plus checkDuplicates, which is always sent)."""
    cmd = DeleteLimit(guid="a-000005", order_id="53420019115", exchange=Exchange.MOEX, user=USER)
    expected = {**msgspec.json.decode(TV19_DELETE), "checkDuplicates": True}
    assert msgspec.json.decode(encode_command(cmd)) == expected


@pytest.mark.parametrize("frame", [TV17_CREATE, TV19_UPDATE, TV19_DELETE])
def test_vectors_decode(frame: str) -> None:
    """The TV-17/TV-19 command frames decode, and re-encode to the same JSON object."""
    cmd = decode_command(frame)
    expected = {"checkDuplicates": True, **msgspec.json.decode(frame)}
    assert msgspec.json.decode(encode_command(cmd)) == expected


# -- every opcode -----------------------------------------------------------------------------


def test_command_types_cover_every_order_opcode() -> None:
    """COMMAND_TYPES maps every /cws opcode but authorize to the class tagged with it."""
    assert set(COMMAND_TYPES) == set(CommandOpcode) - {CommandOpcode.AUTHORIZE}
    assert set(COMMAND_TYPES.values()) == set(CLASSES)
    for opcode, cls in COMMAND_TYPES.items():
        assert cls.opcode is opcode
        assert cls.__struct_config__.tag == opcode.value


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_minimal_command_builds(cls: type[Command]) -> None:
    """Each opcode builds from its required fields; UNSET optionals are absent from the JSON."""
    cmd = _build(cls)
    sent = _sent(cmd)
    assert sent["opcode"] == cls.opcode.value == cmd.opcode.value
    assert sent["guid"] == "g-1" and sent["user"] == {"portfolio": "D10456"}
    assert sent["checkDuplicates"] is True
    optional = {"comment", "allowMargin", "board", "timeInForce", "icebergFixed"}
    optional |= {"icebergVariance", "stopEndUnixTime", "protectingSeconds", "activate"}
    assert set(sent) == WIRE_KEYS[cls] - optional
    if "instrument" in sent:
        assert sent["instrument"] == {"symbol": "LKOH", "exchange": "MOEX"}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_full_command_sends_exactly_its_table_fields(cls: type[Command]) -> None:
    """With every field set, the frame has exactly the keys of its docs/protocol.md §6.3 column."""
    assert set(_sent(_build(cls, full=True))) == WIRE_KEYS[cls]


@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_decode_round_trip(cls: type[Command], full: bool) -> None:
    """A built command decodes back equal, via decode_command and via AnyCommand."""
    cmd = _build(cls, full=full)
    frame = encode_command(cmd)
    assert decode_command(frame) == cmd
    assert decode_command(frame.decode()) == cmd
    assert msgspec.json.decode(frame, type=AnyCommand) == cmd


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.swapcase])
def test_decode_command_matches_opcode_in_any_case(cls: type[Command], case: Any) -> None:
    """decode_command accepts any casing of the opcode (e.g. the UI's create:stoplimit;
    docs/protocol.md §12.7)."""
    cmd = _build(cls, full=True)
    obj = msgspec.json.decode(encode_command(cmd))
    obj["opcode"] = case(obj["opcode"])
    decoded = decode_command(msgspec.json.encode(obj))
    assert type(decoded) is cls and decoded == cmd


def test_decode_command_accepts_enums_in_any_case() -> None:
    """Side, condition, exchange and timeInForce decode case-insensitively
    (docs/protocol.md §12.7)."""
    frame = (
        '{"opcode":"create:stoplimit","guid":"g","side":"Sell","quantity":1,"price":1.5,'
        '"triggerPrice":2,"condition":"LessOrEqual","timeInForce":"OneDay",'
        '"instrument":{"symbol":"S","exchange":"moex"},"user":{"portfolio":"D1"}}'
    )
    cmd = decode_command(frame)
    assert isinstance(cmd, CreateStopLimit)
    assert cmd.side is Side.SELL and cmd.condition is Condition.LESS_OR_EQUAL
    assert cmd.time_in_force is TimeInForce.ONE_DAY and cmd.instrument.exchange is Exchange.MOEX


JUNK: list[tuple[str, bytes | str, str | None]] = [
    ("not json", b"xx", None),
    ("bad utf-8", b'{"opcode":"create:limit","guid":"\xff"}', None),
    ("array", b"[1]", None),
    ("empty", b"", None),
    ("no opcode", b'{"guid":"g1"}', "g1"),
    ("numeric opcode", b'{"opcode":5,"guid":"g1"}', "g1"),
    ("unknown opcode", b'{"opcode":"create:iceberg","guid":"g1"}', "g1"),
    ("subscription opcode", '{"opcode":"OrderBookGetAndSubscribe","guid":"g1"}', "g1"),
    ("authorize", b'{"opcode":"authorize","guid":"g1","token":"eyJ.secret"}', "g1"),
    ("missing fields", b'{"opcode":"delete:limit","guid":"g1"}', "g1"),
    ("wrong type", b'{"opcode":"delete:limit","guid":"g1","orderId":1.5}', "g1"),
    (
        "bad nested",
        b'{"opcode":"delete:limit","guid":"g1","orderId":"1","exchange":"MOEX","user":{}}',
        "g1",
    ),
    (
        "empty guid",
        b'{"opcode":"delete:stop","guid":"","orderId":"1","exchange":"MOEX","user":{"portfolio":"D"}}',
        None,
    ),
    (
        "long guid",
        b'{"opcode":"delete:stop","guid":"'
        + b"x" * 51
        + b'","orderId":"1","exchange":"MOEX","user":{"portfolio":"D"}}',
        "x" * 51,
    ),
    ("numeric guid", b'{"opcode":"delete:stop","guid":7,"orderId":"1"}', None),
]


@pytest.mark.parametrize(
    ("frame", "guid"), [(f, g) for _, f, g in JUNK], ids=[n for n, _, _ in JUNK]
)
def test_decode_command_refuses_junk(frame: bytes | str, guid: str | None) -> None:
    """Junk raises CommandFrameError (a FrameError) carrying the guid when it could be read."""
    with pytest.raises(CommandFrameError) as info:
        decode_command(frame)
    assert isinstance(info.value, FrameError)
    assert info.value.guid == (guid or None)


def test_decode_command_error_never_quotes_a_token() -> None:
    """A refused frame that holds a token is not quoted in the error message."""
    frame = b'{"opcode":"authorize","guid":"a-1","token":"eyJ.very-secret"}'
    with pytest.raises(CommandFrameError) as info:
        decode_command(frame)
    assert "very-secret" not in str(info.value) and "very-secret" not in info.value.frame
    with pytest.raises(CommandFrameError) as info2:
        decode_command(b'{"opcode":"QuotesSubscribe","guid":"a","token":"eyJ.very-secret"}')
    assert "very-secret" not in str(info2.value)


# -- values and normalization -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "key", "sent"),
    [
        ("side", "BUY", "side", "buy"),
        ("side", "Sell", "side", "sell"),
        ("condition", "MoreOrEqual", "condition", "moreorequal"),
        ("condition", "LESS", "condition", "less"),
        ("time_in_force", "FillOrKill", "timeInForce", "fillorkill"),
        ("time_in_force", "ONEDAY", "timeInForce", "oneday"),
    ],
)
def test_enums_any_case_sent_documented(field: str, given: str, key: str, sent: str) -> None:
    """Enum values given in any case are sent in their documented spelling
    (docs/protocol.md §12.7)."""
    extra: dict[str, Any] = {field: given}
    assert _sent(_build(CreateStopLimit, **extra))[key] == sent


@pytest.mark.parametrize("cls", [DeleteLimit, DeleteStopLimit], ids=lambda c: c.__name__)
def test_exchange_any_case(cls: type[Command]) -> None:
    """Exchange codes (top-level on delete, and inside instrument) are sent upper-case."""
    assert _sent(_build(cls, exchange="spbx"))["exchange"] == "SPBX"
    assert InstrumentRef("SBER", "moex").exchange is Exchange.MOEX  # type: ignore[arg-type]


def test_instrument_group_is_sent_when_set() -> None:
    """instrument.instrumentGroup is sent only when given."""
    cmd = _build(CreateMarket, instrument=InstrumentRef("SBER", Exchange.MOEX, "TQBR"))
    assert _sent(cmd)["instrument"] == {
        "symbol": "SBER",
        "exchange": "MOEX",
        "instrumentGroup": "TQBR",
    }


def test_check_duplicates_can_be_turned_off() -> None:
    """check_duplicates=False is sent as false (docs/protocol.md §6.1)."""
    assert _sent(_build(CreateMarket, check_duplicates=False))["checkDuplicates"] is False


@pytest.mark.parametrize("price", [7000, 7000.0, Decimal("7000.0")])
def test_price_normalized_to_float(price: Any) -> None:
    """Prices given as int, float or Decimal are stored and sent as the same float."""
    cmd = _build(CreateLimit, price=price)
    assert cmd.price == 7000.0 and type(cmd.price) is float  # type: ignore[attr-defined]
    assert cmd == _build(CreateLimit, price=7000.0)
    assert _sent(cmd)["price"] == 7000.0


def test_int_order_id_becomes_a_string() -> None:
    """An order id given as an int is sent as the string the protocol uses."""
    assert _sent(_build(DeleteLimit, order_id=53420019115))["orderId"] == "53420019115"


@pytest.mark.parametrize("comment", ["", "x", "я" * 100])
def test_comment_up_to_100_chars(comment: str) -> None:
    """Comments of up to 100 characters are accepted."""
    assert _sent(_build(CreateMarket, comment=comment))["comment"] == comment


@pytest.mark.parametrize("seconds", [1, 300])
def test_protecting_seconds_bounds_accepted(seconds: int) -> None:
    """protecting_seconds 1..300 is accepted (docs/protocol.md §6.3)."""
    assert _sent(_build(CreateStop, protecting_seconds=seconds))["protectingSeconds"] == seconds


def test_commands_are_frozen_and_hashable() -> None:
    """Commands are immutable values: equal commands hash equal."""
    a, b = _build(CreateLimit, full=True), _build(CreateLimit, full=True)
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.guid = "other"  # type: ignore[misc]


# -- validation -------------------------------------------------------------------------------

INVALID: list[tuple[type[Command], dict[str, Any], str]] = [
    (CreateMarket, {"quantity": 0}, "quantity"),
    (CreateMarket, {"quantity": -1}, "quantity"),
    (CreateMarket, {"quantity": 1.5}, "quantity"),
    (CreateMarket, {"quantity": True}, "quantity"),
    (CreateMarket, {"quantity": "3"}, "quantity"),
    (UpdateMarket, {"quantity": 0}, "quantity"),
    (CreateLimit, {"price": 0}, "price"),
    (CreateLimit, {"price": -7000.0}, "price"),
    (CreateLimit, {"price": float("nan")}, "price"),
    (CreateLimit, {"price": float("inf")}, "price"),
    (CreateLimit, {"price": "7000"}, "price"),
    (CreateLimit, {"price": True}, "price"),
    (CreateLimit, {"price": None}, "price"),
    (UpdateLimit, {"price": 0.0}, "price"),
    (CreateStopLimit, {"price": -1}, "price"),
    (UpdateStopLimit, {"price": 0}, "price"),
    (CreateStop, {"trigger_price": 0}, "trigger_price"),
    (CreateStopLimit, {"trigger_price": -1.0}, "trigger_price"),
    (UpdateStop, {"trigger_price": float("nan")}, "trigger_price"),
    (UpdateStopLimit, {"trigger_price": 0}, "trigger_price"),
    (CreateMarket, {"comment": "x" * 101}, "comment"),
    (CreateMarket, {"comment": 5}, "comment"),
    (UpdateLimit, {"comment": "x" * 101}, "comment"),
    (CreateStop, {"protecting_seconds": 0}, "protecting_seconds"),
    (CreateStop, {"protecting_seconds": 301}, "protecting_seconds"),
    (CreateStopLimit, {"protecting_seconds": 1.5}, "protecting_seconds"),
    (UpdateStop, {"protecting_seconds": 301}, "protecting_seconds"),
    (CreateLimit, {"iceberg_fixed": 0}, "iceberg_fixed"),
    (CreateStopLimit, {"iceberg_fixed": -2}, "iceberg_fixed"),
    (UpdateLimit, {"iceberg_fixed": 0}, "iceberg_fixed"),
    (CreateLimit, {"iceberg_variance": -1.0}, "iceberg_variance"),
    (CreateLimit, {"iceberg_variance": float("nan")}, "iceberg_variance"),
    (CreateStop, {"stop_end_unix_time": -1}, "stop_end_unix_time"),
    (CreateMarket, {"guid": ""}, "guid"),
    (CreateMarket, {"guid": "x" * 51}, "guid"),
    (CreateMarket, {"guid": 'a"b'}, "guid"),
    (DeleteLimit, {"guid": "a\\b"}, "guid"),
    (UpdateMarket, {"order_id": ""}, "order_id"),
    (UpdateLimit, {"order_id": "  "}, "order_id"),
    (UpdateStop, {"order_id": None}, "order_id"),
    (UpdateStopLimit, {"order_id": ""}, "order_id"),
    (DeleteMarket, {"order_id": ""}, "order_id"),
    (DeleteLimit, {"order_id": 0}, "order_id"),
    (DeleteStop, {"order_id": ""}, "order_id"),
    (DeleteStopLimit, {"order_id": ""}, "order_id"),
    (CreateMarket, {"side": "hold"}, "side"),
    (CreateStop, {"condition": "equal"}, "condition"),
    (CreateMarket, {"time_in_force": "forever"}, "time_in_force"),
    (DeleteLimit, {"exchange": "NYSE"}, "exchange"),
    (CreateMarket, {"instrument": {"symbol": "LKOH", "exchange": "MOEX"}}, "instrument"),
    (CreateMarket, {"user": "D10456"}, "user"),
    (CreateMarket, {"board": ""}, "board"),
    (CreateMarket, {"allow_margin": "yes"}, "allow_margin"),
    (CreateStop, {"activate": 1}, "activate"),
    (DeleteLimit, {"check_duplicates": None}, "check_duplicates"),
]


@pytest.mark.parametrize(
    ("cls", "extra", "field"),
    INVALID,
    ids=[f"{c.__name__}-{f}-{i}" for i, (c, _, f) in enumerate(INVALID)],
)
def test_invalid_command_names_the_field(
    cls: type[Command], extra: dict[str, Any], field: str
) -> None:
    """Every validation rule raises InvalidArgumentError (a ValueError) naming its field."""
    with pytest.raises(InvalidArgumentError) as info:
        _build(cls, **extra)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: InstrumentRef("", Exchange.MOEX), "symbol"),
        (lambda: InstrumentRef(" ", Exchange.MOEX), "symbol"),
        (lambda: InstrumentRef("SBER", "LSE"), "exchange"),  # type: ignore[arg-type]
        (lambda: InstrumentRef("SBER", Exchange.MOEX, ""), "instrument_group"),
        (lambda: User(""), "portfolio"),
        (lambda: User(None), "portfolio"),  # type: ignore[arg-type]
    ],
)
def test_invalid_nested_objects_name_the_field(build: Any, field: str) -> None:
    """instrument and user refuse empty symbol/portfolio and unknown exchanges."""
    with pytest.raises(InvalidArgumentError) as info:
        build()
    assert info.value.field == field


# -- authorize and secrets --------------------------------------------------------------------


@pytest.mark.parametrize(("guid", "token", "field"), [("", TOKEN, "guid"), ("a", "", "token")])
def test_encode_authorize_validates(guid: str, token: str, field: str) -> None:
    """authorize refuses a bad guid or an empty token, without echoing the token."""
    with pytest.raises(InvalidArgumentError) as info:
        encode_authorize(guid, token)
    assert info.value.field == field and TOKEN not in str(info.value)


def test_encode_command_refuses_non_commands() -> None:
    """Only Command objects can be encoded as commands."""
    with pytest.raises(InvalidArgumentError) as info:
        encode_command({"opcode": "create:market"})  # type: ignore[arg-type]
    assert info.value.field == "cmd"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_repr_contains_a_token(cls: type[Command]) -> None:
    """Commands hold no token: no repr, str or frame of a command can contain one."""
    encode_authorize("a-1", TOKEN)
    cmd = _build(cls, full=True)
    assert TOKEN not in repr(cmd) and TOKEN not in str(cmd)
    assert b"token" not in encode_command(cmd)
    assert not hasattr(cmd, "token")
