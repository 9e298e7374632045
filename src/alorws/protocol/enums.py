"""Enum-like values of the ALOR protocol.

The server matches enum-like values case-insensitively (docs/protocol.md §3.2; the official UI
sends ``"simple"``, ``"Less"``, ``"stoplimit"``), so every enum here accepts any casing when
decoded or constructed (``Side("BUY") is Side.BUY``) and is always sent in its documented spelling.
"""

from __future__ import annotations

import enum
from typing import Any, Self


__all__ = [
    "ClientType",
    "CommandOpcode",
    "Condition",
    "Exchange",
    "Format",
    "OrderStatus",
    "OrderType",
    "RiskStatus",
    "Side",
    "SubscriptionOpcode",
    "TimeInForce",
    "TradingStatus",
]


class _CaseInsensitive(enum.StrEnum):
    """A ``StrEnum`` whose lookup by value ignores case (msgspec honours ``_missing_``)."""

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if isinstance(value, str):
            folded = value.casefold()
            for member in cls:
                if member.value.casefold() == folded:
                    return member
        return None


class Format(_CaseInsensitive):
    """Payload shape of a subscription (docs/protocol.md §3.5); also sets the minimum
    ``frequency``."""

    SIMPLE = "Simple"
    SLIM = "Slim"
    HEAVY = "Heavy"

    @property
    def min_frequency_ms(self) -> int:
        """The smallest ``frequency`` the server honours for this format (docs/protocol.md §3.5)."""
        return _MIN_FREQUENCY[self]


_MIN_FREQUENCY = {Format.SIMPLE: 25, Format.SLIM: 10, Format.HEAVY: 500}


class Exchange(_CaseInsensitive):
    """Exchange codes. ``UNITED`` is used for unified (``E…``) portfolios
    (docs/protocol.md §12.12)."""

    MOEX = "MOEX"
    SPBX = "SPBX"
    UNITED = "UNITED"


class Side(_CaseInsensitive):
    """Order or trade side."""

    BUY = "buy"
    SELL = "sell"


class OrderType(_CaseInsensitive):
    """Order type. Orders are ``market``/``limit``, stop orders ``stop``/``stoplimit``."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stoplimit"


class OrderStatus(_CaseInsensitive):
    """Order status of orders and stop orders (docs/protocol.md §4.11)."""

    WORKING = "working"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"


class Condition(_CaseInsensitive):
    """Trigger condition of a stop order, comparing the last price with the trigger price."""

    MORE = "more"
    LESS = "less"
    MORE_OR_EQUAL = "moreorequal"
    LESS_OR_EQUAL = "lessorequal"


class TimeInForce(_CaseInsensitive):
    """How long an order stays in the book (docs/protocol.md §6.4)."""

    ONE_DAY = "oneday"
    IMMEDIATE_OR_CANCEL = "immediateorcancel"
    FILL_OR_KILL = "fillorkill"
    AT_THE_CLOSE = "attheclose"
    GOOD_TILL_CANCELLED = "goodtillcancelled"
    BOOK_OR_CANCEL = "bookorcancel"


class RiskStatus(_CaseInsensitive):
    """Portfolio risk status (docs/protocol.md §4.8)."""

    OK = "Ok"
    DEMAND = "Demand"
    TO_CLOSE = "ToClose"


class ClientType(_CaseInsensitive):
    """Client risk class (docs/protocol.md §4.8)."""

    LOW_RISK = "LowRisk"
    STANDARD_RISK = "StandardRisk"
    HIGH_RISK = "HighRisk"
    SPECIAL = "Special"


class TradingStatus(enum.IntEnum):
    """Known instrument trading-status codes (docs/protocol.md §4.5). Models keep the raw ``int``,
    since the exchange may add codes; compare with these members or call
    ``TradingStatus.describe``."""

    BREAK = 2
    NORMAL_TRADING = 17
    CLOSED = 18
    CLOSING_AUCTION = 102
    CLOSING_PERIOD = 103
    LARGE_BLOCK_AUCTION = 106
    DISCRETE_AUCTION = 107
    OPENING_PERIOD = 118
    OPENING_AUCTION = 119
    CLOSING_AUCTION_PRICE = 120

    @classmethod
    def describe(cls, code: int) -> str:
        """A readable name for ``code``, or ``'unknown (N)'``."""
        try:
            return cls(code).name.lower().replace("_", " ")
        except ValueError:
            return f"unknown ({code})"


class SubscriptionOpcode(enum.StrEnum):
    """Subscription opcodes of ``/ws`` (docs/protocol.md §4). Sent exactly as spelled here
    (docs/protocol.md §12.7)."""

    ORDER_BOOK = "OrderBookGetAndSubscribe"
    QUOTES = "QuotesSubscribe"
    BARS = "BarsGetAndSubscribe"
    ALL_TRADES = "AllTradesGetAndSubscribe"
    INSTRUMENT = "InstrumentsGetAndSubscribeV2"
    POSITIONS = "PositionsGetAndSubscribeV2"
    SUMMARIES = "SummariesGetAndSubscribeV2"
    RISKS = "RisksGetAndSubscribe"
    SPECTRA_RISKS = "SpectraRisksGetAndSubscribe"
    TRADES = "TradesGetAndSubscribeV2"
    ORDERS = "OrdersGetAndSubscribeV2"
    STOP_ORDERS = "StopOrdersGetAndSubscribeV2"
    CLUSTERS = "ClustersGetAndSubscribe"

    @classmethod
    def _missing_(cls, value: Any) -> SubscriptionOpcode | None:
        # The UI's legacy alias for the all-trades tape (docs/protocol.md §4.4).
        if value == "AllTradesSubscribe":
            return cls.ALL_TRADES
        return None


class CommandOpcode(_CaseInsensitive):
    """``/cws`` opcodes (docs/protocol.md §6.2), matched case-insensitively by the server
    (docs/protocol.md §12.7)."""

    AUTHORIZE = "authorize"
    CREATE_MARKET = "create:market"
    CREATE_LIMIT = "create:limit"
    CREATE_STOP = "create:stop"
    CREATE_STOP_LIMIT = "create:stopLimit"
    UPDATE_MARKET = "update:market"
    UPDATE_LIMIT = "update:limit"
    UPDATE_STOP = "update:stop"
    UPDATE_STOP_LIMIT = "update:stopLimit"
    DELETE_MARKET = "delete:market"
    DELETE_LIMIT = "delete:limit"
    DELETE_STOP = "delete:stop"
    DELETE_STOP_LIMIT = "delete:stopLimit"
