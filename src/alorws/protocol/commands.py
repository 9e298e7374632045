"""``/cws`` order commands (docs/protocol.md §6) as frozen value objects, and their wire encoding.

Each command carries its own ``guid``: it is the command's idempotency key (docs/protocol.md §6.1: a
guid the server has already seen is not executed again while ``checkDuplicates`` is on). Commands
carry no token (docs/protocol.md §2.5): the connection is authorized once with
:func:`encode_authorize`, which takes the token as an argument and never stores it, so no ``repr``
can leak it.

Commands validate themselves on construction and on decoding, raising
:class:`~alorws.errors.InvalidArgumentError` naming the field. :func:`decode_command` (used by
the simulator) accepts opcodes in any case, as the server does (docs/protocol.md §12.7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Final

import msgspec
from msgspec import UNSET, UnsetType

# CommandFrameError lives in alorws.errors; re-exported here, where decode_command raises it.
from ..errors import CommandFrameError, InvalidArgumentError
from .enums import CommandOpcode, Condition, Exchange, Side, TimeInForce
from .requests import (
    _ENCODER,
    _enum,
    _flag,
    _int,
    _positive_number,
    _text,
    _token_json,
    validate_guid,
)


__all__ = [
    "COMMAND_TYPES",
    "AnyCommand",
    "Command",
    "CommandFrameError",
    "CreateLimit",
    "CreateMarket",
    "CreateStop",
    "CreateStopLimit",
    "DeleteLimit",
    "DeleteMarket",
    "DeleteStop",
    "DeleteStopLimit",
    "InstrumentRef",
    "UpdateLimit",
    "UpdateMarket",
    "UpdateStop",
    "UpdateStopLimit",
    "User",
    "decode_command",
    "encode_authorize",
    "encode_command",
]

COMMENT_MAX_LEN: Final = 100  # docs/protocol.md §6.3: comment ≤ 100 chars


class InstrumentRef(msgspec.Struct, frozen=True, rename="camel", gc=False, repr_omit_defaults=True):
    """The ``instrument`` object ``{symbol, exchange, instrumentGroup?}``
    (docs/protocol.md §6.3)."""

    symbol: str
    exchange: Exchange
    # The board; it wins over a top-level ``board`` (docs/protocol.md §12.8).
    instrument_group: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        _text("symbol", self.symbol)
        exchange = _enum("exchange", Exchange, self.exchange)
        if exchange is not self.exchange:
            msgspec.structs.force_setattr(self, "exchange", exchange)
        if self.instrument_group is not UNSET:
            _text("instrument_group", self.instrument_group)


class User(msgspec.Struct, frozen=True, gc=False):
    """The ``user`` object ``{portfolio}`` (docs/protocol.md §6.3)."""

    portfolio: str

    def __post_init__(self) -> None:
        _text("portfolio", self.portfolio)


def _order_id(value: object) -> str:
    """The string id of the order to change or cancel (an int is converted;
    docs/protocol.md §6.3)."""
    if type(value) is int and value > 0:
        return str(value)
    return _text("order_id", value)


def _comment(value: object) -> str:
    """Free text of at most 100 characters (docs/protocol.md §6.3)."""
    if type(value) is not str:
        raise InvalidArgumentError("comment", f"must be a str, got {type(value).__name__}")
    if len(value) > COMMENT_MAX_LEN:
        raise InvalidArgumentError(
            "comment", f"is {len(value)} characters; the server allows at most {COMMENT_MAX_LEN}"
        )
    return value


def _instance(field: str, cls: type[Any]) -> Callable[[Any], Any]:
    """A check that ``value`` is a ``cls`` (nested objects must be built, not passed as dicts)."""

    def check(value: object) -> object:
        if not isinstance(value, cls):
            raise InvalidArgumentError(
                field, f"must be a {cls.__name__}(...), got {type(value).__name__}"
            )
        return value

    return check


def _iceberg_variance(value: object) -> float:
    """Random add-on in percent (FORTS only), a finite number >= 0 (docs/protocol.md §6.3)."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    return _positive_number("iceberg_variance", value)


# field name -> check returning the normalized value. UNSET values are never checked.
_CHECKS: Final[dict[str, Callable[[Any], Any]]] = {
    "guid": validate_guid,  # docs/protocol.md §6.1: the command's idempotency key
    "order_id": _order_id,
    "side": lambda v: _enum("side", Side, v),
    "quantity": lambda v: _int("quantity", v, 1),  # lots, int
    "price": lambda v: _positive_number("price", v),
    "trigger_price": lambda v: _positive_number("trigger_price", v),
    "condition": lambda v: _enum("condition", Condition, v),
    "stop_end_unix_time": lambda v: _int("stop_end_unix_time", v, 0),  # 0 = default expiry
    "instrument": _instance("instrument", InstrumentRef),
    "board": lambda v: _text("board", v),
    "user": _instance("user", User),
    "exchange": lambda v: _enum("exchange", Exchange, v),
    "comment": _comment,
    "time_in_force": lambda v: _enum("time_in_force", TimeInForce, v),  # docs/protocol.md §6.4
    "allow_margin": lambda v: _flag("allow_margin", v),
    "iceberg_fixed": lambda v: _int("iceberg_fixed", v, 1),  # visible lots
    "iceberg_variance": _iceberg_variance,
    "protecting_seconds": lambda v: _int("protecting_seconds", v, 1, 300),  # 1..300 seconds
    "activate": lambda v: _flag("activate", v),
    "check_duplicates": lambda v: _flag("check_duplicates", v),
}


class Command(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    tag_field="opcode",
    gc=False,
    repr_omit_defaults=True,
):
    """Base of every ``/cws`` order command (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode]

    guid: str  # client-chosen and unique; a repeat is not executed again (docs/protocol.md §6.1)
    user: User
    check_duplicates: bool = True  # always sent; False skips the server's guid check

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is UNSET:
                continue
            check = _CHECKS.get(name)
            if check is None:  # pragma: no cover - every field has a check
                continue
            new = check(value)
            if new is not value:
                msgspec.structs.force_setattr(self, name, new)


class _OrderCommand(Command, frozen=True, kw_only=True):
    """Fields shared by every create:* and update:* command (docs/protocol.md §6.3)."""

    side: Side
    quantity: int  # lots
    instrument: InstrumentRef
    comment: str | UnsetType = UNSET
    allow_margin: bool | UnsetType = UNSET
    # Not in ALOR's description; AlorPy and the web terminal send it (docs/protocol.md §6.3).
    # Prefer the instrument's ``instrument_group``.
    board: str | UnsetType = UNSET


class _DeleteCommand(Command, frozen=True, kw_only=True):
    """Fields of every delete:* command (docs/protocol.md §6.3)."""

    order_id: str
    exchange: Exchange  # top-level on delete


# -- create -----------------------------------------------------------------------------------


class CreateMarket(_OrderCommand, frozen=True, kw_only=True, tag="create:market"):
    """Place a market order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.CREATE_MARKET

    time_in_force: TimeInForce | UnsetType = UNSET


class CreateLimit(_OrderCommand, frozen=True, kw_only=True, tag="create:limit"):
    """Place a limit order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.CREATE_LIMIT

    price: float
    time_in_force: TimeInForce | UnsetType = UNSET
    iceberg_fixed: int | UnsetType = UNSET
    iceberg_variance: float | UnsetType = UNSET


class CreateStop(_OrderCommand, frozen=True, kw_only=True, tag="create:stop"):
    """Place a stop (market) order that fires when ``condition`` meets ``trigger_price``
    (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.CREATE_STOP

    trigger_price: float
    condition: Condition
    stop_end_unix_time: int | UnsetType = UNSET
    protecting_seconds: int | UnsetType = UNSET
    activate: bool | UnsetType = UNSET


class CreateStopLimit(_OrderCommand, frozen=True, kw_only=True, tag="create:stopLimit"):
    """Place a stop-limit order (a limit order at ``price`` once triggered;
    docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.CREATE_STOP_LIMIT

    price: float
    trigger_price: float
    condition: Condition
    stop_end_unix_time: int | UnsetType = UNSET
    time_in_force: TimeInForce | UnsetType = UNSET
    iceberg_fixed: int | UnsetType = UNSET
    iceberg_variance: float | UnsetType = UNSET
    protecting_seconds: int | UnsetType = UNSET
    activate: bool | UnsetType = UNSET


# -- update (cancel/replace: the order gets a new id) -----------------------------------------


class UpdateMarket(_OrderCommand, frozen=True, kw_only=True, tag="update:market"):
    """Replace a market order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.UPDATE_MARKET

    order_id: str
    time_in_force: TimeInForce | UnsetType = UNSET


class UpdateLimit(_OrderCommand, frozen=True, kw_only=True, tag="update:limit"):
    """Replace a limit order (ALOR takes no ``time_in_force`` on it; docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.UPDATE_LIMIT

    order_id: str
    price: float
    iceberg_fixed: int | UnsetType = UNSET


class UpdateStop(_OrderCommand, frozen=True, kw_only=True, tag="update:stop"):
    """Replace a stop order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.UPDATE_STOP

    order_id: str
    trigger_price: float
    condition: Condition
    stop_end_unix_time: int | UnsetType = UNSET
    protecting_seconds: int | UnsetType = UNSET
    activate: bool | UnsetType = UNSET


class UpdateStopLimit(_OrderCommand, frozen=True, kw_only=True, tag="update:stopLimit"):
    """Replace a stop-limit order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.UPDATE_STOP_LIMIT

    order_id: str
    price: float
    trigger_price: float
    condition: Condition
    stop_end_unix_time: int | UnsetType = UNSET
    time_in_force: TimeInForce | UnsetType = UNSET
    iceberg_fixed: int | UnsetType = UNSET
    protecting_seconds: int | UnsetType = UNSET
    activate: bool | UnsetType = UNSET


# -- delete -----------------------------------------------------------------------------------


class DeleteMarket(_DeleteCommand, frozen=True, kw_only=True, tag="delete:market"):
    """Cancel a market order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.DELETE_MARKET


class DeleteLimit(_DeleteCommand, frozen=True, kw_only=True, tag="delete:limit"):
    """Cancel a limit order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.DELETE_LIMIT


class DeleteStop(_DeleteCommand, frozen=True, kw_only=True, tag="delete:stop"):
    """Cancel a stop order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.DELETE_STOP


class DeleteStopLimit(_DeleteCommand, frozen=True, kw_only=True, tag="delete:stopLimit"):
    """Cancel a stop-limit order (docs/protocol.md §6.3)."""

    opcode: ClassVar[CommandOpcode] = CommandOpcode.DELETE_STOP_LIMIT


AnyCommand = (
    CreateMarket
    | CreateLimit
    | CreateStop
    | CreateStopLimit
    | UpdateMarket
    | UpdateLimit
    | UpdateStop
    | UpdateStopLimit
    | DeleteMarket
    | DeleteLimit
    | DeleteStop
    | DeleteStopLimit
)
"""Tagged union of every command (exact opcode spelling; :func:`decode_command` takes any case)."""

#: The command class of each order opcode (``authorize`` has none: it is not a value object).
COMMAND_TYPES: Final[dict[CommandOpcode, type[Command]]] = {
    cls.opcode: cls
    for cls in (
        CreateMarket,
        CreateLimit,
        CreateStop,
        CreateStopLimit,
        UpdateMarket,
        UpdateLimit,
        UpdateStop,
        UpdateStopLimit,
        DeleteMarket,
        DeleteLimit,
        DeleteStop,
        DeleteStopLimit,
    )
}


# -- encoding ---------------------------------------------------------------------------------


def encode_command(cmd: Command) -> bytes:
    """The command's JSON frame (docs/protocol.md §6.3), with its ``guid`` and no token."""
    if not isinstance(cmd, Command):
        raise InvalidArgumentError("cmd", f"expected a Command, got {type(cmd).__name__}")
    return _ENCODER.encode(cmd)


def encode_authorize(guid: str, token: str) -> bytes:
    """``{"opcode":"authorize","guid":…,"token":…}``: authorize the /cws connection
    (docs/protocol.md §6.1)."""
    guid_bytes = validate_guid(guid).encode("ascii")
    token_json = _token_json(token)
    return b"".join(
        (b'{"opcode":"authorize","guid":"', guid_bytes, b'","token":', token_json, b"}")
    )


# -- decoding (simulator side) ----------------------------------------------------------------


class _Head(msgspec.Struct, gc=False):
    # Just enough of a frame to pick the command class.
    opcode: Any = None
    guid: Any = None


_HEAD: Final = msgspec.json.Decoder(_Head)
_DECODERS: Final[dict[type[Command], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls) for cls in COMMAND_TYPES.values()
}


def decode_command(frame: bytes | str) -> Command:
    """Decode an order command, matching its opcode case-insensitively (docs/protocol.md §12.7).

    Raises :class:`CommandFrameError` (a :class:`~alorws.errors.FrameError`) for bad JSON, an
    unknown or missing opcode, ``authorize`` (not an order command) or an invalid field; its
    ``guid`` is the frame's guid when readable, so a 400 reply can quote it.
    """
    try:
        head = _HEAD.decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8
        raise CommandFrameError(f"unreadable command frame: {exc}", frame, None) from None
    guid = head.guid if type(head.guid) is str and head.guid else None
    try:
        if type(head.opcode) is not str:
            raise ValueError
        op = CommandOpcode(head.opcode)
    except ValueError:
        raise CommandFrameError(
            f"unknown /cws opcode {head.opcode!r}; expected one of "
            + ", ".join(o.value for o in CommandOpcode),
            frame,
            guid,
        ) from None
    if op is CommandOpcode.AUTHORIZE:
        raise CommandFrameError("'authorize' is not an order command", frame, guid)
    cls = COMMAND_TYPES[op]
    try:
        if head.opcode == op.value:  # documented spelling: decode straight from the bytes
            return _DECODERS[cls].decode(frame)  # type: ignore[no-any-return]
        # Other casing (e.g. the UI's create:stoplimit): the tag must match, so respell it.
        obj = msgspec.json.decode(frame)
        obj["opcode"] = op.value
        return msgspec.convert(obj, cls)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise CommandFrameError(f"invalid {op.value} command: {exc}", frame, guid) from None
