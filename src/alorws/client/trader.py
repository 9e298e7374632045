"""The trader's helpers of :class:`~alorws.client.AlorClient`: instruments, accounts, sessions.

* ``client.instruments``: the cached catalogue (:mod:`alorws.client.instruments`);
* ``await client.portfolio_for("SiZ6")``: the token's portfolio that trades an instrument;
* ``client.session("FORTS")``: what the market's trading day has open now
  (:mod:`alorws.client.session`).

**Several accounts in one process**: one ``AlorClient`` per refresh token. Each client reads
its own token's portfolios and keeps its own connections (and its own budget of ten); they
share nothing but the process::

    async with AlorClient(token_a) as a, AlorClient(token_b) as b:
        await a.trading.place_market(await a.portfolio_for("SBER"), "SBER", "buy", 1)
        await b.trading.place_market(await b.portfolio_for("SiZ6"), "SiZ6", "sell", 1)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..protocol.instruments import choose_portfolio
from ..protocol.schedule import SCHEDULES, Schedule, SessionState
from .instruments import InstrumentCatalogue
from .session import Clock, HoldMode, SessionTrading, SystemClock, market_schedule


if TYPE_CHECKING:
    from .http import HttpClient
    from .orders import OrderClient


__all__ = ["TraderMethods"]


class TraderMethods:
    """Mixed into :class:`~alorws.client.AlorClient`; needs its ``http`` and ``portfolios``."""

    @property
    def http(self) -> HttpClient:
        """The HTTP API (the client's)."""
        raise NotImplementedError

    @property
    def portfolios(self) -> tuple[str, ...]:
        """The token's portfolios (the client's)."""
        raise NotImplementedError

    @property
    def trading(self) -> OrderClient:
        """Orders over ``/cws`` (the client's)."""
        raise NotImplementedError

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The trading-day tables by market (``"stock"``, ``"futures"``, ``"currency"``): the
        built-in MOEX ones (:data:`~alorws.protocol.schedule.SCHEDULES`) until replaced, e.g.
        ``client.schedules["futures"] = SCHEDULES["futures"].with_holidays([...])``."""
        found: dict[str, Schedule] | None = self.__dict__.get("_schedules")
        if found is None:
            found = dict(SCHEDULES)
            self.__dict__["_schedules"] = found
        return found

    def session(self, market: str, at: datetime | None = None) -> SessionState:
        """What ``market`` (``"TQBR"``, ``"FORTS"``, ``"RFUD"``, ``"CETS"``, ``"stock"``, …)
        has open at ``at`` (default: now) and when its next window opens, from
        :attr:`schedules`."""
        schedule = market_schedule(market, self.schedules)
        return schedule.state(at if at is not None else SystemClock().now())

    def session_trading(
        self, mode: HoldMode | str = HoldMode.REFUSE, *, clock: Clock | None = None
    ) -> SessionTrading:
        """Order methods that refuse (``mode="refuse"``: :class:`~alorws.errors.MarketClosed`)
        or hold (``mode="hold"``) orders while the instrument's market is closed; see
        :mod:`alorws.client.session`. ``client.trading`` itself is unchanged."""
        return SessionTrading(
            self.trading,
            self.instruments,
            self.schedules,
            mode=mode,
            clock=clock,
            streams=getattr(self, "instrument", None),
        )

    @property
    def instruments(self) -> InstrumentCatalogue:
        """The instrument catalogue (``await client.instruments.get("SBER")``), cached for the
        client's life."""
        found: InstrumentCatalogue | None = self.__dict__.get("_instrument_catalogue")
        if found is None:
            found = InstrumentCatalogue(self.http)
            self.__dict__["_instrument_catalogue"] = found
        return found

    async def portfolio_for(self, instrument: str, *, agreement: int = 0) -> str:
        """The portfolio of this client's token that trades ``instrument``: stock ``D…`` for
        MOEX/SPB stocks and bonds, FX ``G…`` for currencies, FORTS (``750…``/``751…``) for
        futures and options, else a unified ``E…`` one. ``agreement`` picks the n-th
        portfolio of that market when the token holds several agreements.

        Raises :class:`~alorws.errors.UnknownInstrument` for an unknown instrument and
        :class:`~alorws.errors.ConfigurationError` when the token has no fitting portfolio."""
        inst = await self.instruments.get(instrument)
        return choose_portfolio(self.portfolios, inst, agreement=agreement)
