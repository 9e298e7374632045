"""The simulator's trading engine: accounts and matching behind one face.

Pure: no asyncio, no wall clock; time comes in as Unix milliseconds. :class:`TradingEngine` is
what the server, the tests and the benchmarks use; its two halves are the accounts
(:class:`~alorws.sim.accounts.Ledger`: portfolios, positions, money, summaries, risks, ground
truth) and the matching (:class:`~alorws.sim.matching.Matcher`: working orders against the
synthetic book, fills, stop triggers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ..protocol.account import Order, OwnTrade, Position, Risk, SpectraRisk, StopOrder, Summary
from ..protocol.commands import Command
from .accounts import (
    GROUND_TRUTH_STREAMS,
    STREAMS,
    Account,
    AccountEvent,
    Ledger,
    RefreshTokens,
    seeded_refresh_token,
)
from .market import MarketEvent, SyntheticMarket
from .matching import CommandResult, Matcher


__all__ = [
    "GROUND_TRUTH_STREAMS",
    "STREAMS",
    "Account",
    "AccountEvent",
    "CommandResult",
    "TradingEngine",
]


class TradingEngine:
    """Accounts, portfolios, orders and fills for the simulator.

    Commands and market events go to the matching (:attr:`matcher`), which books every order
    and fill in the accounts (:attr:`ledger`); the views (:meth:`orders`, :meth:`positions`,
    :meth:`summary`, ...) read the accounts. After each command and each market batch the
    ground-truth records are written out.

    Args:
        market: The synthetic market orders trade against.
        history_cap: How many orders / stop orders / own trades a ``skipHistory:false`` replay
            sends at most (3000, docs/protocol.md §12.17; ALOR's own cap, if any, is unknown).
            The server applies it; exposed here.
        commission_rate: Fee on stock and FX trades, a fraction of the traded value.
        mark_to_market_ms: How often (at most) :meth:`on_market` re-publishes the summary and
            risks of a portfolio holding a traded instrument; ``None`` never.
        ground_truth_path: When set, each ground-truth record is also appended to this JSONL
            file.
        day_order_lifetime_ms: How long a day order (``oneday``, the default time in force)
            lives; ``None``: until the end of the UTC day it was placed in (23:59:59.999, as
            TV-13). Tests set it so that an order placed just before midnight does not expire.
        refresh_tokens: makes the refresh token of an account added without one (see
            :class:`~alorws.sim.accounts.Ledger`); deterministic by default.
    """

    def __init__(
        self,
        market: SyntheticMarket,
        *,
        history_cap: int = 3000,
        commission_rate: float = 0.0005,
        mark_to_market_ms: int | None = 1000,
        ground_truth_path: str | os.PathLike[str] | None = None,
        day_order_lifetime_ms: int | None = None,
        refresh_tokens: RefreshTokens = seeded_refresh_token,
    ) -> None:
        self.market = market
        self.history_cap = history_cap
        self.ledger = Ledger(
            market,
            commission_rate=commission_rate,
            mark_to_market_ms=mark_to_market_ms,
            ground_truth_path=ground_truth_path,
            refresh_tokens=refresh_tokens,
        )
        self.matcher = Matcher(market, self.ledger, day_order_lifetime_ms=day_order_lifetime_ms)

    # -- what happens --------------------------------------------------------------------------

    def execute(self, portfolio: str, command: Command, now_ms: int) -> CommandResult:
        """Run one ``/cws`` (or ``commandapi``) order command for ``portfolio``
        (docs/protocol.md §6).

        Returns the reply (200 with ``orderNumber`` or 400 with a reason) and the account events
        to publish. Duplicate-guid handling (docs/protocol.md §12.11) is the caller's business.
        """
        result = self.matcher.execute(portfolio, command, now_ms)
        self.ledger.flush()
        return result

    def on_market(self, events: Iterable[MarketEvent], now_ms: int) -> list[AccountEvent]:
        """React to a batch of market events: fill resting orders, fire stops, expire orders,
        re-publish the money views of portfolios holding what traded.

        Pass every batch :meth:`SyntheticMarket.step` (or ``burst``) returns. The fills this
        makes print anonymous trades that the next ``step`` returns.
        """
        out: list[AccountEvent] = []
        moved = self.matcher.on_market(events, now_ms, out)
        self.ledger.mark_to_market(moved, now_ms, out)
        self.ledger.flush()
        return out

    # -- accounts ------------------------------------------------------------------------------

    @property
    def accounts(self) -> list[Account]:
        """Every account, in creation order."""
        return self.ledger.accounts

    def add_account(
        self,
        login: str,
        *,
        refresh_token: str | None = None,
        agreements: int = 1,
        cash: float = 1_000_000.0,
    ) -> Account:
        """Create an account with ``agreements`` x (``D…``, ``G…``, ``7500…``) portfolios, each
        opening with ``cash`` RUB (see :meth:`~alorws.sim.accounts.Ledger.add_account`)."""
        return self.ledger.add_account(
            login, refresh_token=refresh_token, agreements=agreements, cash=cash
        )

    def account_for_token(self, refresh_token: str) -> Account | None:
        """The account a refresh token belongs to."""
        return self.ledger.account_for_token(refresh_token)

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        """Refuse ``refresh_token`` from now on; see :meth:`Ledger.revoke_refresh_token`."""
        return self.ledger.revoke_refresh_token(refresh_token)

    def account_for_portfolio(self, portfolio: str) -> Account | None:
        """The account owning ``portfolio``."""
        return self.ledger.account_for_portfolio(portfolio)

    @property
    def ground_truth(self) -> list[dict[str, Any]]:
        """Every published order event, own trade and position change, in order."""
        return self.ledger.ground_truth

    @property
    def ground_truth_path(self) -> str | os.PathLike[str] | None:
        """The JSONL file the ground truth is also appended to, or None (settable)."""
        return self.ledger.ground_truth_path

    @ground_truth_path.setter
    def ground_truth_path(self, path: str | os.PathLike[str] | None) -> None:
        self.ledger.ground_truth_path = path

    # -- views (HTTP and skipHistory:false replays) --------------------------------------------

    def orders(self, portfolio: str) -> list[Order]:
        """Every order of the session, oldest first, in its latest state."""
        return self.ledger.orders(portfolio)

    def stop_orders(self, portfolio: str) -> list[StopOrder]:
        """Every stop order of the session, oldest first, in its latest state."""
        return self.ledger.stop_orders(portfolio)

    def trades(self, portfolio: str) -> list[OwnTrade]:
        """Every own trade of the session, oldest first."""
        return self.ledger.trades(portfolio)

    def positions(self, portfolio: str) -> list[Position]:
        """The money position (``RUB``) first, then each instrument ever traded."""
        return self.ledger.positions(portfolio)

    def summary(self, portfolio: str) -> Summary:
        """The portfolio summary now (docs/protocol.md §4.7)."""
        return self.ledger.summary(portfolio)

    def risk(self, portfolio: str) -> Risk:
        """The portfolio risks now (docs/protocol.md §4.8)."""
        return self.ledger.risk(portfolio)

    def spectra_risk(self, portfolio: str) -> SpectraRisk | None:
        """The FORTS risks now (docs/protocol.md §4.9); None for a portfolio that is not a
        derivatives one."""
        return self.ledger.spectra_risk(portfolio)
