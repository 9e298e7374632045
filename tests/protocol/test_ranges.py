"""Values out of the ranges ALOR can send are a FrameError naming the field, never a model
holding them; values in range (negative prices, short positions, fractional money lots,
numeric ids) decode as they are."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from alorws.errors import FrameError
from alorws.protocol import (
    AllTradesPage,
    Bar,
    InstrumentPatch,
    Model,
    Order,
    OrderBook,
    Position,
    Quote,
    Security,
    StopOrder,
    Trade,
    decode_frame,
    decode_payload,
    format_class,
    to_wire,
)
from alorws.protocol.enums import Format


S, L, H = Format.SIMPLE, Format.SLIM, Format.HEAVY


def payload(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def refused(model: type[Model], fmt: Format, data: dict[str, Any] | bytes, key: str) -> str:
    """Decode ``data`` both ways (payload alone, whole frame); both must raise FrameError
    naming the wire ``key``. Returns the message."""
    raw = data if isinstance(data, bytes) else payload(data)
    with pytest.raises(FrameError) as first:
        decode_payload(raw, model, fmt)
    with pytest.raises(FrameError) as second:
        decode_frame(b'{"data":' + raw + b',"guid":"g"}', model, fmt)
    for info in (first, second):
        assert f".{key}`" in str(info.value), str(info.value)
    return str(first.value)


# -- quantities -------------------------------------------------------------------------------

TRADE_QTY = {S: "qty", L: "q", H: "qty"}


@pytest.mark.parametrize("fmt", list(Format))
def test_trade_quantity_of_2_pow_63_is_refused(fmt: Format) -> None:
    """A tape trade of 2**63 lots cannot come from the server (a long): FrameError on `qty`."""
    message = refused(Trade, fmt, {"id": 1, TRADE_QTY[fmt]: 2**63, "price": 1.0}, TRADE_QTY[fmt])
    assert "9223372036854775807" in message
    ok = decode_payload(payload({"id": 1, TRADE_QTY[fmt]: 2**63 - 1}), Trade, fmt)
    assert ok.qty == 2**63 - 1


@pytest.mark.parametrize("fmt", list(Format))
def test_trade_id_is_64_bit_and_not_negative(fmt: Format) -> None:
    """A tape trade id is 0..2**63-1."""
    refused(Trade, fmt, {"id": 2**63}, "id")
    refused(Trade, fmt, {"id": -1}, "id")
    assert decode_payload(payload({"id": 2**63 - 1}), Trade, fmt).id == 2**63 - 1


NEGATIVE: list[tuple[type[Model], Format, dict[str, Any], str]] = [
    (Trade, S, {"id": 1, "qty": -1}, "qty"),
    (Trade, L, {"id": 1, "q": -5}, "q"),
    (Order, S, {"id": "1", "qtyBatch": -1}, "qtyBatch"),
    (Order, L, {"id": "1", "qb": -1}, "qb"),
    (Order, H, {"id": "1", "qtyUnits": -10}, "qtyUnits"),
    (Order, S, {"id": "1", "filledQtyBatch": -1}, "filledQtyBatch"),
    (Order, L, {"id": "1", "fq": -0.5}, "fq"),
    (StopOrder, S, {"id": "1", "qtyBatch": -2}, "qtyBatch"),
    (OrderBook, S, {"bids": [{"price": 1.0, "volume": -3}], "asks": []}, "volume"),
    (OrderBook, L, {"b": [], "a": [{"p": 1.0, "v": -3}]}, "v"),
    (Quote, S, {"symbol": "X", "ask_vol": -1}, "ask_vol"),
    (Quote, L, {"sym": "X", "v": -1}, "v"),
    (Quote, S, {"symbol": "X", "lotsize": -10}, "lotsize"),
    (Position, S, {"symbol": "X", "lotSize": -1}, "lotSize"),
    (Position, L, {"sym": "X", "lot": -1}, "lot"),
    (Security, S, {"symbol": "X", "lotsize": -1}, "lotsize"),
    (Security, L, {"sym": "X", "lot": -1}, "lot"),
    (Bar, S, {"time": 1, "open": 1, "high": 1, "low": 1, "close": 1, "volume": -1}, "volume"),
    (Bar, S, {"time": -1, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}, "time"),
    (Trade, H, {"id": 1, "timestamp": -1}, "timestamp"),
]


@pytest.mark.parametrize(
    ("model", "fmt", "data", "key"),
    NEGATIVE,
    ids=[f"{m.__name__}-{f.value}-{k}" for m, f, _, k in NEGATIVE],
)
def test_negative_where_nothing_can_be_negative(
    model: type[Model], fmt: Format, data: dict[str, Any], key: str
) -> None:
    """Order and trade quantities, book and quote volumes, lot sizes and times are >= 0."""
    assert ">= 0" in refused(model, fmt, data, key)


def test_a_short_position_is_negative() -> None:
    """A position CAN be negative (short): its quantities decode signed."""
    pos = decode_payload(
        payload({"symbol": "SBER", "qtyUnits": -30, "qtyBatch": -3, "qtyT0Batch": -3}),
        Position,
        S,
    )
    assert (pos.qty_units, pos.qty_batch, pos.qty_t0_batch) == (-30.0, -3.0, -3.0)


@pytest.mark.parametrize(
    ("fmt", "data", "key"),
    [
        (S, {"id": "1", "qtyBatch": None, "qty": None}, "qtyBatch"),
        (L, {"id": "1", "qb": None}, "qb"),
        (H, {"id": "1", "qtyBatch": None}, "qtyBatch"),
    ],
)
@pytest.mark.parametrize("model", [Order, StopOrder])
def test_an_order_without_a_quantity_is_refused(
    model: type[Model], fmt: Format, data: dict[str, Any], key: str
) -> None:
    """An order whose quantity is ``null`` (Simple also repeats it as ``qty``) is not an order."""
    assert "null" in refused(model, fmt, data, key)


def test_an_order_built_without_a_quantity_is_sent_without_one() -> None:
    """to_wire() leaves a None quantity out (null would not decode), so what the simulator
    renders always decodes again."""
    order = Order(id="1")
    for fmt in Format:
        wire = to_wire(order, fmt)
        assert "qtyBatch" not in wire and "qb" not in wire and wire.get("qty") is None
        again = decode_payload(msgspec.json.encode(wire), Order, fmt)
        assert msgspec.structs.asdict(again) == msgspec.structs.asdict(order)


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("number", [b"1e400", b"-1e400"])
@pytest.mark.parametrize(
    ("model", "fmt", "template", "key"),
    [
        (Trade, L, b'{"id":1,"px":%s}', "px"),
        (Quote, S, b'{"symbol":"X","last_price":%s}', "last_price"),
        (Position, H, b'{"symbol":"X","qtyUnits":%s}', "qtyUnits"),
        (Order, S, b'{"id":"1","price":%s}', "price"),
    ],
)
def test_a_number_beyond_a_double_is_refused(
    model: type[Model], fmt: Format, template: bytes, key: str, number: bytes
) -> None:
    """JSON ``1e400`` is not a value (it is not even finite as a double): FrameError."""
    refused(model, fmt, template % number, key)


NEGATIVE_PRICES: list[tuple[type[Model], Format, dict[str, Any], str, float]] = [
    (Trade, L, {"id": 1, "q": 1, "px": -12.5}, "price", -12.5),
    (OrderBook, S, {"bids": [{"price": -0.3, "volume": 2}], "asks": []}, "bids", -0.3),
    (Bar, L, {"t": 1, "o": -1.5, "h": -1.0, "l": -2.0, "c": -1.2, "v": 10}, "low", -2.0),
    (Order, S, {"id": "1", "qtyBatch": 1, "price": -3.25}, "price", -3.25),
    (StopOrder, S, {"id": "1", "stopPrice": -4.0}, "stop_price", -4.0),
    (Quote, S, {"symbol": "X", "last_price": -37.63, "bid": -38.0}, "last_price", -37.63),
    (InstrumentPatch, H, {"symbol": "X", "priceMin": -100.0}, "price_min", -100.0),
]


@pytest.mark.parametrize(
    ("model", "fmt", "data", "field", "value"),
    NEGATIVE_PRICES,
    ids=[m.__name__ for m, *_ in NEGATIVE_PRICES],
)
def test_negative_prices_are_values(
    model: type[Model], fmt: Format, data: dict[str, Any], field: str, value: float
) -> None:
    """MOEX allows negative prices on some derivatives: prices decode signed."""
    obj: Any = decode_payload(payload(data), model, fmt)
    got = getattr(obj, field)
    assert (got[0].price if isinstance(got, list) else got) == value


# -- ids and shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "data"),
    [
        (S, {"id": 8939, "exchangeOrderId": 425242362}),
        (L, {"id": "8939", "eid": 425242362}),
        (H, {"id": 8939, "exchangeOrderId": "425242362"}),
    ],
)
def test_stop_order_ids_are_text(fmt: Format, data: dict[str, Any]) -> None:
    """A stop order's ids arrive as numbers or strings and are read as their digits, by
    both decode paths; re-encoding and decoding gives the same model."""
    for obj in (
        decode_payload(payload(data), StopOrder, fmt),
        decode_frame(b'{"data":' + payload(data) + b',"guid":"g"}', StopOrder, fmt),
    ):
        assert (obj.id, obj.exchange_order_id) == ("8939", "425242362")
        assert decode_payload(msgspec.json.encode(to_wire(obj, fmt)), StopOrder, fmt) == obj


def test_stop_order_id_out_of_range_is_refused() -> None:
    """A numeric id is still a 64-bit id: 2**64 or -1 is a FrameError."""
    refused(StopOrder, L, {"id": "1", "eid": 2**64}, "eid")
    refused(StopOrder, S, {"id": -1}, "id")


def test_only_models_that_normalize_pay_for_it() -> None:
    """The id / list normalization runs in the decode classes of StopOrder and AllTradesPage
    only: no other model's decode class has a __post_init__ (hot-path cost: zero)."""
    from alorws.protocol.codec import STREAM_MODELS

    for model in [*STREAM_MODELS.values(), Security, AllTradesPage]:
        for fmt in Format:
            has = "__post_init__" in vars(format_class(model, fmt))
            assert has is (model in (StopOrder, AllTradesPage)), model


@pytest.mark.parametrize(
    "trades",
    [
        {"id": 159, "qty": 1, "price": 142.52},
        [{"id": 159, "qty": 1, "price": 142.52}, {"id": 160, "qty": 2, "price": 142.5}],
        [],
    ],
)
def test_all_trades_history_list_is_one_object_or_an_array(trades: Any) -> None:
    """``list`` of an all-trades history page: ALOR's example has one object, clients read an
    array; both decode to a list of trades."""
    page = decode_payload(payload({"total": 23, "list": trades}), AllTradesPage, S)
    expected = trades if isinstance(trades, list) else [trades]
    assert [t.id for t in page.trades] == [t["id"] for t in expected]
    assert all(isinstance(t, Trade) for t in page.trades)
