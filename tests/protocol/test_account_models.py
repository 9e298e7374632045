"""Account-stream models (docs/protocol.md §4.6-4.12): test vectors TV-11..TV-15, TV-20 and every
wire format."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import pytest

from alorws.protocol._model import Model, format_class, to_wire
from alorws.protocol.account import (
    CurrencyBuyingPower,
    Iceberg,
    Order,
    OwnTrade,
    Position,
    RepoFields,
    Risk,
    SpectraRisk,
    StopOrder,
    Summary,
)
from alorws.protocol.enums import (
    ClientType,
    Condition,
    Format,
    OrderStatus,
    OrderType,
    RiskStatus,
    Side,
    TimeInForce,
)


S, L, H = Format.SIMPLE, Format.SLIM, Format.HEAVY

# --- Test vectors TV-11..TV-15 and TV-20 (docs/protocol.md §10.3) ----------------------------

TV11 = [
    '{"data":{"volume":0,"currentVolume":0,"symbol":"RUB","brokerSymbol":"MOEX:RUB","portfolio":"D10456","exchange":"MOEX","avgPrice":0,"qtyUnits":154320.55,"openUnits":150000.0,"lotSize":0,"shortName":"Рубль","qtyT0":154320.55,"qtyT1":154320.55,"qtyT2":154320.55,"qtyTFuture":154320.55,"qtyT0Batch":0,"qtyT1Batch":0,"qtyT2Batch":0,"qtyTFutureBatch":0,"qtyBatch":0,"openQtyBatch":0,"qty":0,"open":0,"dailyUnrealisedPl":0,"unrealisedPl":0,"isCurrency":true,"existing":true},"guid":"pos-d10456"}',
    '{"data":{"volume":31241.0,"currentVolume":31248.0,"symbol":"SBER","brokerSymbol":"MOEX:SBER","portfolio":"D10456","exchange":"MOEX","avgPrice":312.41,"qtyUnits":100,"openUnits":0,"lotSize":10,"shortName":"Сбербанк","qtyT0":0,"qtyT1":100,"qtyT2":100,"qtyTFuture":100,"qtyT0Batch":0,"qtyT1Batch":10,"qtyT2Batch":10,"qtyTFutureBatch":10,"qtyBatch":10,"openQtyBatch":0,"qty":10,"open":0,"dailyUnrealisedPl":7.0,"unrealisedPl":7.0,"isCurrency":false,"existing":false},"guid":"pos-d10456"}',
]
TV12 = '{"data":{"buyingPowerAtMorning":150000.0,"buyingPower":123079.55,"profit":7.0,"profitRate":0.0047,"portfolioEvaluation":185568.55,"portfolioLiquidationValue":185568.55,"initialMargin":0,"correctedMargin":0,"riskBeforeForcePositionClosing":185568.55,"commission":15.62,"buyingPowerByCurrency":[{"currency":"RUB","buyingPower":123079.55}]},"guid":"sum-d10456"}'  # noqa: E501
TV13 = [
    '{"data":{"id":"53420017781","symbol":"SBER","board":"TQBR","brokerSymbol":"MOEX:SBER","portfolio":"D10456","exchange":"MOEX","comment":null,"type":"limit","side":"buy","status":"working","transTime":"2025-06-23T07:26:01.4410000Z","updateTime":"2025-06-23T07:26:01.4410000Z","endTime":"2025-06-23T23:59:59.9990000Z","qtyUnits":100,"qtyBatch":10,"qty":10,"filledQtyUnits":0,"filledQtyBatch":0,"filled":0,"price":312.41,"existing":false,"timeInForce":"oneday","iceberg":null,"volume":31241.0},"guid":"ord-d10456"}',
    '{"data":{"id":"53420017781","symbol":"SBER","board":"TQBR","brokerSymbol":"MOEX:SBER","portfolio":"D10456","exchange":"MOEX","comment":null,"type":"limit","side":"buy","status":"filled","transTime":"2025-06-23T07:26:01.4410000Z","updateTime":"2025-06-23T07:26:03.0120000Z","endTime":"2025-06-23T23:59:59.9990000Z","qtyUnits":100,"qtyBatch":10,"qty":10,"filledQtyUnits":100,"filledQtyBatch":10,"filled":10,"price":312.41,"existing":false,"timeInForce":"oneday","iceberg":null,"volume":31241.0},"guid":"ord-d10456"}',
]
TV14 = '{"data":{"id":"9012345678","orderno":"53420017781","comment":null,"symbol":"SBER","brokerSymbol":"MOEX:SBER","exchange":"MOEX","date":"2025-06-23T07:26:02.9870000Z","board":"TQBR","qtyUnits":100,"qtyBatch":10,"qty":10,"price":312.41,"accruedInt":0,"side":"buy","existing":false,"commission":15.62,"repoSpecificFields":null,"volume":31241.0},"guid":"trd-d10456"}'  # noqa: E501
TV15 = '{"data":{"id":"120455","exchangeOrderId":null,"symbol":"GAZP","brokerSymbol":"MOEX:GAZP","portfolio":"D10456","exchange":"MOEX","comment":null,"board":"TQBR","type":"stoplimit","side":"sell","condition":"LessOrEqual","status":"working","transTime":"2025-06-23T07:30:10.0000000Z","updateTime":null,"endTime":"2025-06-30T20:59:59.0000000Z","error":null,"qtyUnits":50,"qtyBatch":5,"qty":5,"filled":0,"filledQtyUnits":0,"filledQtyBatch":0,"price":125.50,"avg_price":0,"stopPrice":126.00,"existing":true,"timeInForce":"oneday","iceberg":null,"volume":6275.0,"protectingSeconds":15},"guid":"sto-d10456"}'  # noqa: E501
TV20 = [
    '{"data":{"p":"D10456","ex":"MOEX","pe":185568.55,"plv":185568.55,"mgi":0,"mgmn":0,"mgc":0,"r1":185568.55,"r2":185568.55,"rid":1,"ct":"StandardRisk","fpos":false,"nq":false,"rst":"Ok","t":"2025-06-23T07:31:00.1200000Z"},"guid":"rsk-d10456"}',
    '{"data":{"p":"7500XYZ","f":48211.7,"b":9871.4,"fee":12.0,"o":58000.0,"a":58083.1,"pa":0,"mgc":0,"mgp":-83.1,"ivm":-80.9,"nov":0,"pr":9871.4,"lim":false},"guid":"frk-7500xyz"}',
]


class _Frame(msgspec.Struct):
    data: msgspec.Raw
    guid: str


M = TypeVar("M", bound=Model)


def _decode(frame: str, model: type[M], fmt: Format) -> M:
    """Decode only the ``data`` object of a data frame with the model's ``fmt`` class."""
    raw = msgspec.json.decode(frame, type=_Frame).data
    return msgspec.json.decode(raw, type=format_class(model, fmt))


def _plain(obj: Any) -> Any:
    """A model as nested plain dicts of field name -> value (decode subclasses compare equal)."""
    if isinstance(obj, Model):
        return {f.name: _plain(getattr(obj, f.name)) for f in msgspec.structs.fields(obj)}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def test_tv11_simple_positions() -> None:
    """TV-11: a cash position from the snapshot, then a live SBER position of 10 lots."""
    cash, sber = (_decode(f, Position, S) for f in TV11)
    assert isinstance(cash, Position) and isinstance(sber, Position)
    assert cash.symbol == "RUB" and cash.is_currency is True and cash.existing is True
    assert cash.qty_units == 154320.55 and cash.short_name == "Рубль"
    assert sber.symbol == "SBER" and sber.is_currency is False and sber.existing is False
    assert sber.qty_batch == 10 and sber.qty_units == 100 and sber.lot_size == 10
    assert sber.qty_batch * sber.lot_size == sber.qty_units
    assert sber.avg_price == 312.41 and sber.unrealised_pl == 7.0


def test_tv12_simple_summary() -> None:
    """TV-12: the summary's totals and its per-currency buying power."""
    summary = _decode(TV12, Summary, S)
    assert summary.buying_power == 123079.55 and summary.buying_power_at_morning == 150000.0
    assert summary.portfolio_evaluation == 185568.55 and summary.commission == 15.62
    assert _plain(summary.currency_buying_power) == [{"currency": "RUB", "buying_power": 123079.55}]
    assert summary.buying_power_in("RUB") == 123079.55 and summary.buying_power_in("USD") is None


def test_tv13_simple_order_lifecycle() -> None:
    """TV-13: upserting by id leaves the order filled 10/10 lots."""
    book: dict[str, Order] = {}
    for frame in TV13:
        order = _decode(frame, Order, S)
        book[order.id] = order
    assert list(book) == ["53420017781"]
    final = book["53420017781"]
    assert final.status is OrderStatus.FILLED
    assert (final.filled_qty_batch, final.qty_batch) == (10, 10)
    assert final.type is OrderType.LIMIT and final.side is Side.BUY
    assert final.time_in_force is TimeInForce.ONE_DAY and final.iceberg is None
    assert final.comment is None and final.update_time == "2025-06-23T07:26:03.0120000Z"


def test_tv14_simple_own_trade() -> None:
    """TV-14: the fill links to order 53420017781, which Heavy carries under ``orderNo``."""
    trade = _decode(TV14, OwnTrade, S)
    assert trade.id == "9012345678" and trade.order_no == "53420017781"
    assert trade.qty_batch == 10 and trade.price == 312.41 and trade.side is Side.BUY
    assert trade.repo_specific_fields is None and trade.existing is False
    heavy = to_wire(trade, H)
    assert heavy["orderNo"] == "53420017781" and "orderno" not in heavy


def test_tv15_simple_stop_limit() -> None:
    """TV-15: mixed-case ``LessOrEqual`` is normalised; trigger 126.00, limit 125.50."""
    stop = _decode(TV15, StopOrder, S)
    assert stop.condition is Condition.LESS_OR_EQUAL and stop.condition.value == "lessorequal"
    assert stop.stop_price == 126.0 and stop.price == 125.5
    assert stop.type is OrderType.STOP_LIMIT and stop.side is Side.SELL
    assert stop.exchange_order_id is None and stop.update_time is None and stop.existing is True
    assert stop.avg_price == 0 and stop.protecting_seconds == 15 and stop.qty_batch == 5


def test_tv20_slim_risks() -> None:
    """TV-20: Slim risks map per docs/protocol.md §4.8; FORTS risks per docs/protocol.md §4.9 with
    var margin computed."""
    risk = _decode(TV20[0], Risk, L)
    assert risk.portfolio == "D10456" and risk.exchange == "MOEX"
    assert risk.initial_margin == 0 and risk.minimal_margin == 0 and risk.corrected_margin == 0
    assert risk.risk_coverage_ratio_one == risk.risk_coverage_ratio_two == 185568.55
    assert risk.risk_category_id == 1 and risk.client_type is ClientType.STANDARD_RISK
    assert risk.risk_status is RiskStatus.OK and risk.has_forbidden_positions is False
    assert risk.calculation_time == "2025-06-23T07:31:00.1200000Z"
    forts = _decode(TV20[1], SpectraRisk, L)
    assert forts.portfolio == "7500XYZ" and forts.money_free == 48211.7
    assert (
        forts.money_blocked == 9871.4 and forts.pos_risk == 9871.4 and forts.is_limits_set is False
    )
    assert forts.var_margin is None
    assert forts.variation_margin == pytest.approx(-83.1)


# --- Every model in every format ----------------------------------------------------------------

ICEBERG = Iceberg(
    creation_fixed_quantity=5,
    creation_variance_quantity=2,
    visible_quantity=50.0,
    visible_quantity_batch=5,
    visible_filled_quantity=10.0,
    visible_filled_quantity_batch=1,
)
ICEBERG_LONG = {
    "creationFixedQuantity": 5,
    "creationVarianceQuantity": 2,
    "visibleQuantity": 50.0,
    "visibleQuantityBatch": 5,
    "visibleFilledQuantity": 10.0,
    "visibleFilledQuantityBatch": 1,
}
ICEBERG_SLIM = {"cf": 5, "cv": 2, "v": 50.0, "vb": 5, "vf": 10.0, "vfb": 1}

REPO = RepoFields(
    repo_rate=16.5,
    ext_ref="R-1",
    repo_term=7,
    account="L01-00000F00",
    trade_type_info="REPO",
    value=100000.0,
    yield_=16.4,
)
REPO_LONG = {
    "repoRate": 16.5,
    "extRef": "R-1",
    "repoTerm": 7,
    "account": "L01-00000F00",
    "tradeTypeInfo": "REPO",
    "value": 100000.0,
    "yield": 16.4,
}
REPO_SLIM = {
    "r": 16.5,
    "exr": "R-1",
    "tm": 7,
    "a": "L01-00000F00",
    "t": "REPO",
    "v": 100000.0,
    "y": 16.4,
}

POSITION = Position(
    symbol="SBER",
    portfolio="D10456",
    broker_symbol="MOEX:SBER",
    exchange="MOEX",
    short_name="Сбербанк",
    volume=31241.0,
    current_volume=31248.0,
    avg_price=312.41,
    qty_units=100.0,
    open_units=0.0,
    lot_size=10.0,
    qty_t0=0.0,
    qty_t1=100.0,
    qty_t2=100.0,
    qty_t_future=100.0,
    qty_t0_batch=0,
    qty_t1_batch=10,
    qty_t2_batch=10,
    qty_t_future_batch=10,
    qty_batch=10,
    open_qty_batch=0,
    daily_unrealised_pl=7.0,
    unrealised_pl=7.5,
    is_currency=False,
    existing=True,
)
_POSITION_HEAVY = {
    "volume": 31241.0,
    "currentVolume": 31248.0,
    "symbol": "SBER",
    "brokerSymbol": "MOEX:SBER",
    "portfolio": "D10456",
    "exchange": "MOEX",
    "avgPrice": 312.41,
    "qtyUnits": 100.0,
    "openUnits": 0.0,
    "lotSize": 10.0,
    "shortName": "Сбербанк",
    "qtyT0": 0.0,
    "qtyT1": 100.0,
    "qtyT2": 100.0,
    "qtyTFuture": 100.0,
    "qtyT0Batch": 0,
    "qtyT1Batch": 10,
    "qtyT2Batch": 10,
    "qtyTFutureBatch": 10,
    "openQtyBatch": 0,
    "dailyUnrealisedPl": 7.0,
    "unrealisedPl": 7.5,
    "isCurrency": False,
    "existing": True,
}
_POSITION_SIMPLE = {**_POSITION_HEAVY, "qtyBatch": 10, "qty": 10, "open": 0}
_POSITION_SLIM = {
    "v": 31241.0,
    "cv": 31248.0,
    "sym": "SBER",
    "tic": "MOEX:SBER",
    "p": "D10456",
    "ex": "MOEX",
    "pxavg": 312.41,
    "q": 100.0,
    "o": 0.0,
    "lot": 10.0,
    "n": "Сбербанк",
    "q0": 0.0,
    "q1": 100.0,
    "q2": 100.0,
    "qf": 100.0,
    "upd": 7.0,
    "up": 7.5,
    "cur": False,
    "h": True,
}
_POSITION_LOTS = (
    "qty_t0_batch",
    "qty_t1_batch",
    "qty_t2_batch",
    "qty_t_future_batch",
    "qty_batch",
    "open_qty_batch",
)

SUMMARY = Summary(
    buying_power_at_morning=150000.0,
    buying_power=123079.55,
    profit=7.0,
    profit_rate=0.0047,
    portfolio_evaluation=185568.55,
    portfolio_liquidation_value=185500.0,
    initial_margin=1000.0,
    corrected_margin=900.0,
    risk_before_force_position_closing=184568.55,
    commission=15.62,
    buying_power_by_currency=[
        CurrencyBuyingPower(currency="RUB", buying_power=123079.55),
        CurrencyBuyingPower(currency="USD", buying_power=1400.0),
    ],
)
_SUMMARY_LONG = {
    "buyingPowerAtMorning": 150000.0,
    "buyingPower": 123079.55,
    "profit": 7.0,
    "profitRate": 0.0047,
    "portfolioEvaluation": 185568.55,
    "portfolioLiquidationValue": 185500.0,
    "initialMargin": 1000.0,
    "correctedMargin": 900.0,
    "riskBeforeForcePositionClosing": 184568.55,
    "commission": 15.62,
    "buyingPowerByCurrency": [
        {"currency": "RUB", "buyingPower": 123079.55},
        {"currency": "USD", "buyingPower": 1400.0},
    ],
}
_SUMMARY_SLIM = {
    "bpm": 150000.0,
    "bp": 123079.55,
    "p": 7.0,
    "pr": 0.0047,
    "pe": 185568.55,
    "plv": 185500.0,
    "im": 1000.0,
    "mgc": 900.0,
    "r": 184568.55,
    "cms": 15.62,
    "bpv2": [{"cr": "RUB", "bp": 123079.55}, {"cr": "USD", "bp": 1400.0}],
}

RISK = Risk(
    portfolio="D10456",
    exchange="MOEX",
    portfolio_evaluation=185568.55,
    portfolio_liquidation_value=185500.0,
    initial_margin=2000.0,
    minimal_margin=1000.0,
    corrected_margin=1500.0,
    risk_coverage_ratio_one=-10.0,
    risk_coverage_ratio_two=5.0,
    risk_category_id=1,
    client_type=ClientType.HIGH_RISK,
    has_forbidden_positions=False,
    has_negative_quantity=True,
    risk_status=RiskStatus.DEMAND,
    calculation_time="2025-06-23T07:31:00.1200000Z",
)
_RISK_LONG = {
    "portfolio": "D10456",
    "exchange": "MOEX",
    "portfolioEvaluation": 185568.55,
    "portfolioLiquidationValue": 185500.0,
    "initialMargin": 2000.0,
    "minimalMargin": 1000.0,
    "correctedMargin": 1500.0,
    "riskCoverageRatioOne": -10.0,
    "riskCoverageRatioTwo": 5.0,
    "riskCategoryId": 1,
    "clientType": "HighRisk",
    "hasForbiddenPositions": False,
    "hasNegativeQuantity": True,
    "riskStatus": "Demand",
    "calculationTime": "2025-06-23T07:31:00.1200000Z",
}
_RISK_SLIM = {
    "p": "D10456",
    "ex": "MOEX",
    "pe": 185568.55,
    "plv": 185500.0,
    "mgi": 2000.0,
    "mgmn": 1000.0,
    "mgc": 1500.0,
    "r1": -10.0,
    "r2": 5.0,
    "rid": 1,
    "ct": "HighRisk",
    "fpos": False,
    "nq": True,
    "rst": "Demand",
    "t": "2025-06-23T07:31:00.1200000Z",
}

SPECTRA = SpectraRisk(
    portfolio="7500XYZ",
    money_free=48211.7,
    money_blocked=9871.4,
    fee=12.0,
    money_old=58000.0,
    money_amount=58083.1,
    money_pledge_amount=100.0,
    vm_inter_cl=20.0,
    vm_current_positions=-83.0,
    var_margin=-63.0,
    indicative_var_margin=-80.9,
    net_option_value=1.5,
    pos_risk=9871.4,
    is_limits_set=True,
    balance_money=58083.1,
)
_SPECTRA_HEAVY = {
    "portfolio": "7500XYZ",
    "moneyFree": 48211.7,
    "moneyBlocked": 9871.4,
    "fee": 12.0,
    "moneyOld": 58000.0,
    "moneyAmount": 58083.1,
    "moneyPledgeAmount": 100.0,
    "vmInterCl": 20.0,
    "vmCurrentPositions": -83.0,
    "varMargin": -63.0,
    "indicativeVarMargin": -80.9,
    "netOptionValue": 1.5,
    "posRisk": 9871.4,
    "isLimitsSet": True,
}
_SPECTRA_SIMPLE = {**_SPECTRA_HEAVY, "balanceMoney": 58083.1}
_SPECTRA_SLIM = {
    "p": "7500XYZ",
    "f": 48211.7,
    "b": 9871.4,
    "fee": 12.0,
    "o": 58000.0,
    "a": 58083.1,
    "pa": 100.0,
    "mgc": 20.0,
    "mgp": -83.0,
    "ivm": -80.9,
    "nov": 1.5,
    "pr": 9871.4,
    "lim": True,
}

OWN_TRADE = OwnTrade(
    id="9012345678",
    order_no="53420017781",
    comment="repo leg",
    symbol="SBER",
    broker_symbol="MOEX:SBER",
    exchange="MOEX",
    date="2025-06-23T07:26:02.9870000Z",
    board="EQRP",
    qty_units=100.0,
    qty_batch=10,
    price=312.41,
    accrued_int=0.0,
    side=Side.SELL,
    existing=True,
    commission=15.62,
    repo_specific_fields=REPO,
    volume=31241.0,
    settle_date="2025-06-24",
)
_OWN_TRADE_COMMON = {
    "id": "9012345678",
    "comment": "repo leg",
    "symbol": "SBER",
    "brokerSymbol": "MOEX:SBER",
    "exchange": "MOEX",
    "date": "2025-06-23T07:26:02.9870000Z",
    "board": "EQRP",
    "qtyUnits": 100.0,
    "qtyBatch": 10,
    "price": 312.41,
    "accruedInt": 0.0,
    "side": "sell",
    "existing": True,
    "commission": 15.62,
    "repoSpecificFields": REPO_LONG,
    "volume": 31241.0,
}
_OWN_TRADE_SIMPLE = {**_OWN_TRADE_COMMON, "orderno": "53420017781", "qty": 10}
_OWN_TRADE_HEAVY = {**_OWN_TRADE_COMMON, "orderNo": "53420017781", "settleDate": "2025-06-24"}
_OWN_TRADE_SLIM = {
    "id": "9012345678",
    "eid": "53420017781",
    "cmt": "repo leg",
    "sym": "SBER",
    "tic": "MOEX:SBER",
    "ex": "MOEX",
    "d": "2025-06-23T07:26:02.9870000Z",
    "b": "EQRP",
    "q": 100.0,
    "qb": 10,
    "px": 312.41,
    "ai": 0.0,
    "s": "sell",
    "h": True,
    "cms": 15.62,
    "r": REPO_SLIM,
    "v": 31241.0,
}

ORDER = Order(
    id="53420017781",
    symbol="SBER",
    board="TQBR",
    broker_symbol="MOEX:SBER",
    portfolio="D10456",
    exchange="MOEX",
    comment="iceberg",
    type=OrderType.LIMIT,
    side=Side.BUY,
    status=OrderStatus.WORKING,
    trans_time="2025-06-23T07:26:01.4410000Z",
    update_time="2025-06-23T07:26:02.0000000Z",
    end_time="2025-06-23T23:59:59.9990000Z",
    qty_units=500.0,
    qty_batch=50,
    filled_qty_units=10.0,
    filled_qty_batch=1,
    price=312.41,
    existing=False,
    time_in_force=TimeInForce.GOOD_TILL_CANCELLED,
    iceberg=ICEBERG,
    volume=156205.0,
)
_ORDER_LONG = {
    "id": "53420017781",
    "symbol": "SBER",
    "board": "TQBR",
    "brokerSymbol": "MOEX:SBER",
    "portfolio": "D10456",
    "exchange": "MOEX",
    "comment": "iceberg",
    "type": "limit",
    "side": "buy",
    "status": "working",
    "transTime": "2025-06-23T07:26:01.4410000Z",
    "updateTime": "2025-06-23T07:26:02.0000000Z",
    "endTime": "2025-06-23T23:59:59.9990000Z",
    "qtyUnits": 500.0,
    "qtyBatch": 50,
    "filledQtyUnits": 10.0,
    "filledQtyBatch": 1,
    "price": 312.41,
    "existing": False,
    "timeInForce": "goodtillcancelled",
    "iceberg": ICEBERG_LONG,
    "volume": 156205.0,
}
_ORDER_SLIM = {
    "id": "53420017781",
    "sym": "SBER",
    "bd": "TQBR",
    "tic": "MOEX:SBER",
    "p": "D10456",
    "ex": "MOEX",
    "cmt": "iceberg",
    "t": "limit",
    "s": "buy",
    "st": "working",
    "tt": "2025-06-23T07:26:01.4410000Z",
    "ut": "2025-06-23T07:26:02.0000000Z",
    "et": "2025-06-23T23:59:59.9990000",
    "q": 500.0,
    "qb": 50,
    "fq": 10.0,
    "fqb": 1,
    "px": 312.41,
    "h": False,
    "tf": "goodtillcancelled",
    "i": ICEBERG_SLIM,
    "v": 156205.0,
}

STOP_ORDER = StopOrder(
    id="120455",
    exchange_order_id="53420019002",
    symbol="GAZP",
    broker_symbol="MOEX:GAZP",
    portfolio="D10456",
    exchange="MOEX",
    comment="tp",
    board="TQBR",
    type=OrderType.STOP,
    side=Side.SELL,
    condition=Condition.MORE_OR_EQUAL,
    status=OrderStatus.FILLED,
    trans_time="2025-06-23T07:30:10.0000000Z",
    update_time="2025-06-23T08:00:00.0000000Z",
    end_time="2025-06-30T20:59:59.0000000Z",
    error=None,
    qty_units=50.0,
    qty_batch=5,
    filled_qty_units=50.0,
    filled_qty_batch=5,
    price=0.0,
    avg_price=130.12,
    stop_price=130.0,
    existing=False,
    time_in_force=TimeInForce.ONE_DAY,
    iceberg=ICEBERG,
    volume=6506.0,
    protecting_seconds=30,
)
_STOP_COMMON = {
    "id": "120455",
    "exchangeOrderId": "53420019002",
    "symbol": "GAZP",
    "brokerSymbol": "MOEX:GAZP",
    "portfolio": "D10456",
    "exchange": "MOEX",
    "comment": "tp",
    "board": "TQBR",
    "type": "stop",
    "side": "sell",
    "condition": "moreorequal",
    "status": "filled",
    "transTime": "2025-06-23T07:30:10.0000000Z",
    "updateTime": "2025-06-23T08:00:00.0000000Z",
    "endTime": "2025-06-30T20:59:59.0000000Z",
    "error": None,
    "qtyUnits": 50.0,
    "qtyBatch": 5,
    "filledQtyUnits": 50.0,
    "filledQtyBatch": 5,
    "price": 0.0,
    "stopPrice": 130.0,
    "existing": False,
    "timeInForce": "oneday",
    "iceberg": ICEBERG_LONG,
    "volume": 6506.0,
    "protectingSeconds": 30,
}
_STOP_SIMPLE = {**_STOP_COMMON, "avg_price": 130.12, "qty": 5, "filled": 5}
_STOP_HEAVY = {**_STOP_COMMON, "avgPrice": 130.12}
_STOP_SLIM = {
    "id": "120455",
    "eid": "53420019002",
    "sym": "GAZP",
    "tic": "MOEX:GAZP",
    "p": "D10456",
    "ex": "MOEX",
    "cmt": "tp",
    "bd": "TQBR",
    "t": "stop",
    "s": "sell",
    "cnd": "moreorequal",
    "st": "filled",
    "tt": "2025-06-23T07:30:10.0000000Z",
    "ut": "2025-06-23T08:00:00.0000000Z",
    "et": "2025-06-30T20:59:59.0000000Z",
    "err": None,
    "q": 50.0,
    "qb": 5,
    "fq": 50.0,
    "fqb": 5,
    "px": 0.0,
    "pxavg": 130.12,
    "pxs": 130.0,
    "h": False,
    "tf": "oneday",
    "i": ICEBERG_SLIM,
    "v": 6506.0,
    "psec": 30,
}

# (full model, format, that format's payload, fields the format lacks, extra expected overrides)
CASES: list[tuple[Model, Format, dict[str, Any], tuple[str, ...], dict[str, Any]]] = [
    (POSITION, S, _POSITION_SIMPLE, (), {}),
    (POSITION, L, _POSITION_SLIM, _POSITION_LOTS, {}),
    (POSITION, H, _POSITION_HEAVY, ("qty_batch",), {}),
    (SUMMARY, S, _SUMMARY_LONG, (), {}),
    (SUMMARY, L, _SUMMARY_SLIM, (), {}),
    (SUMMARY, H, _SUMMARY_LONG, (), {}),
    (RISK, S, _RISK_LONG, (), {}),
    (RISK, L, _RISK_SLIM, (), {}),
    (RISK, H, _RISK_LONG, (), {}),
    (SPECTRA, S, _SPECTRA_SIMPLE, (), {}),
    (SPECTRA, L, _SPECTRA_SLIM, ("var_margin", "balance_money"), {}),
    (SPECTRA, H, _SPECTRA_HEAVY, ("balance_money",), {}),
    (OWN_TRADE, S, _OWN_TRADE_SIMPLE, ("settle_date",), {}),
    (OWN_TRADE, L, _OWN_TRADE_SLIM, ("settle_date",), {}),
    (OWN_TRADE, H, _OWN_TRADE_HEAVY, (), {}),
    (ORDER, S, {**_ORDER_LONG, "qty": 50, "filled": 1}, (), {}),
    # Slim's `et` without the `Z`, as in ALOR's example (docs/protocol.md §4.11): kept verbatim.
    (ORDER, L, _ORDER_SLIM, (), {"end_time": "2025-06-23T23:59:59.9990000"}),
    (ORDER, H, _ORDER_LONG, (), {}),
    (STOP_ORDER, S, _STOP_SIMPLE, (), {}),
    (STOP_ORDER, L, _STOP_SLIM, (), {}),
    (STOP_ORDER, H, _STOP_HEAVY, (), {}),
]
PARAMS = [pytest.param(*case, id=f"{type(case[0]).__name__}-{case[1].value}") for case in CASES]


def _expected(full: Model, absent: tuple[str, ...], overrides: dict[str, Any]) -> Model:
    """``full`` with the fields a format lacks reset to their defaults."""
    defaults = {f.name: f.default for f in msgspec.structs.fields(full) if f.name in absent}
    return msgspec.structs.replace(full, **defaults, **overrides)


@pytest.mark.parametrize(("full", "fmt", "payload", "absent", "overrides"), PARAMS)
def test_format_payload_decodes(
    full: Model,
    fmt: Format,
    payload: dict[str, Any],
    absent: tuple[str, ...],
    overrides: dict[str, Any],
) -> None:
    """A payload written with the format's keys decodes to the normalized values."""
    model = type(full)
    obj = msgspec.json.decode(msgspec.json.encode(payload), type=format_class(model, fmt))
    assert isinstance(obj, model)
    assert _plain(obj) == _plain(_expected(full, absent, overrides))


@pytest.mark.parametrize(("full", "fmt", "payload", "absent", "overrides"), PARAMS)
def test_to_wire_emits_the_format_keys(
    full: Model,
    fmt: Format,
    payload: dict[str, Any],
    absent: tuple[str, ...],
    overrides: dict[str, Any],
) -> None:
    """``to_wire`` gives exactly the format's keys (the docs/protocol.md §4 tables) and values."""
    wire = to_wire(_expected(full, absent, overrides), fmt)
    assert set(wire) == set(payload)
    assert msgspec.json.decode(msgspec.json.encode(wire)) == payload


# --- Specific quirks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "key"), [(S, "orderno"), (L, "eid"), (H, "orderNo")], ids=["simple", "slim", "heavy"]
)
def test_own_trade_parent_order_key(fmt: Format, key: str) -> None:
    """Simple ``orderno``, Slim ``eid`` and Heavy ``orderNo`` all land in ``order_no``."""
    raw = msgspec.json.encode({"id": "1", key: "53420017781"})
    trade = msgspec.json.decode(raw, type=format_class(OwnTrade, fmt))
    assert trade.order_no == "53420017781"


def test_summary_slim_accepts_bp2v() -> None:
    """Slim ``bp2v`` (the spelling of ALOR's example) still gives the buying power by currency."""
    raw = b'{"bp":1000.0,"bp2v":[{"cr":"RUB","bp":900.0},{"cr":"CNY","bp":100.0}]}'
    summary = msgspec.json.decode(raw, type=format_class(Summary, L))
    assert summary.buying_power_by_currency is None
    assert _plain(summary.currency_buying_power) == [
        {"currency": "RUB", "buying_power": 900.0},
        {"currency": "CNY", "buying_power": 100.0},
    ]
    assert summary.buying_power_in("CNY") == 100.0


def test_summary_slim_bpv2_and_nothing() -> None:
    """Slim ``bpv2`` is read; a summary without either list has no per-currency power."""
    with_bpv2 = msgspec.json.decode(
        b'{"bpv2":[{"cr":"RUB","bp":1.0}]}', type=format_class(Summary, L)
    )
    assert with_bpv2.buying_power_in("RUB") == 1.0
    assert with_bpv2.buying_power_by_currency_alt is msgspec.UNSET
    empty = msgspec.json.decode(b"{}", type=format_class(Summary, L))
    assert empty.currency_buying_power == [] and empty.buying_power_in("RUB") is None


def test_spectra_variation_margin() -> None:
    """``variation_margin`` prefers ``var_margin`` and otherwise sums its two parts."""
    assert SPECTRA.variation_margin == -63.0
    computed = SpectraRisk(portfolio="7500XYZ", vm_inter_cl=20.0, vm_current_positions=-83.0)
    assert computed.variation_margin == pytest.approx(-63.0)
    assert SpectraRisk(portfolio="7500XYZ", vm_inter_cl=20.0).variation_margin is None


MINIMAL = [
    (Position, {"symbol": "SBER"}),
    (Summary, {}),
    (Risk, {"portfolio": "D10456"}),
    (SpectraRisk, {"portfolio": "7500XYZ"}),
    (OwnTrade, {"id": "1"}),
    (Order, {"id": "1"}),
    (StopOrder, {"id": "1"}),
]


@pytest.mark.parametrize(
    ("model", "payload"), [pytest.param(m, p, id=m.__name__) for m, p in MINIMAL]
)
@pytest.mark.parametrize("fmt", list(Format), ids=lambda f: f.value)
def test_minimal_payload_decodes(model: type[Model], payload: dict[str, Any], fmt: Format) -> None:
    """A payload carrying only the identity fields decodes; the rest take defaults."""
    key = {"symbol": {L: "sym"}, "portfolio": {L: "p"}}
    wire = {key.get(k, {}).get(fmt, k): v for k, v in payload.items()}
    obj = msgspec.json.decode(msgspec.json.encode(wire), type=format_class(model, fmt))
    assert isinstance(obj, model)
    if hasattr(obj, "existing"):
        assert obj.existing is False
