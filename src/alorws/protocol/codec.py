"""Route raw frames first, decode payloads later.

Every frame on ``/ws`` and ``/cws`` is one JSON object (docs/protocol.md §3.1), either

* a **data message** ``{"data": {...}, "guid": "<subscription guid>"}`` (docs/protocol.md §3.4), or
* a **status reply** ``{"requestGuid": "...", "httpCode": 200, "message": "...",
  "orderNumber": "..."}`` (docs/protocol.md §5; ``orderNumber`` only on ``/cws``).

:func:`route` tells them apart in one pass without building the payload: ``data`` is kept as
``msgspec.Raw`` bytes, so a connection can find the subscription by guid, throw away data nobody
wants (unknown guid, a ``latest`` buffer that will be overwritten) and decode the rest lazily with
:func:`decode_payload` into the stream's normalized model.

Anything else is junk and raises :class:`~alorws.errors.FrameError`; nothing here raises any
other exception for bad input.

The reader's fast path does not even parse: ALOR sends data messages compactly with ``guid``
last, so :func:`frame_guid` reads the guid off the frame's tail, and the whole frame is later
decoded in one pass, envelope and payload together, by a :func:`frame_decoder_for` decoder
(which accepts any key order). Frames of any other shape go through :func:`route`.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, Final, Generic, Protocol, TypeVar, cast

import msgspec

from ..errors import FrameError, ServerRejected, rejection_for
from ._model import Count, Int64, Model, format_class
from .account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from .enums import Format, SubscriptionOpcode
from .market import Bar, ClusterSnapshot, InstrumentPatch, OrderBook, Quote, Trade
from .requests import validate_guid


__all__ = [
    "DATA_HEAD",
    "STREAM_MODELS",
    "DataMessage",
    "Frame",
    "StatusReply",
    "TailTable",
    "decode_frame",
    "decode_payload",
    "decode_status",
    "decoder_for",
    "frame_decoder_for",
    "frame_guid",
    "frame_payload",
    "frame_tail",
    "model_for",
    "route",
]

M = TypeVar("M", bound=Model)

#: The normalized model each subscription opcode streams (docs/protocol.md §4).
STREAM_MODELS: Final[dict[SubscriptionOpcode, type[Model]]] = {
    SubscriptionOpcode.ORDER_BOOK: OrderBook,
    SubscriptionOpcode.QUOTES: Quote,
    SubscriptionOpcode.BARS: Bar,
    SubscriptionOpcode.ALL_TRADES: Trade,
    SubscriptionOpcode.INSTRUMENT: InstrumentPatch,
    SubscriptionOpcode.POSITIONS: Position,
    SubscriptionOpcode.SUMMARIES: Summary,
    SubscriptionOpcode.RISKS: Risk,
    SubscriptionOpcode.SPECTRA_RISKS: SpectraRisk,
    SubscriptionOpcode.TRADES: OwnTrade,
    SubscriptionOpcode.ORDERS: Order,
    SubscriptionOpcode.STOP_ORDERS: StopOrder,
    SubscriptionOpcode.CLUSTERS: ClusterSnapshot,
}


class StatusReply(msgspec.Struct, frozen=True, gc=False):
    """The server's answer to one request (docs/protocol.md §5).

    ``request_guid`` is the request's guid (for ``unsubscribe``, the subscription's guid).
    ``order_number`` is set by ``/cws`` order commands. Never match on ``message``: it is free text.
    """

    request_guid: str
    http_code: int
    message: str = ""
    order_number: str | None = None

    @property
    def ok(self) -> bool:
        """True when the server accepted the request (``httpCode == 200``)."""
        return self.http_code == 200

    def error(self) -> ServerRejected | None:
        """The matching :class:`~alorws.errors.ServerRejected` if the request failed, else None."""
        if self.http_code == 200:
            return None
        return rejection_for(self.http_code, self.message, self.request_guid)


_NO_DATA: Final = msgspec.Raw()
_NULL: Final = msgspec.Raw(b"null")


class DataMessage(msgspec.Struct, frozen=True, gc=False, repr_omit_defaults=True):
    """A routed, not yet decoded data message: the subscription ``guid`` and the raw ``data``.

    Pass ``data`` to :func:`decode_payload` (or a decoder from :func:`decoder_for`).

    Every frame is decoded once, as this struct, whatever it turns out to be: it lists the keys
    of both shapes in wire order, so a data message needs no second object and a status reply
    is turned into a :class:`StatusReply`. Wrong types fail the decode (a ``FrameError``).
    """

    data: msgspec.Raw = _NO_DATA
    guid: str = ""
    # The status-reply keys (docs/protocol.md §5); always None on a data message.
    requestGuid: str | None = None
    httpCode: Int64 | None = None
    message: str | None = None
    orderNumber: str | Count | None = None


_decode_envelope: Final = msgspec.json.Decoder(DataMessage).decode


def route(
    frame: bytes | bytearray | memoryview | str,
    *,
    _decode: Any = _decode_envelope,  # bound as a default: a local lookup on the hot path
) -> DataMessage | StatusReply:
    """Classify one received frame without decoding its payload.

    Returns a :class:`DataMessage` (``guid`` + raw ``data``) or a :class:`StatusReply`.
    Raises :class:`~alorws.errors.FrameError` for anything else: invalid JSON or UTF-8, a
    non-object, a data message without a string guid, a status reply without a string
    ``requestGuid`` or an integer ``httpCode``.
    """
    try:
        msg: DataMessage = _decode(frame)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8
        raise FrameError(f"unreadable frame: {exc}", frame) from None
    # Hot path first: a data message. ``len > 4`` settles it without comparing bytes unless the
    # payload is tiny (``{}``, ``null``, or absent).
    data = msg.data
    if len(data) > 4 or (data is not _NO_DATA and data != _NULL):
        if msg.guid:
            return msg
        raise FrameError("data message without a 'guid'", frame)
    request_guid = msg.requestGuid
    if request_guid is None:
        raise FrameError("neither a data message nor a status reply", frame)
    code = msg.httpCode
    if code is None:
        raise FrameError("status reply without an 'httpCode'", frame)
    number = msg.orderNumber
    return StatusReply(
        request_guid, code, msg.message or "", None if number is None else str(number)
    )


def decode_status(frame: bytes | str) -> StatusReply:
    """Route ``frame`` and require a status reply (``/cws`` sends nothing else)."""
    msg = route(frame)
    if not isinstance(msg, StatusReply):
        raise FrameError("expected a status reply, got a data message", frame)
    return msg


_DECODERS: dict[tuple[type[Model], Format], msgspec.json.Decoder[Any]] = {}


def decoder_for(model: type[M], fmt: Format | str) -> msgspec.json.Decoder[M]:
    """The (cached) msgspec decoder turning ``fmt`` payloads into ``model`` instances.

    Use it directly on hot paths; :func:`decode_payload` wraps it with error translation.
    """
    fmt = Format(fmt)
    try:
        return cast("msgspec.json.Decoder[M]", _DECODERS[model, fmt])
    except KeyError:
        dec = msgspec.json.Decoder(format_class(model, fmt))
        _DECODERS[model, fmt] = dec
        return dec


def model_for(opcode: SubscriptionOpcode | str) -> type[Model]:
    """The normalized model a subscription ``opcode`` streams."""
    return STREAM_MODELS[SubscriptionOpcode(opcode)]


def decode_payload(data: msgspec.Raw | bytes | str, model: type[M], fmt: Format | str) -> M:
    """Decode a routed ``data`` payload into ``model``, as sent in format ``fmt``.

    Raises :class:`~alorws.errors.FrameError` (naming the bad field) if it does not fit.
    """
    try:
        return decoder_for(model, fmt).decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        frame = data if isinstance(data, str | bytes) else bytes(data)
        raise FrameError(f"bad {model.__name__} payload ({Format(fmt)}): {exc}", frame) from None


#: How a compact data frame (docs/protocol.md §3.4) starts: ``{"data":{``, 9 bytes.
DATA_HEAD: Final = b'{"data":{'
_GUID_KEY: Final = b',"guid":"'
_TAIL: Final = b'"}'


def frame_guid(frame: bytes) -> bytes | None:
    """The subscription guid of a data frame in ALOR's compact shape, read off its tail.

    ``{"data":{…},"guid":"<guid>"}`` (docs/protocol.md §3.4, as the server writes it) gives
    ``b"<guid>"`` without parsing the frame; any other shape (other key order, whitespace, a status
    reply, ``data`` not an object) gives None: use :func:`route` for it. The frame is not validated:
    a corrupt payload fails later, in :func:`decode_frame`.
    """
    if frame[:9] != DATA_HEAD or frame[-2:] != _TAIL:  # slices: bytes methods parse args
        return None
    i = frame.rfind(_GUID_KEY)
    if i < 0:
        return None
    guid = frame[i + 9 : -2]
    # A quote or backslash means the match was not the top-level key (or an odd guid).
    if not guid or b'"' in guid or b"\\" in guid:
        return None
    return guid


def frame_tail(guid: str) -> bytes:
    """How a compact data frame of subscription ``guid`` ends: ``,"guid":"<guid>"}``."""
    return _GUID_KEY + guid.encode() + _TAIL


def frame_payload(frame: bytes) -> bytes:
    """The raw ``data`` JSON of a data frame, undecoded: what a pass-through forwards.

    A compact frame (see :func:`frame_guid`) is sliced without parsing (its payload is not
    validated: a corrupt one fails where it is decoded); any other shape goes through
    :func:`route`. Raises :class:`~alorws.errors.FrameError` if it is not a data message.
    """
    guid = frame_guid(frame)
    if guid is not None:
        return frame[8 : len(frame) - len(guid) - 11]
    msg = route(frame)
    if type(msg) is not DataMessage:
        raise FrameError("not a data message", frame)
    return bytes(msg.data)


V = TypeVar("V")

_HEAD: Final = itemgetter(slice(None, 9))  # the first 9 bytes, as a C-level callable


class Pusher(Protocol):
    """What :meth:`TailTable.dispatch` hands a subscription's frames to (a stream's buffer)."""

    def push_many(self, items: list[bytes]) -> None: ...


class TailTable(Generic[V]):
    """Subscription guid -> value, also found straight from a compact data frame's tail.

    ``table.match(frame)`` is the reader's fast path: one slice and one dict lookup per distinct
    guid length (one, with the uuid guids clients generate), no parsing. It returns None for a
    frame of any other shape or an unknown guid; route() decides those. A match is exact: the
    frame starts with ``{"data":{`` and ends with ``,"guid":"<a guid of the table>"}``, and as
    guids have no quote or backslash, that is the top-level ``guid`` key of a valid frame.
    """

    __slots__ = ("by_guid", "by_tail", "tail_lens")

    def __init__(self) -> None:
        self.by_guid: dict[str, V] = {}
        self.by_tail: dict[bytes, V] = {}
        #: The distinct tail lengths in use (lengths of guids that were ever added).
        self.tail_lens: tuple[int, ...] = ()

    def get(self, guid: str) -> V | None:
        """The value of ``guid``, or None."""
        return self.by_guid.get(guid)

    def __setitem__(self, guid: str, value: V) -> None:
        tail = frame_tail(validate_guid(guid))
        self.by_guid[guid] = value
        self.by_tail[tail] = value
        if len(tail) not in self.tail_lens:
            self.tail_lens += (len(tail),)

    def pop(self, guid: str) -> V | None:
        """Remove ``guid``; its value, or None if it was not there."""
        if guid not in self.by_guid:
            return None
        self.by_tail.pop(frame_tail(guid), None)
        return self.by_guid.pop(guid)

    def clear(self) -> None:
        """Remove everything."""
        self.by_guid.clear()
        self.by_tail.clear()

    def __len__(self) -> int:
        return len(self.by_guid)

    def match(self, frame: bytes) -> V | None:
        """The value of the guid a compact data ``frame`` ends with, or None (see the class)."""
        if frame[:9] == DATA_HEAD:
            by_tail = self.by_tail
            for n in self.tail_lens:
                value = by_tail.get(frame[-n:])
                if value is not None:
                    return value
        return None

    def dispatch(
        self: TailTable[Pusher], frames: list[bytes], route: Callable[[bytes], None]
    ) -> None:
        """Hand a socket read's ``frames`` over, in order: the frames of the table's guids
        (:meth:`match`) to their value's ``push_many``, consecutive frames of one guid in one
        call; any other frame to ``route`` (which may change the table: the frames after it
        are matched against the table as it is then).

        The reader's fast path (:func:`alorws.client._ws.dispatch_frames`, in C when the
        compiled reader is built). Neither ``push_many`` nor ``route`` may raise.
        """
        by_tail = self.by_tail
        tail_lens = self.tail_lens
        count = len(frames)
        if len(tail_lens) == 1 and count:
            # One guid length (uuid guids): every tail is looked up at once, in C-level loops.
            # Taken only if every frame matches: route() is then never called, and push_many
            # only stores, so these are the lookups the loop below would make.
            found = list(map(by_tail.get, map(itemgetter(slice(-tail_lens[0], None)), frames)))
            if None not in found and list(map(_HEAD, frames)).count(DATA_HEAD) == count:
                pushers = cast("list[Pusher]", found)
                current = pushers[0]
                if pushers.count(current) == count:  # one subscription (no __eq__: identity)
                    current.push_many(frames[:])
                    return
                start = 0
                for i, pusher in enumerate(pushers):
                    if pusher is not current:
                        current.push_many(frames[start:i])
                        current = pusher
                        start = i
                current.push_many(frames[start:])
                return
        # Frame by frame, match() inlined: slices and a dict lookup (bytes.startswith/endswith
        # parse their arguments: slower).
        run: list[bytes] = []
        run_sink: Pusher | None = None
        for payload in frames:
            if payload[:9] == DATA_HEAD:
                for n in tail_lens:
                    sink = by_tail.get(payload[-n:])
                    if sink is not None:
                        if sink is run_sink:
                            run.append(payload)
                        else:
                            if run_sink is not None:
                                run_sink.push_many(run)
                            run_sink = sink
                            run = [payload]
                        break
                else:
                    sink = None
                if sink is not None:
                    continue
            if run_sink is not None:
                run_sink.push_many(run)
                run_sink = None
            route(payload)
            by_tail = self.by_tail  # route() may have changed the table (a new guid length)
            tail_lens = self.tail_lens
        if run_sink is not None:
            run_sink.push_many(run)


_FRAME_DECODERS: dict[tuple[type[Model], Format], msgspec.json.Decoder[Any]] = {}


class Frame(msgspec.Struct, Generic[M], frozen=True, gc=False):
    """A whole data message decoded in one pass: the typed ``data`` and the ``guid``."""

    data: M
    guid: str = ""


def frame_decoder_for(model: type[M], fmt: Format | str) -> msgspec.json.Decoder[Frame[M]]:
    """The (cached) decoder of a whole data frame whose payload is ``model`` in ``fmt``.

    ``decoder.decode(frame).data`` is the model: envelope and payload are parsed in one pass,
    about half the work of :func:`route` followed by :func:`decode_payload`.
    """
    fmt = Format(fmt)
    try:
        return cast("msgspec.json.Decoder[Frame[M]]", _FRAME_DECODERS[model, fmt])
    except KeyError:
        dec = msgspec.json.Decoder(Frame[format_class(model, fmt)])  # type: ignore[misc]
        _FRAME_DECODERS[model, fmt] = dec
        return dec


def decode_frame(frame: bytes | str, model: type[M], fmt: Format | str) -> M:
    """Decode a whole data frame's payload into ``model``, as sent in format ``fmt``.

    Raises :class:`~alorws.errors.FrameError` (naming the bad field) if it does not fit.
    """
    try:
        return frame_decoder_for(model, fmt).decode(frame).data
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"bad {model.__name__} frame ({Format(fmt)}): {exc}", frame) from None
