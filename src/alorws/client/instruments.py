"""``client.instruments``: a cached catalogue of instruments from the HTTP API.

::

    sber = await client.instruments.get("SBER")          # MOEX by default
    si = await client.instruments.get("Si-12.26")        # or "SiZ6", "MOEX:SiZ6"
    ofz = await client.instruments.get("RU000A1038V6")   # by ISIN
    sber.to_money(312.41, lots=2)                        # Decimal('6248.20')

A lookup tries, in order: the cache (tickers, short names and ISINs already seen), the
instrument itself (``GET /md/v2/Securities/{exchange}/{symbol}``), then a search
(``GET /md/v2/Securities?query=``) kept only when exactly one instrument matches the text by
ticker, short name or ISIN (case-insensitive). A futures contract is found by either of its
codes (``Si-12.26`` or ``SiZ6``: reference data carries one as the ticker and the other as the
short name, and ALOR accepts both).
Bonds also get their accrued interest from a quote; :meth:`InstrumentCatalogue.refresh` fetches
an instrument again (accrued interest grows daily). Nothing is found:
:class:`~alorws.errors.UnknownInstrument`, naming what was looked up and how.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import AlorError, InvalidArgumentError, ServerRejected, UnknownInstrument
from ..protocol.enums import Exchange
from ..protocol.http_models import Security
from ..protocol.instruments import Instrument, InstrumentType


if TYPE_CHECKING:
    from .http import HttpClient


__all__ = ["InstrumentCatalogue"]

_SEARCH_LIMIT = 50


def _split(key: str) -> tuple[str, str, bool]:
    """``"MOEX:SBER"`` -> ``("MOEX", "SBER", True)``; ``"SBER"`` -> ``("MOEX", "SBER", False)``."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidArgumentError("instrument", f"must be a non-empty str, got {key!r}")
    exchange, _, symbol = key.strip().rpartition(":")
    if not symbol:
        raise InvalidArgumentError("instrument", f"{key!r} has no ticker after the ':'")
    if exchange:
        try:
            exchange = Exchange(exchange.upper()).value
        except ValueError:
            raise InvalidArgumentError(
                "instrument",
                f"{key!r}: unknown exchange {exchange!r}; use one of "
                f"{', '.join(e.value for e in Exchange)}",
            ) from None
        return exchange, symbol, True
    return Exchange.MOEX.value, symbol, False


class InstrumentCatalogue:
    """Instruments by ticker, ``EXCHANGE:TICKER``, ISIN or futures code, fetched once and kept.

    Built by :class:`~alorws.client.AlorClient` (``client.instruments``) around its
    :class:`~alorws.client.http.HttpClient`; usable on any HTTP client."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http
        self._by_key: dict[tuple[str, str], Instrument] = {}  # (exchange, any name casefolded)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def cached(self) -> list[Instrument]:
        """The instruments fetched so far (each once)."""
        seen: dict[str, Instrument] = {}
        for inst in self._by_key.values():
            seen.setdefault(inst.ticker, inst)
        return list(seen.values())

    def peek(self, key: str) -> Instrument | None:
        """The cached instrument for ``key``, without I/O, or None."""
        exchange, symbol, _ = _split(key)
        return self._by_key.get((exchange, symbol.casefold()))

    async def get(self, key: str) -> Instrument:
        """The instrument ``key`` names (see the module docstring); fetched on first use."""
        exchange, symbol, _ = _split(key)
        cache_key = (exchange, symbol.casefold())
        found = self._by_key.get(cache_key)
        if found is not None:
            return found
        lock = self._locks.setdefault(cache_key, asyncio.Lock())
        async with lock:  # one fetch for concurrent first lookups of the same key
            found = self._by_key.get(cache_key)
            if found is None:
                found = await self._fetch(key, exchange, symbol)
        return found

    async def refresh(self, key: str) -> Instrument:
        """Fetch ``key`` again (e.g. a bond's accrued interest on a new day)."""
        exchange, symbol, _ = _split(key)
        old = self._by_key.get((exchange, symbol.casefold()))
        fresh = await self._fetch(key, exchange, old.symbol if old is not None else symbol)
        return fresh

    async def _fetch(self, key: str, exchange: str, symbol: str) -> Instrument:
        security = await self._direct(exchange, symbol)
        if security is None:
            security = await self._search(key, exchange, symbol)
        accrued = None
        inst = Instrument.from_security(security)
        if inst.type is InstrumentType.BOND:
            accrued = await self._accrued(inst)
            if accrued is not None:
                inst = Instrument.from_security(security, accrued_interest=accrued)
        self._remember(inst, symbol)
        return inst

    async def _direct(self, exchange: str, symbol: str) -> Security | None:
        try:
            return await self._http.security(symbol, exchange)
        except ServerRejected as exc:
            if exc.http_code in (400, 404):
                return None
            raise
        except InvalidArgumentError:
            return None  # not a ticker the path can carry (e.g. a space): try the search

    async def _search(self, key: str, exchange: str, symbol: str) -> Security:
        try:
            found = await self._http.securities(symbol, limit=_SEARCH_LIMIT, exchange=exchange)
        except InvalidArgumentError as exc:
            raise UnknownInstrument(key, str(exc)) from None
        want = symbol.casefold()
        exact = [
            s
            for s in found
            if want in {(s.symbol or "").casefold(), (s.short_name or "").casefold()}
            or (s.isin or "").casefold() == want
        ]
        # One instrument may be listed once per board: keep the primary board's.
        by_symbol: dict[str, Security] = {}
        for s in exact:
            if s.symbol not in by_symbol or s.board == s.primary_board:
                by_symbol[s.symbol] = s
        if len(by_symbol) == 1:
            (security,) = by_symbol.values()
            if security.min_step is None or security.lot_size is None:
                try:  # a search answer may be brief: take the full one
                    return await self._http.security(security.symbol, exchange)
                except AlorError:
                    pass
            return security
        if not by_symbol:
            raise UnknownInstrument(
                key,
                f"no {exchange} instrument has this ticker, short name or ISIN "
                f"(looked up /md/v2/Securities/{exchange}/{symbol} and searched {symbol!r})",
            )
        names = ", ".join(sorted(by_symbol))
        raise UnknownInstrument(key, f"it matches several instruments: {names}; name one")

    async def _accrued(self, inst: Instrument) -> float | None:
        try:
            quotes = await self._http.quotes([(inst.exchange, inst.symbol)])
        except AlorError:
            return None  # the arithmetic still works without it (clean price only)
        for q in quotes:
            if q.symbol.casefold() == inst.symbol.casefold():
                return q.accrued_interest
        return None

    def _remember(self, inst: Instrument, asked: str) -> None:
        for name in (inst.symbol, inst.short_name, inst.isin, asked):
            if name:
                self._by_key[(inst.exchange, name.casefold())] = inst
