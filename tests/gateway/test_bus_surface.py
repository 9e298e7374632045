"""BusClient's whole surface through a real gateway and the simulator: every stream method
(the same as AlorClient's) and every order operation of OrderClient, with its outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats
import pytest

from alorws.bus import BusClient, BusTrading, wire
from alorws.client import AlorClient, OrderAck, OrderClient
from alorws.errors import (
    AlorError,
    ConnectError,
    InvalidArgumentError,
    OrderRejected,
    OrderStatusUnknown,
)
from alorws.gateway import Gateway, NatsServer
from alorws.protocol import model_for
from alorws.protocol.account import StopOrder
from alorws.protocol.commands import Command
from alorws.protocol.requests import InstrumentRequest, SpectraRisksRequest
from alorws.sim.app import Simulator

from ..client.test_orders import FAR_SELL, statuses
from .conftest import LEASE
from .test_gateway import first as first_of


SBER = "SBER"


async def first(stream: Any, sim: Simulator) -> Any:
    """The first message of ``stream``, subscribing it (market events made meanwhile)."""
    await stream.subscribe()
    return await first_of(stream, sim, SBER, within=10.0)


@pytest.fixture
async def bus(gateway: Gateway, nats_server: NatsServer) -> AsyncIterator[BusClient]:
    """A consumer of the gateway."""
    async with BusClient(nats_server.url) as b:
        yield b


def _order_ops(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_") and name not in ("send", "aclose")
    }


def test_bus_trading_has_every_order_operation_with_its_signature() -> None:
    """BusTrading's operations are OrderClient's (all but ``send`` of a prebuilt command and
    ``aclose``), with the same signatures, and the gateway serves each (``wire.ORDER_OPS``)."""
    direct, bus = _order_ops(OrderClient), _order_ops(BusTrading)
    assert set(direct) == set(bus) == set(wire.ORDER_OPS)
    assert len(direct) == 9
    for name, signature in direct.items():
        assert bus[name] == signature, name
        assert (getattr(BusTrading, name).__doc__ or "").endswith(
            getattr(OrderClient, name).__doc__ or "-"
        )


async def test_every_stream_method_through_the_bus(
    sim: Simulator, client: AlorClient, bus: BusClient
) -> None:
    """Each of the twelve stream methods delivers its model through the gateway, with the
    request a direct client makes (instruments and FORTS risks included)."""
    stock, _, forts = client.portfolios[:3]
    market = await bus.trading.place_market(stock, SBER, "buy", 1)  # an order and a fill
    stop = await bus.trading.place_stop(stock, SBER, "sell", 1, 280.0, "less")
    calls: dict[str, Callable[[Any], Any]] = {
        "quotes": lambda s: s.quotes(SBER),
        "order_book": lambda s: s.order_book(SBER, depth=5),
        "bars": lambda s: s.bars(SBER, 60, from_=0),
        "all_trades": lambda s: s.all_trades(SBER),
        "instrument": lambda s: s.instrument(SBER),
        "positions": lambda s: s.positions(stock),
        "summaries": lambda s: s.summaries(stock),
        "risks": lambda s: s.risks(stock),
        "spectra_risks": lambda s: s.spectra_risks(forts),
        "own_trades": lambda s: s.own_trades(stock),
        "orders": lambda s: s.orders(stock),
        "stop_orders": lambda s: s.stop_orders(stock),
    }
    streams = {kind: call(bus) for kind, call in calls.items()}
    try:
        for kind, stream in streams.items():
            direct = calls[kind](client)
            assert stream.request == direct.request, kind
            assert stream.model is direct.model is model_for(type(stream.request).opcode), kind
            got = await first(stream, sim)
            assert isinstance(got, stream.model), (kind, got)
            if kind == "own_trades":
                assert got.order_no == market.order_number
        seen: StopOrder = got
        async with asyncio.timeout(5.0):
            while seen.id != stop.order_number:  # the stop order placed through the bus
                seen = await streams["stop_orders"].get()
    finally:
        for stream in streams.values():
            await stream.aclose()


async def test_instrument_and_forts_risks_by_request(
    sim: Simulator, client: AlorClient, bus: BusClient
) -> None:
    """``stream(request)`` through the bus: instrument patches (lossless, as direct) and FORTS
    risks, typed by the request's opcode."""
    forts = client.portfolios[2]
    async with (
        bus.stream(InstrumentRequest(code=SBER)) as patches,
        bus.stream(SpectraRisksRequest(portfolio=forts)) as risks,
    ):
        assert patches.policy == client.instrument(SBER).policy == "queue"
        patch = await first(patches, sim)
        assert patch.symbol == SBER
        risk = await first(risks, sim)
        assert risk.portfolio == forts


async def test_every_order_operation_through_the_bus(
    sim: Simulator, bus: BusClient, portfolio: str
) -> None:
    """Market, limit, stop and stop-limit orders are placed, modified and cancelled through
    the gateway with the outcomes of a direct OrderClient: acks with the order numbers, a
    modify's new id, the old order cancelled."""
    t = bus.trading
    market = await t.place_market(portfolio, SBER, "buy", 1, comment="m")
    assert isinstance(market, OrderAck) and market.http_code == 200
    assert statuses(sim, portfolio)[market.order_number] == "filled"
    limit = await t.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, board="TQBR")
    stop = await t.place_stop(portfolio, SBER, "sell", 1, 280.0, "less", protecting_seconds=5)
    stop_limit = await t.place_stop_limit(
        portfolio, SBER, "buy", 1, 350.0, 350.0, "moreorequal", time_in_force="oneday"
    )
    created = [limit, stop, stop_limit]
    assert {statuses(sim, portfolio)[a.order_number] for a in created} == {"working"}

    new_limit = await t.modify_limit(limit.order_number, portfolio, SBER, "sell", 2, FAR_SELL - 1)
    new_stop = await t.modify_stop(stop.order_number, portfolio, SBER, "sell", 2, 281.0, "less")
    new_stop_limit = await t.modify_stop_limit(
        stop_limit.order_number, portfolio, SBER, "buy", 2, 349.0, 349.0, "more"
    )
    now = statuses(sim, portfolio)
    for old, new in ((limit, new_limit), (stop, new_stop), (stop_limit, new_stop_limit)):
        assert new.order_number != old.order_number
        assert now[old.order_number] == "canceled" and now[new.order_number] == "working"
    for ack, kind in ((new_limit, "limit"), (new_stop, "stop"), (new_stop_limit, "stopLimit")):
        cancelled = await t.cancel(ack.order_number, portfolio, kind=kind)
        assert cancelled.order_number == ack.order_number
        assert statuses(sim, portfolio)[ack.order_number] == "canceled"
    # The same key again: the cached answer, never a second order.
    again = await t.place_stop(portfolio, SBER, "sell", 1, 280.0, "less", guid="stop-key")
    assert await t.place_stop(portfolio, SBER, "sell", 1, 280.0, "less", guid="stop-key") == again
    assert sum(1 for o in sim.engine.stop_orders(portfolio) if o.id == again.order_number) == 1


Op = Callable[[BusTrading, str], Awaitable[OrderAck]]

#: One call of each operation the server refuses (a 400, as a direct OrderClient gets it).
REFUSED: dict[str, Op] = {
    "place_market": lambda t, p: t.place_market(p, SBER, "buy", 2_000_000),
    "place_limit": lambda t, p: t.place_limit(p, "NOPE", "buy", 1, 100.0),
    "place_stop": lambda t, p: t.place_stop(p, SBER, "sell", 1, 280.0, "less",
                                            stop_end_unix_time=1),
    "place_stop_limit": lambda t, p: t.place_stop_limit(p, "NOPE", "buy", 1, 100.0, 100.0,
                                                        "more"),
    "modify_market": lambda t, p: t.modify_market("987654321", p, SBER, "buy", 2),
    "modify_limit": lambda t, p: t.modify_limit("987654321", p, SBER, "sell", 1, FAR_SELL),
    "modify_stop": lambda t, p: t.modify_stop("987654321", p, SBER, "sell", 1, 280.0, "less"),
    "modify_stop_limit": lambda t, p: t.modify_stop_limit("987654321", p, SBER, "buy", 1, 350.0,
                                                          350.0, "more"),
    "cancel": lambda t, p: t.cancel("987654321", p, kind="stop"),
}  # fmt: skip


async def test_refusals_come_back_as_order_rejected(
    sim: Simulator, bus: BusClient, portfolio: str
) -> None:
    """Each operation the server refuses raises OrderRejected with its code, through the bus as
    direct; nothing is placed."""
    assert set(REFUSED) == wire.ORDER_OPS
    before = len(sim.engine.orders(portfolio)), len(sim.engine.stop_orders(portfolio))
    for name, call in REFUSED.items():
        with pytest.raises(OrderRejected) as info:
            await call(bus.trading, portfolio)
        assert info.value.http_code == 400, name
    assert (len(sim.engine.orders(portfolio)), len(sim.engine.stop_orders(portfolio))) == before


async def test_only_arguments_the_operation_does_not_take_are_bad_arguments(
    sim: Simulator,
    client: AlorClient,
    bus: BusClient,
    nats_server: NatsServer,
    portfolio: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error raised after the command went out (here a TypeError) reaches the consumer as
    raised, not as InvalidArgumentError: the order is live. It is no definite outcome either:
    the same key reaches the client again. Arguments the operation does not take are
    InvalidArgumentError, and nothing is sent."""
    send = client.trading.send
    calls: list[str] = []
    acks: list[OrderAck] = []

    async def send_then_fail(command: Command) -> OrderAck:
        calls.append(command.guid)
        with contextlib.suppress(AlorError):  # the same guid again may be refused
            acks.append(await send(command))
        raise TypeError("a fault after the command was sent")

    monkeypatch.setattr(client.trading, "send", send_then_fail)
    place = bus.trading.place_limit
    with pytest.raises(AlorError, match="TypeError") as info:
        await place(portfolio, SBER, "sell", 1, FAR_SELL, guid="live-1")
    assert not isinstance(info.value, InvalidArgumentError), info.value
    assert len(acks) == 1 and statuses(sim, portfolio)[acks[0].order_number] == "working"
    with pytest.raises(AlorError, match="TypeError"):
        await place(portfolio, SBER, "sell", 1, FAR_SELL, guid="live-1")
    assert calls == ["live-1", "live-1"]  # not answered from the cache: sent again

    orders = len(sim.engine.orders(portfolio))
    nc = await nats.connect(nats_server.url)
    try:
        args = {"portfolio": portfolio, "symbol": SBER, "side": "sell", "quantity": 1}
        for bad in ({**args, "price": FAR_SELL, "colour": "red"}, args):
            ctl = wire.OrderCtl(consumer="raw", key=f"bad-{len(bad)}", args=bad)
            msg = await nc.request("alorws.orders.place_limit", msgspec.json.encode(ctl), 10.0)
            error = msgspec.json.decode(msg.data, type=wire.OrderReply).error
            assert error is not None and error.type == "InvalidArgumentError", error
    finally:
        await nc.close()
    assert len(calls) == 2 and len(sim.engine.orders(portfolio)) == orders


async def test_unanswered_or_unserved_operations(nats_server: NatsServer) -> None:
    """An operation that reached a gateway and got no answer is OrderStatusUnknown (sent again
    with the same key each attempt); one no gateway serves is ConnectError (never sent)."""
    nc = await nats.connect(nats_server.url)
    seen: list[tuple[str, str]] = []

    async def swallow(msg: Any) -> None:  # a gateway that never answers
        seen.append((msg.subject.rsplit(".", 1)[-1], wire_key(msg.data)))

    sub = await nc.subscribe("mute.orders.>", cb=swallow)
    await nc.flush()
    try:
        async with (
            BusClient(nats_server.url, prefix="mute", order_timeout=0.2, order_attempts=2) as mute,
            BusClient(nats_server.url, prefix="nobody", order_timeout=0.2) as lonely,
        ):
            for name, call in REFUSED.items():
                with pytest.raises(OrderStatusUnknown) as info:
                    await call(mute.trading, "P1")
                assert seen[-2:] == [(name, info.value.guid)] * 2, name
                with pytest.raises(ConnectError, match="not sent"):
                    await call(lonely.trading, "P1")
            assert mute.trading.resent == 2 * len(REFUSED)
    finally:
        await sub.unsubscribe()
        await nc.close()


@pytest.mark.parametrize("userinfo", ["alice:s3cret-pw", "s3cret-token"])
async def test_nats_credentials_never_reach_a_message_a_repr_or_the_log(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture, userinfo: str
) -> None:
    """A NATS URL with a user and password, or a token: the bus client's repr and the error of
    a subscribe no gateway answers name the server, never the credentials."""
    caplog.set_level(logging.DEBUG)
    url = nats_server.url.replace("nats://", f"nats://{userinfo}@")
    server = f"127.0.0.1:{nats_server.port}"
    async with BusClient(url, prefix="nobody", request_timeout=2.0) as bus:
        assert server in repr(bus) and "s3cret" not in repr(bus)
        with pytest.raises(ConnectError, match="no gateway answers") as info:
            await bus.quotes(SBER).subscribe()
        assert server in str(info.value) and "s3cret" not in str(info.value)
    assert "s3cret" not in caplog.text


def wire_key(data: bytes) -> str:
    """The idempotency key of an order request on the bus."""
    return msgspec.json.decode(data, type=wire.OrderCtl).key


async def test_modify_retried_with_its_key_is_executed_once(
    sim: Simulator, client: AlorClient, nats_server: NatsServer, portfolio: str
) -> None:
    """A modify retried with its key from two consumers at once is executed once."""
    async with (
        Gateway(client, nats_server.url, prefix="once", lease_seconds=LEASE),
        BusClient(nats_server.url, prefix="once") as a,
        BusClient(nats_server.url, prefix="once") as b,
    ):
        limit = await a.trading.place_limit(portfolio, SBER, "sell", 1, FAR_SELL)

        def modify(bus: BusClient) -> Awaitable[OrderAck]:
            return bus.trading.modify_limit(
                limit.order_number, portfolio, SBER, "sell", 1, FAR_SELL - 1, guid="modify-1"
            )

        acks = await asyncio.gather(modify(a), modify(b), modify(a))
        assert len({ack.order_number for ack in acks}) == 1
        working = [o for o in sim.engine.orders(portfolio) if str(o.status) == "working"]
        assert [o.id for o in working if o.id == acks[0].order_number] == [acks[0].order_number]
        assert statuses(sim, portfolio)[limit.order_number] == "canceled"
        assert isinstance(await a.trading.cancel(acks[0].order_number, portfolio), OrderAck)
