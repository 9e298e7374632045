"""Normalized models of the account (portfolio) streams (docs/protocol.md §4.6-4.12).

One model per stream, the same snake_case field names in every format (named after the Heavy
keys, docs/protocol.md §3.5). Ids of orders, own trades and stop orders are strings (a stop order's
ids arrive as JSON numbers too: they are read as text). Money, prices and quantities in pieces
("units") are ``float``. Lots (``*_batch``) are ``int`` for orders, stop orders and own trades (an
order is for whole lots) and ``float`` for positions: a money position's lot size is 1 and its lots
are its amount (``28692.09`` roubles), which the server sends as a fractional number.
ISO-8601 times stay strings; see :mod:`alorws.protocol.timeutil` for conversions.

Ranges, checked while decoding (a value outside fails as a ``FrameError`` naming the field; see
:mod:`alorws.protocol._model`): prices and money are signed (negative prices exist on MOEX
derivatives); lots of orders, stop orders and trades (total and filled) and iceberg sizes are
``0..2**63-1``, their quantities in pieces and lot sizes ``>= 0``; position quantities are
signed (a short position is negative). Every float is finite.
"""

from __future__ import annotations

import msgspec

from ._model import (
    Count,
    Int64,
    Model,
    Money,
    Price,
    Qty,
    Rate,
    Size,
    Wire,
    formats,
    id_text,
)
from .enums import ClientType, Condition, OrderStatus, OrderType, RiskStatus, Side, TimeInForce


__all__ = [
    "CurrencyBuyingPower",
    "Iceberg",
    "Order",
    "OwnTrade",
    "Position",
    "RepoFields",
    "Risk",
    "SpectraRisk",
    "StopOrder",
    "Summary",
]


@formats(
    slim={
        "symbol": "sym",
        "broker_symbol": "tic",
        "portfolio": "p",
        "exchange": "ex",
        "short_name": "n",
        "volume": "v",
        "current_volume": "cv",
        "avg_price": "pxavg",
        "qty_units": "q",
        "open_units": "o",
        "lot_size": "lot",
        "qty_t0": "q0",
        "qty_t1": "q1",
        "qty_t2": "q2",
        "qty_t_future": "qf",
        "qty_t0_batch": None,
        "qty_t1_batch": None,
        "qty_t2_batch": None,
        "qty_t_future_batch": None,
        "qty_batch": None,
        "open_qty_batch": None,
        "daily_unrealised_pl": "upd",
        "unrealised_pl": "up",
        "is_currency": "cur",
        "existing": "h",
    },
    heavy={"qty_batch": None},
    simple_extras={"qty": lambda p: p.qty_batch, "open": lambda p: p.open_qty_batch},
)
class Position(Model, frozen=True):
    """One position of a portfolio (``PositionsGetAndSubscribeV2``, docs/protocol.md §4.6).

    Money balances are positions with ``is_currency`` set (e.g. symbol ``RUB``). A position that
    drops to zero arrives with zero quantities. Slim carries no quantities in lots at all;
    ``qty_batch`` is Simple-only (Heavy dropped it; Simple also repeats it as ``qty``, and
    ``open_qty_batch`` as ``open``). ``existing`` marks the initial snapshot.

    Quantities are ``float``, lots included: a money position (lot size 1) has fractional lots,
    e.g. ``qty_t0_batch == 28692.09`` roubles (the server's type is ``decimal``), and an ``int``
    would refuse it. They are signed (a short position is negative); ``lot_size`` is ``>= 0``.
    For a security the lots are whole numbers: ``int(p.qty_batch)`` is exact.
    """

    # Wire order of TV-11 (msgspec decodes in-order keys fastest), the required `symbol` first.
    symbol: str
    volume: Money | None = None  # value at average price
    current_volume: Money | None = None  # value at current price
    broker_symbol: str | None = None  # "EXCHANGE:TICKER"
    portfolio: str | None = None
    exchange: str | None = None
    avg_price: Price | None = None
    qty_units: Qty | None = None
    open_units: Qty | None = None  # at session open
    lot_size: Size | None = None
    short_name: str | None = None
    qty_t0: Qty | None = None
    qty_t1: Qty | None = None
    qty_t2: Qty | None = None
    qty_t_future: Qty | None = None
    qty_t0_batch: Qty | None = None  # not in Slim
    qty_t1_batch: Qty | None = None  # not in Slim
    qty_t2_batch: Qty | None = None  # not in Slim
    qty_t_future_batch: Qty | None = None  # not in Slim
    qty_batch: Qty | None = None  # Simple only
    open_qty_batch: Qty | None = None  # not in Slim
    daily_unrealised_pl: Money | None = None
    unrealised_pl: Money | None = None
    is_currency: bool | None = None
    existing: bool = False


@formats(slim={"currency": "cr", "buying_power": "bp"})
class CurrencyBuyingPower(Model, frozen=True):
    """Buying power in one currency, an item of :attr:`Summary.buying_power_by_currency`
    (docs/protocol.md §4.7)."""

    currency: str
    buying_power: Money | None = None


@formats(
    simple={"buying_power_by_currency_alt": None},
    slim={
        "buying_power_at_morning": "bpm",
        "buying_power": "bp",
        "profit": "p",
        "profit_rate": "pr",
        "portfolio_evaluation": "pe",
        "portfolio_liquidation_value": "plv",
        "initial_margin": "im",
        "corrected_margin": "mgc",
        "risk_before_force_position_closing": "r",
        "commission": "cms",
        "buying_power_by_currency": "bpv2",
        "buying_power_by_currency_alt": "bp2v",
    },
    heavy={"buying_power_by_currency_alt": None},
)
class Summary(Model, frozen=True):
    """Portfolio summary (``SummariesGetAndSubscribeV2``, docs/protocol.md §4.7). A full snapshot
    each time.

    Slim's per-currency list is uncertain: ALOR's schema names it ``bpv2`` and its example
    ``bp2v`` (docs/protocol.md §12.13). ``buying_power_by_currency`` holds ``bpv2`` (and the
    Simple/Heavy key); ``buying_power_by_currency_alt`` exists only to catch Slim ``bp2v`` and is
    ``UNSET`` unless that key came. Read :attr:`currency_buying_power`, which returns whichever one
    is set.
    """

    buying_power_at_morning: Money | None = None
    buying_power: Money | None = None
    profit: Money | None = None  # today
    profit_rate: Rate | None = None  # percent
    portfolio_evaluation: Money | None = None
    portfolio_liquidation_value: Money | None = None
    initial_margin: Money | None = None
    corrected_margin: Money | None = None
    risk_before_force_position_closing: Money | None = None
    commission: Money | None = None  # null on FORTS
    buying_power_by_currency: list[CurrencyBuyingPower] | None = None
    # Slim `bp2v` (ALOR's example spells it so); never sent in Simple/Heavy. See the class
    # docstring.
    buying_power_by_currency_alt: list[CurrencyBuyingPower] | msgspec.UnsetType = msgspec.UNSET
    # The UI also knows an optional `derivativesDebt`, absent from ALOR's schema; not modelled.

    @property
    def currency_buying_power(self) -> list[CurrencyBuyingPower]:
        """Buying power per currency, from ``bpv2`` or ``bp2v`` in Slim (docs/protocol.md §4.7);
        ``[]`` if none."""
        if self.buying_power_by_currency is not None:
            return self.buying_power_by_currency
        if isinstance(self.buying_power_by_currency_alt, list):
            return self.buying_power_by_currency_alt
        return []

    def buying_power_in(self, currency: str) -> float | None:
        """Buying power in ``currency`` (e.g. ``"RUB"``), or ``None`` if not listed
        (docs/protocol.md §4.7).

        Args:
            currency: Currency code, compared exactly.
        """
        for item in self.currency_buying_power:
            if item.currency == currency:
                return item.buying_power
        return None


@formats(
    slim={
        "portfolio": "p",
        "exchange": "ex",
        "portfolio_evaluation": "pe",
        "portfolio_liquidation_value": "plv",
        "initial_margin": "mgi",
        "minimal_margin": "mgmn",
        "corrected_margin": "mgc",
        "risk_coverage_ratio_one": "r1",
        "risk_coverage_ratio_two": "r2",
        "risk_category_id": "rid",
        "client_type": "ct",
        "has_forbidden_positions": "fpos",
        "has_negative_quantity": "nq",
        "risk_status": "rst",
        "calculation_time": "t",
    },
)
class Risk(Model, frozen=True):
    """Portfolio risks (``RisksGetAndSubscribe``, docs/protocol.md §4.8). A full snapshot each time.

    ``risk_coverage_ratio_one``/``_two`` are НПР1/НПР2; ``risk_status`` summarises them.
    """

    portfolio: str
    exchange: str | None = None
    portfolio_evaluation: Money | None = None
    portfolio_liquidation_value: Money | None = None
    initial_margin: Money | None = None
    minimal_margin: Money | None = None
    corrected_margin: Money | None = None
    risk_coverage_ratio_one: Money | None = None
    risk_coverage_ratio_two: Money | None = None
    risk_category_id: Int64 | None = None
    client_type: ClientType | None = None
    has_forbidden_positions: bool | None = None
    has_negative_quantity: bool | None = None
    risk_status: RiskStatus | None = None
    calculation_time: str | None = None  # ISO-8601 UTC


@formats(
    slim={
        "portfolio": "p",
        "money_free": "f",
        "money_blocked": "b",
        "money_old": "o",
        "money_amount": "a",
        "money_pledge_amount": "pa",
        "vm_inter_cl": "mgc",
        "vm_current_positions": "mgp",
        "var_margin": None,
        "indicative_var_margin": "ivm",
        "net_option_value": "nov",
        "pos_risk": "pr",
        "is_limits_set": "lim",
        "balance_money": None,
    },
    heavy={"balance_money": None},
)
class SpectraRisk(Model, frozen=True):
    """FORTS (derivatives) risks (``SpectraRisksGetAndSubscribe``, docs/protocol.md §4.9). A full
    snapshot each time.

    Slim has no ``var_margin``; use :attr:`variation_margin`, which computes it when absent.
    ``balance_money`` is a deprecated Simple-only field.
    """

    portfolio: str
    balance_money: Money | None = None  # Simple only, deprecated
    money_free: Money | None = None
    money_blocked: Money | None = None  # blocked as initial margin
    fee: Money | None = None
    money_old: Money | None = None  # at session start
    money_amount: Money | None = None
    money_pledge_amount: Money | None = None
    vm_inter_cl: Money | None = None  # from intermediate clearing
    vm_current_positions: Money | None = None
    var_margin: Money | None = None  # not in Slim
    indicative_var_margin: Money | None = None
    net_option_value: Money | None = None
    pos_risk: Money | None = None
    is_limits_set: bool | None = None

    @property
    def variation_margin(self) -> float | None:
        """``var_margin``, or ``vm_inter_cl + vm_current_positions`` when absent
        (docs/protocol.md §4.9, TV-20).

        ``None`` if neither is known.
        """
        if self.var_margin is not None:
            return self.var_margin
        if self.vm_inter_cl is None or self.vm_current_positions is None:
            return None
        return self.vm_inter_cl + self.vm_current_positions


@formats(
    slim={
        "repo_rate": "r",
        "ext_ref": "exr",
        "repo_term": "tm",
        "account": "a",
        "trade_type_info": "t",
        "value": "v",
        "yield_": "y",
    },
)
class RepoFields(Model, frozen=True):
    """REPO-specific details of an own trade (``repoSpecificFields`` / Slim ``r``,
    docs/protocol.md §4.10)."""

    repo_rate: Rate | None = None
    ext_ref: str | None = None
    repo_term: Int64 | None = None  # SDK types it as int
    account: str | None = None
    trade_type_info: str | None = None
    value: Money | None = None
    yield_: Rate | None = None


@formats(
    simple={"order_no": "orderno", "settle_date": None},
    slim={
        "order_no": "eid",
        "comment": "cmt",
        "symbol": "sym",
        "broker_symbol": "tic",
        "exchange": "ex",
        "date": "d",
        "board": "b",
        "qty_units": "q",
        "qty_batch": "qb",
        "price": "px",
        "accrued_int": "ai",
        "side": "s",
        "existing": "h",
        "commission": "cms",
        "repo_specific_fields": "r",
        "volume": "v",
        "settle_date": None,
    },
    simple_extras={"qty": lambda t: t.qty_batch},
)
class OwnTrade(Model, frozen=True):
    """One own trade / fill (``TradesGetAndSubscribeV2``, docs/protocol.md §4.10).

    ``order_no`` is the parent order id: Simple ``orderno``, Slim ``eid``, Heavy ``orderNo``.
    ``repo_specific_fields`` is set for REPO trades only. ``existing`` marks replayed trades.
    """

    id: str
    order_no: str | None = None
    comment: str | None = None
    symbol: str | None = None
    broker_symbol: str | None = None
    exchange: str | None = None
    date: str | None = None  # ISO-8601 UTC
    board: str | None = None  # Slim `b` here, `bd` in orders
    qty_units: Size | None = None
    qty_batch: Count | None = None
    price: Price | None = None
    accrued_int: Money | None = None
    side: Side | None = None
    existing: bool = False
    commission: Money | None = None
    repo_specific_fields: RepoFields | None = None
    volume: Money | None = None  # money value
    settle_date: str | None = None  # Heavy only


@formats(
    slim={
        "creation_fixed_quantity": "cf",
        "creation_variance_quantity": "cv",
        "visible_quantity": "v",
        "visible_quantity_batch": "vb",
        "visible_filled_quantity": "vf",
        "visible_filled_quantity_batch": "vfb",
    },
)
class Iceberg(Model, frozen=True):
    """Iceberg parameters of an order or stop order (``iceberg`` / Slim ``i``,
    docs/protocol.md §4.11).

    The ``*_batch`` fields are lots. The unit of the other fields is not documented (unknown): the
    visible ones are taken as pieces, the creation ones as lots (what ``/cws`` creates with).
    """

    creation_fixed_quantity: Count | None = None
    creation_variance_quantity: Count | None = None
    visible_quantity: Size | None = None
    visible_quantity_batch: Count | None = None
    visible_filled_quantity: Size | None = None
    visible_filled_quantity_batch: Count | None = None


#: An order's quantity in lots: a message may leave the key out, but never send ``null``.
_LOTS = Wire(Count)


@formats(
    slim={
        "symbol": "sym",
        "board": "bd",
        "broker_symbol": "tic",
        "portfolio": "p",
        "exchange": "ex",
        "comment": "cmt",
        "type": "t",
        "side": "s",
        "status": "st",
        "trans_time": "tt",
        "update_time": "ut",
        "end_time": "et",
        "qty_units": "q",
        "qty_batch": "qb",
        "filled_qty_units": "fq",
        "filled_qty_batch": "fqb",
        "price": "px",
        "existing": "h",
        "time_in_force": "tf",
        "iceberg": "i",
        "volume": "v",
    },
    simple_extras={"qty": lambda o: o.qty_batch, "filled": lambda o: o.filled_qty_batch},
    wire={"qty_batch": _LOTS},
)
class Order(Model, frozen=True):
    """One own market or limit order (``OrdersGetAndSubscribeV2``, docs/protocol.md §4.11).

    Every change arrives as a full copy of the order: upsert it by ``id``. ``iceberg`` is
    ``None`` for ordinary orders, ``volume`` for market orders.

    An order is for whole lots: ``qty_batch`` is ``>= 0``, and ``null`` is a ``FrameError``
    (``None`` only means a message left the key out). ``price`` is signed (negative prices
    exist on MOEX derivatives).
    """

    id: str
    symbol: str | None = None
    board: str | None = None
    broker_symbol: str | None = None
    portfolio: str | None = None
    exchange: str | None = None
    comment: str | None = None
    type: OrderType | None = None  # limit / market
    side: Side | None = None
    status: OrderStatus | None = None
    trans_time: str | None = None  # placed, ISO-8601 UTC
    update_time: str | None = None  # last status change
    end_time: str | None = None  # expiry (ALOR's Slim example lacks the `Z`)
    qty_units: Size | None = None
    qty_batch: Count | None = None
    filled_qty_units: Size | None = None
    filled_qty_batch: Count | None = None
    price: Price | None = None
    existing: bool = False
    time_in_force: TimeInForce | None = None
    iceberg: Iceberg | None = None
    volume: Money | None = None


@formats(
    simple={"avg_price": "avg_price"},
    slim={
        "exchange_order_id": "eid",
        "symbol": "sym",
        "broker_symbol": "tic",
        "portfolio": "p",
        "exchange": "ex",
        "comment": "cmt",
        "board": "bd",
        "type": "t",
        "side": "s",
        "condition": "cnd",
        "status": "st",
        "trans_time": "tt",
        "update_time": "ut",
        "end_time": "et",
        "error": "err",
        "qty_units": "q",
        "qty_batch": "qb",
        "filled_qty_units": "fq",
        "filled_qty_batch": "fqb",
        "price": "px",
        "avg_price": "pxavg",
        "stop_price": "pxs",
        "existing": "h",
        "time_in_force": "tf",
        "iceberg": "i",
        "volume": "v",
        "protecting_seconds": "psec",
    },
    simple_extras={"qty": lambda o: o.qty_batch, "filled": lambda o: o.filled_qty_batch},
    wire={
        "id": Wire(str | Count, id_text),
        "exchange_order_id": Wire(str | Count | None, id_text),
        "qty_batch": _LOTS,
    },
)
class StopOrder(Model, frozen=True):
    """One own stop / stop-limit order (``StopOrdersGetAndSubscribeV2``, docs/protocol.md §4.12).

    ``stop_price`` is the trigger, ``price`` the limit of the order it places (0 for a stop-market);
    ``exchange_order_id`` is ``None`` until it fires. ``condition`` arrives in any casing.

    ``id`` and ``exchange_order_id`` are text, however they arrive: the server sends the
    exchange order id of a fired stop order as a JSON number (the official SDK types it
    ``long``), ALOR's HTTP examples the id too; both are read and kept as their digits.
    ``qty_batch`` is never ``null``, as for :class:`Order`.
    """

    id: str
    exchange_order_id: str | None = None
    symbol: str | None = None
    broker_symbol: str | None = None
    portfolio: str | None = None
    exchange: str | None = None
    comment: str | None = None
    board: str | None = None
    type: OrderType | None = None  # stop / stoplimit
    side: Side | None = None
    condition: Condition | None = None
    status: OrderStatus | None = None
    trans_time: str | None = None
    update_time: str | None = None
    end_time: str | None = None
    error: str | None = None  # why it was cancelled
    qty_units: Size | None = None
    qty_batch: Count | None = None
    filled_qty_units: Size | None = None
    filled_qty_batch: Count | None = None
    price: Price | None = None
    avg_price: Price | None = None  # Simple spells it `avg_price`
    stop_price: Price | None = None
    existing: bool = False
    time_in_force: TimeInForce | None = None
    iceberg: Iceberg | None = None
    volume: Money | None = None
    protecting_seconds: Int64 | None = None  # 1-300
