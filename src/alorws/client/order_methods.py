"""The typed order commands, written once: ``place_*``, ``modify_*`` and ``cancel``.

:class:`OrderMethods` builds each command (validated by the command models of
:mod:`alorws.protocol.commands`) and hands it to :meth:`OrderMethods.send`, which
:class:`~alorws.client.OrderClient` implements over ``/cws``; ``BusTrading`` forwards the same
signatures to the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from ..errors import InvalidArgumentError
from ..protocol.commands import (
    Command,
    CreateLimit,
    CreateMarket,
    CreateStop,
    CreateStopLimit,
    DeleteLimit,
    DeleteMarket,
    DeleteStop,
    DeleteStopLimit,
    InstrumentRef,
    UpdateLimit,
    UpdateMarket,
    UpdateStop,
    UpdateStopLimit,
    User,
)
from ..protocol.enums import Condition, Exchange, OrderType, Side, TimeInForce


__all__ = ["OrderAck", "OrderMethods"]

_DELETES: Final[dict[str, type[Command]]] = {
    OrderType.MARKET.value: DeleteMarket,
    OrderType.LIMIT.value: DeleteLimit,
    OrderType.STOP.value: DeleteStop,
    OrderType.STOP_LIMIT.value: DeleteStopLimit,
}


class OrderAck(msgspec.Struct, frozen=True, gc=False):
    """The server accepted an order command (``httpCode`` 200, docs/protocol.md §5).

    Attributes:
        order_number: the order's id. After a ``modify_*`` it is the **new** id
            (docs/protocol.md §6.3: an update cancels the order and places a new one); after
            ``cancel`` the cancelled id. Empty if a server ever accepts a create or update without
            ``orderNumber`` (docs/protocol.md §5 documents it on every order reply).
        http_code: always 200.
        message: the server's text, verbatim (free text: never match on it).
        guid: the command's guid (its idempotency key).
    """

    order_number: str
    http_code: int
    message: str
    guid: str


class OrderMethods:
    """The nine typed order commands; a subclass sends them (:meth:`send`) and makes guids
    (``_new_guid``)."""

    _new_guid: Callable[[], str]

    async def send(self, command: Command) -> OrderAck:
        """Send a built command and wait for its outcome."""
        raise NotImplementedError

    async def place_market(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a market order of ``quantity`` lots (docs/protocol.md §6.3 ``create:market``).

        ``board`` goes into ``instrument.instrumentGroup`` (docs/protocol.md §12.8). ``guid`` is the
        command's idempotency key: pass the guid of an earlier attempt to retry it without a second
        execution. Invalid arguments raise :class:`~alorws.errors.InvalidArgumentError` (naming
        the field) before anything is sent.
        """
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, time_in_force=time_in_force)
        return await self.send(CreateMarket(**fields))

    async def place_limit(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        iceberg_variance: float | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a limit order at ``price`` (docs/protocol.md §6.3 ``create:limit``); see
        :meth:`place_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            price=price,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            iceberg_variance=iceberg_variance,
        )
        return await self.send(CreateLimit(**fields))

    async def place_stop(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a stop (market) order that fires when the last price meets ``condition``
        against ``trigger_price`` (docs/protocol.md §6.3 ``create:stop``). ``stop_end_unix_time`` 0
        is the server's default expiry. See :meth:`place_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(CreateStop(**fields))

    async def place_stop_limit(
        self,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        iceberg_variance: float | None = None,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Place a stop-limit order: a limit order at ``price`` once the trigger is met
        (docs/protocol.md §6.3 ``create:stopLimit``). See :meth:`place_stop`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            price=price,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            iceberg_variance=iceberg_variance,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(CreateStopLimit(**fields))

    async def modify_market(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        *,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        time_in_force: TimeInForce | str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace market order ``order_id`` (docs/protocol.md §6.3 ``update:market``).

        Every ``modify_*`` cancels the order and places a new one: the ack's ``order_number``
        is the **new** id, and ``order_id`` is cancelled.
        """
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, order_id=order_id, time_in_force=time_in_force)
        return await self.send(UpdateMarket(**fields))

    async def modify_limit(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        *,
        iceberg_fixed: int | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace limit order ``order_id`` (docs/protocol.md §6.3 ``update:limit``; ALOR
        takes no ``time_in_force`` on it); the ack carries the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(fields, order_id=order_id, price=price, iceberg_fixed=iceberg_fixed)
        return await self.send(UpdateLimit(**fields))

    async def modify_stop(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace stop order ``order_id`` (docs/protocol.md §6.3 ``update:stop``); the ack carries
        the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            order_id=order_id,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(UpdateStop(**fields))

    async def modify_stop_limit(
        self,
        order_id: str | int,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        price: float,
        trigger_price: float,
        condition: Condition | str,
        *,
        stop_end_unix_time: int = 0,
        time_in_force: TimeInForce | str | None = None,
        iceberg_fixed: int | None = None,
        protecting_seconds: int | None = None,
        activate: bool | None = None,
        exchange: Exchange | str = Exchange.MOEX,
        board: str | None = None,
        comment: str | None = None,
        allow_margin: bool | None = None,
        guid: str | None = None,
    ) -> OrderAck:
        """Replace stop-limit order ``order_id`` (docs/protocol.md §6.3 ``update:stopLimit``); the
        ack carries the new id. See :meth:`modify_market`."""
        fields = self._order_fields(
            guid, portfolio, symbol, side, quantity, exchange, board, comment, allow_margin
        )
        _put(
            fields,
            order_id=order_id,
            price=price,
            trigger_price=trigger_price,
            condition=condition,
            stop_end_unix_time=stop_end_unix_time,
            time_in_force=time_in_force,
            iceberg_fixed=iceberg_fixed,
            protecting_seconds=protecting_seconds,
            activate=activate,
        )
        return await self.send(UpdateStopLimit(**fields))

    async def cancel(
        self,
        order_id: str | int,
        portfolio: str,
        *,
        kind: OrderType | str = OrderType.LIMIT,
        exchange: Exchange | str = Exchange.MOEX,
        guid: str | None = None,
    ) -> OrderAck:
        """Cancel order ``order_id`` (docs/protocol.md §6.3 ``delete:*``).

        ``kind`` is the order's type: ``"market"``, ``"limit"`` (default), ``"stop"`` or
        ``"stoplimit"`` (stop and stop-limit orders live in a separate book on the server).
        """
        key = str(kind).replace("_", "").replace("-", "").casefold()
        cls = _DELETES.get(key)
        if cls is None:
            raise InvalidArgumentError(
                "kind",
                f"{kind!r} is not an order type; use 'market', 'limit', 'stop' or 'stoplimit'",
            )
        fields: dict[str, Any] = {
            "guid": self._guid(guid),
            "user": User(portfolio=portfolio),
            "order_id": order_id,
            "exchange": exchange,
        }
        return await self.send(cls(**fields))

    def _guid(self, guid: str | None) -> str:
        # Validated with the rest of the command (Command.__post_init__).
        return self._new_guid() if guid is None else guid

    def _order_fields(
        self,
        guid: str | None,
        portfolio: str,
        symbol: str,
        side: Side | str,
        quantity: int,
        exchange: Exchange | str,
        board: str | None,
        comment: str | None,
        allow_margin: bool | None,
    ) -> dict[str, Any]:
        """The fields every create/update command has; the Structs validate them all."""
        instrument: dict[str, Any] = {"symbol": symbol, "exchange": exchange}
        if board is not None:
            instrument["instrument_group"] = board  # wins over a top-level board
        fields: dict[str, Any] = {
            "guid": self._guid(guid),
            "user": User(portfolio=portfolio),
            "side": side,
            "quantity": quantity,
            "instrument": InstrumentRef(**instrument),
        }
        _put(fields, comment=comment, allow_margin=allow_margin)
        return fields


def _put(fields: dict[str, Any], **optional: Any) -> None:
    """Add the optional fields that are set (unset ones stay UNSET: not sent)."""
    fields.update({name: value for name, value in optional.items() if value is not None})
