"""Test vectors TV-02..TV-10 (docs/protocol.md §10.3): routing and market-data decoding."""

from __future__ import annotations

import msgspec
import pytest

from alorws.errors import ServerRejected, TokenRejected
from alorws.protocol.codec import DataMessage, StatusReply, decode_payload, route
from alorws.protocol.enums import Format, Side, TradingStatus
from alorws.protocol.market import Bar, InstrumentPatch, InstrumentState, OrderBook, Quote, Trade


TV02 = '{"message":"Handled successfully","httpCode":200,"requestGuid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"}'  # noqa: E501
TV03 = '{"requestGuid":"c0ffee00-1111-4222-8333-444455556666","httpCode":401,"message":"Invalid JWT token!"}'  # noqa: E501
TV04 = '{"data":{"b":[{"p":312.47,"v":120},{"p":312.46,"v":540},{"p":312.45,"v":77}],"a":[{"p":312.48,"v":66},{"p":312.49,"v":301},{"p":312.50,"v":1200}],"t":1750663563117,"h":true},"guid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"}'  # noqa: E501
TV05 = '{"data":{"b":[{"p":312.47,"v":95}],"a":[],"t":1750663563412,"h":false},"guid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"}'  # noqa: E501
TV06 = '{"data":{"b":[{"p":91.215,"v":40,"y":17.84}],"a":[{"p":91.390,"v":15,"y":17.61}],"t":1750663600250,"h":false},"guid":"ob-su26238"}'  # noqa: E501
TV07 = '{"data":{"symbol":"LKOH","exchange":"MOEX","description":"ЛУКОЙЛ","prev_close_price":6980.0,"last_price":7013.0,"last_price_timestamp":1750663601,"high_price":7040.5,"low_price":6971.0,"accruedInt":0,"volume":412890,"open_interest":null,"ask":null,"bid":7012.5,"ask_vol":0,"bid_vol":14,"ob_ms_timestamp":1750663601402,"open_price":6990.0,"yield":null,"lotsize":1,"lotvalue":7013.0,"facevalue":0,"type":"CS","total_bid_vol":18211,"total_ask_vol":20990,"accrued_interest":0,"change":33.0,"change_percent":0.47},"guid":"q-lkoh"}'  # noqa: E501
TV08 = [
    '{"data":{"time":1750663500,"open":129.10,"high":129.22,"low":129.05,"close":129.18,"volume":5510},"guid":"bars-gazp-60"}',
    '{"data":{"time":1750663500,"open":129.10,"high":129.25,"low":129.05,"close":129.24,"volume":6020},"guid":"bars-gazp-60"}',
    '{"data":{"time":1750663560,"open":129.24,"high":129.24,"low":129.20,"close":129.21,"volume":310},"guid":"bars-gazp-60"}',
]
TV09 = '{"data":{"id":11482203391,"sym":"SBER","bd":"TQBR","q":25,"px":312.48,"t":1750663603557,"oi":0,"h":false,"s":"buy"},"guid":"at-sber"}'  # noqa: E501
TV10 = [
    '{"data":{"symbol":"SiU5","exchange":"MOEX","board":"RFUD","tradingStatus":17,"tradingStatusInfo":"нормальный период торгов","priceMin":76120,"priceMax":84900,"marginBuy":9871.4,"marginSell":9871.4,"marginSyntetic":0,"theorPrice":0,"theorPriceLimit":0,"volatility":0},"guid":"ins-si"}',  # noqa: E501
    '{"data":{"symbol":"SiU5","tradingStatus":2,"tradingStatusInfo":"перерыв в торгах"},"guid":"ins-si"}',  # noqa: E501
]


def _data(frame: str) -> DataMessage:
    msg = route(frame.encode())
    assert isinstance(msg, DataMessage)
    return msg


def test_tv02_confirmation_is_a_status_reply() -> None:
    """TV-02: a reply without data is a status reply confirming the guid."""
    msg = route(TV02)
    assert msg == StatusReply("7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01", 200, "Handled successfully")
    assert msg.ok and msg.error() is None


def test_tv03_token_rejected() -> None:
    """TV-03: 401 becomes a TokenRejected carrying code, message and guid."""
    msg = route(TV03.encode())
    assert isinstance(msg, StatusReply) and not msg.ok
    err = msg.error()
    assert isinstance(err, TokenRejected) and isinstance(err, ServerRejected)
    assert (err.http_code, err.message) == (401, "Invalid JWT token!")
    assert err.request_guid == "c0ffee00-1111-4222-8333-444455556666"


def test_tv04_slim_book_snapshot() -> None:
    """TV-04: a Slim snapshot gives best bid/ask and the spread."""
    msg = _data(TV04)
    assert msg.guid == "7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"
    book = decode_payload(msg.data, OrderBook, Format.SLIM)
    assert isinstance(book, OrderBook) and book.existing
    assert book.best_bid is not None and book.best_ask is not None
    assert (book.best_bid.price, book.best_bid.volume) == (312.47, 120)
    assert (book.best_ask.price, book.best_ask.volume) == (312.48, 66)
    assert book.best_ask.price - book.best_bid.price == pytest.approx(0.01)
    assert book.ms_timestamp == 1750663563117
    assert len(book.bids) == len(book.asks) == 3


def test_tv05_slim_book_update_with_empty_side() -> None:
    """TV-05: an update is a full replacement; an empty side has no best level."""
    book = decode_payload(_data(TV05).data, OrderBook, Format.SLIM)
    assert not book.existing
    assert [(lv.price, lv.volume) for lv in book.bids] == [(312.47, 95)]
    assert book.asks == [] and book.best_ask is None


def test_tv06_bond_book_yields() -> None:
    """TV-06: the optional Slim yield on bond levels is kept."""
    book = decode_payload(_data(TV06).data, OrderBook, Format.SLIM)
    assert book.bids[0].yield_ == 17.84 and book.asks[0].yield_ == 17.61


def test_tv07_simple_quote_with_null_ask() -> None:
    """TV-07: a null ask is None; last and change decode."""
    msg = _data(TV07)
    q = decode_payload(msg.data, Quote, Format.SIMPLE)
    assert isinstance(q, Quote)
    assert q.symbol == "LKOH" and q.ask is None and q.bid == 7012.5
    assert q.last_price == 7013.0 and q.change == 33.0 and q.change_percent == 0.47
    assert q.spread is None and q.open_interest is None and q.lot_size == 1


def test_tv08_bars_same_time_updates_then_new_bar() -> None:
    """TV-08: same time overwrites the forming bar; a later time starts a new one."""
    bars: dict[int, Bar] = {}
    closed: list[Bar] = []
    for frame in TV08:
        bar = decode_payload(_data(frame).data, Bar, Format.SIMPLE)
        if bars and bar.time > max(bars):
            closed.append(bars[max(bars)])
        bars[bar.time] = bar
    assert bars[1750663500].high == 129.25 and bars[1750663500].close == 129.24
    assert bars[1750663500].volume == 6020
    assert [b.time for b in closed] == [1750663500]
    assert 1750663560 in bars


def test_tv09_slim_trade() -> None:
    """TV-09: a live buyer-initiated trade of 25 lots."""
    t = decode_payload(_data(TV09).data, Trade, Format.SLIM)
    assert (t.id, t.symbol, t.board, t.qty, t.price) == (11482203391, "SBER", "TQBR", 25, 312.48)
    assert t.side is Side.BUY and t.existing is False and t.timestamp == 1750663603557


def test_tv10_instrument_full_then_partial() -> None:
    """TV-10: the second message patches only the status; the price band stays."""
    full = decode_payload(_data(TV10[0]).data, InstrumentPatch, Format.SIMPLE)
    patch = decode_payload(_data(TV10[1]).data, InstrumentPatch, Format.SIMPLE)
    assert patch.price_min is msgspec.UNSET
    state = InstrumentState.from_patch(full).apply(patch)
    assert state.trading_status == TradingStatus.BREAK
    assert state.trading_status_info == "перерыв в торгах"
    assert (state.price_min, state.price_max) == (76120, 84900)
    assert state.margin_synthetic == 0 and state.board == "RFUD"
    assert TradingStatus.describe(state.trading_status) == "break"
