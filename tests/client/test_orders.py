"""OrderClient over /cws against the simulator: every command, rejections, exactly once under
drops, token expiry, validation before sending, and no token anywhere."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from alorws.client.auth import TokenManager
from alorws.client.orders import OrderAck, OrderClient
from alorws.errors import (
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    OrderStatusUnknown,
    TokenRejected,
    TransportTimeout,
)
from alorws.protocol.commands import CreateLimit, InstrumentRef, User
from alorws.protocol.enums import Exchange, Side
from alorws.protocol.jwt import decode_claims
from alorws.sim.app import Simulator

from .._sim import DAY
from ._collect import until
from .conftest import FAST


SBER = "SBER"
FAR_SELL = 355.0  # SBER trades near 312 with a 15% band: a sell here rests, inside the band
FAR_BUY = 270.0
_run = itertools.count(1)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with a quiet market (orders far from it rest), faults via ``sim.faults``."""
    async with Simulator(port=0, day_order_lifetime=DAY, seed=11, rate=5.0, history_days=1) as s:
        yield s


@pytest.fixture
async def tokens(sim: Simulator) -> AsyncIterator[TokenManager]:
    """A started token manager for the demo account."""
    async with TokenManager(sim.demo_refresh_token, sim.url) as tm:
        yield tm


@pytest.fixture
def portfolio(tokens: TokenManager) -> str:
    """The demo account's stock portfolio (D…), which trades TQBR stocks."""
    first = tokens.portfolios[0]
    assert first.startswith("D")
    return first


@pytest.fixture
async def orders(sim: Simulator, tokens: TokenManager) -> AsyncIterator[OrderClient]:
    """An order client with fast reconnects."""
    async with OrderClient(
        sim.cws_url, tokens, backoff=FAST, reply_timeout=5.0, connect_timeout=2.0
    ) as client:
        yield client


@pytest.fixture
def replies(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Every /cws status reply the simulator produced, by requestGuid (the server's words)."""
    seen: dict[str, dict[str, Any]] = {}
    original = sim.server._cws_command

    def record(conn: Any, frame: bytes | str) -> bytes | None:
        reply = original(conn, frame)
        if reply is not None:
            obj = msgspec.json.decode(reply)
            seen.setdefault(obj["requestGuid"], obj)
        return reply

    monkeypatch.setattr(sim.server, "_cws_command", record)
    return seen


class StaticTokens:
    """A token source double: a fixed token, and what ``refresh`` turns it into."""

    def __init__(self, token: str, fresh: Callable[[], str] | None = None) -> None:
        self.value = token
        self.fresh = fresh
        self.refreshes = 0

    @property
    def current(self) -> str:
        return self.value

    async def token(self) -> str:
        return self.value

    async def refresh(self, *, force: bool = False) -> str:
        self.refreshes += 1
        if self.fresh is not None:
            self.value = self.fresh()
        return self.value

    def add_listener(self, callback: Callable[[str], object]) -> Callable[[], None]:
        return lambda: None


# -- helpers ----------------------------------------------------------------------------------


def cws_connections(sim: Simulator) -> int:
    """Open /cws connections on the simulator."""
    return sum(1 for c in sim.server.hub.connections.values() if c.kind == "cws")


def order_ids_by_comment(sim: Simulator, prefix: str) -> dict[str, set[str]]:
    """From the ground truth: the ids of every order (and stop order) by its comment."""
    ids: dict[str, set[str]] = defaultdict(set)
    for record in sim.engine.ground_truth:
        data = record["data"]
        comment = data.get("comment") or ""
        if record["stream"] in ("orders", "stop_orders") and comment.startswith(prefix):
            ids[comment].add(data["id"])
    return ids


def statuses(sim: Simulator, portfolio: str) -> dict[str, str]:
    """Order id -> status, orders and stop orders."""
    found = {o.id: str(o.status) for o in sim.engine.orders(portfolio)}
    found.update({o.id: str(o.status) for o in sim.engine.stop_orders(portfolio)})
    return found


# -- every command type -----------------------------------------------------------------------


async def test_every_command_type_succeeds(
    sim: Simulator, orders: OrderClient, portfolio: str
) -> None:
    """Market, limit, stop and stop-limit orders are placed, modified and cancelled; each ack
    carries the order number; a modify returns a new id and cancels the old order."""
    assert cws_connections(sim) == 0  # lazily opened
    market = await orders.place_market(portfolio, SBER, "buy", 1, comment="m")
    assert isinstance(market, OrderAck) and market.http_code == 200
    assert market.message == f"An order '{market.order_number}' has been created."
    assert cws_connections(sim) == 1
    assert statuses(sim, portfolio)[market.order_number] == "filled"

    limit = await orders.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, board="TQBR")
    stop = await orders.place_stop(portfolio, SBER, "sell", 1, 280.0, "less", protecting_seconds=5)
    stop_limit = await orders.place_stop_limit(
        portfolio, SBER, "buy", 1, 350.0, 350.0, "moreorequal", time_in_force="oneday"
    )
    created = [limit, stop, stop_limit]
    assert all(a.order_number for a in created)
    assert len({a.order_number for a in [market, *created]}) == 4
    assert {statuses(sim, portfolio)[a.order_number] for a in created} == {"working"}

    new_limit = await orders.modify_limit(
        limit.order_number, portfolio, SBER, "sell", 2, FAR_SELL - 1
    )
    new_stop = await orders.modify_stop(
        stop.order_number, portfolio, SBER, "sell", 2, 281.0, "less"
    )
    new_stop_limit = await orders.modify_stop_limit(
        stop_limit.order_number, portfolio, SBER, "buy", 2, 349.0, 349.0, "more"
    )
    now = statuses(sim, portfolio)
    for old, new in ((limit, new_limit), (stop, new_stop), (stop_limit, new_stop_limit)):
        assert new.order_number != old.order_number
        assert new.message == f"An order has been updated. New order Id is '{new.order_number}'."
        assert now[old.order_number] == "canceled" and now[new.order_number] == "working"

    for ack, kind in ((new_limit, "limit"), (new_stop, "stop"), (new_stop_limit, "stopLimit")):
        cancelled = await orders.cancel(ack.order_number, portfolio, kind=kind)
        assert cancelled.order_number == ack.order_number
        assert statuses(sim, portfolio)[ack.order_number] == "canceled"

    stats = orders.stats()
    assert stats["acks"] == 10 and stats["rejections"] == 0 and stats["resends"] == 0
    assert stats["latency_us"]["samples"] == 10 and stats["latency_us"]["p50"] > 0
    assert stats["authorizations"] == 1 and cws_connections(sim) == 1  # one connection for all


async def test_pipelined_commands_are_matched_by_guid(
    sim: Simulator, orders: OrderClient, portfolio: str
) -> None:
    """Many commands in flight at once each get their own reply."""
    tag = f"p{next(_run)}-"
    acks = await asyncio.gather(
        *(
            orders.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, comment=f"{tag}{i}")
            for i in range(50)
        )
    )
    ids = order_ids_by_comment(sim, tag)
    assert {f"{tag}{i}": {a.order_number} for i, a in enumerate(acks)} == ids


async def test_send_prebuilt_command(orders: OrderClient, portfolio: str) -> None:
    """`send` takes any command Struct; its guid is the ack's."""
    command = CreateLimit(
        guid="prebuilt-1",
        user=User(portfolio=portfolio),
        side=Side.SELL,
        quantity=1,
        price=FAR_SELL,
        instrument=InstrumentRef(symbol=SBER, exchange=Exchange.MOEX),
    )
    ack = await orders.send(command)
    assert ack.guid == "prebuilt-1" and ack.order_number
    # Sent again with the same guid: the server does not execute it twice (docs/protocol.md §12.11).
    assert await orders.send(command) == ack


# -- rejections -------------------------------------------------------------------------------


Call = Callable[[OrderClient, str, Simulator], Awaitable[OrderAck]]


async def _modify_filled_market(oc: OrderClient, p: str, sim: Simulator) -> OrderAck:
    ack = await oc.place_market(p, SBER, "buy", 1)
    return await oc.modify_market(ack.order_number, p, SBER, "buy", 2)


async def _cancel_filled_market(oc: OrderClient, p: str, sim: Simulator) -> OrderAck:
    ack = await oc.place_market(p, SBER, "buy", 1)
    return await oc.cancel(ack.order_number, p, kind="market")


REJECTIONS: dict[str, tuple[int, Call]] = {
    "unknown symbol": (400, lambda oc, p, s: oc.place_limit(p, "NOPE", "buy", 1, 100.0)),
    "unknown order id": (400, lambda oc, p, s: oc.cancel("987654321", p)),
    "unknown stop order id": (400, lambda oc, p, s: oc.cancel("987654321", p, kind="stop")),
    "off the price grid": (400, lambda oc, p, s: oc.place_limit(p, SBER, "sell", 1, 300.005)),
    "outside the price band": (400, lambda oc, p, s: oc.place_limit(p, SBER, "sell", 1, 900.0)),
    "too many lots": (400, lambda oc, p, s: oc.place_market(p, SBER, "buy", 2_000_000)),
    "insufficient funds": (400, lambda oc, p, s: oc.place_limit(p, SBER, "buy", 50_000, 300.0)),
    "bookorcancel market": (
        400,
        lambda oc, p, s: oc.place_market(p, SBER, "buy", 1, time_in_force="bookorcancel"),
    ),
    "iceberg above quantity": (
        400,
        lambda oc, p, s: oc.place_limit(p, SBER, "sell", 1, FAR_SELL, iceberg_fixed=5),
    ),
    "stop end in the past": (
        400,
        lambda oc, p, s: oc.place_stop(p, SBER, "sell", 1, 280.0, "less", stop_end_unix_time=1),
    ),
    "modify a filled market order": (400, _modify_filled_market),
    "cancel a filled market order": (400, _cancel_filled_market),
    "another account's portfolio": (
        403,
        lambda oc, p, s: oc.place_market(s.add_account("other").portfolios[0], SBER, "buy", 1),
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_server_rejection_surfaces_as_order_rejected(
    sim: Simulator,
    orders: OrderClient,
    portfolio: str,
    replies: dict[str, dict[str, Any]],
    case: str,
) -> None:
    """Each refusal raises OrderRejected with exactly the server's code, message and guid."""
    code, call = REJECTIONS[case]
    before = len(sim.engine.orders(portfolio))
    with pytest.raises(OrderRejected) as caught:
        await call(orders, portfolio, sim)
    exc = caught.value
    assert exc.request_guid is not None
    reply = replies[exc.request_guid]
    assert (
        (exc.http_code, exc.message)
        == (reply["httpCode"], reply["message"])
        == (
            code,
            reply["message"],
        )
    )
    assert "orderNumber" not in reply
    assert exc.message in str(exc)
    if case not in ("modify a filled market order", "cancel a filled market order"):
        assert len(sim.engine.orders(portfolio)) == before  # nothing executed
    assert orders.stats()["rejections"] == 1


# -- validation before sending ----------------------------------------------------------------


BAD_CALLS: dict[str, tuple[str, Callable[[OrderClient, str], Awaitable[OrderAck]]]] = {
    "zero quantity": ("quantity", lambda oc, p: oc.place_market(p, SBER, "buy", 0)),
    "negative quantity": ("quantity", lambda oc, p: oc.place_limit(p, SBER, "buy", -1, 300.0)),
    "fractional quantity": ("quantity", lambda oc, p: oc.place_market(p, SBER, "buy", 1.5)),  # type: ignore[arg-type]
    "text quantity": ("quantity", lambda oc, p: oc.place_market(p, SBER, "buy", "1")),  # type: ignore[arg-type]
    "negative price": ("price", lambda oc, p: oc.place_limit(p, SBER, "buy", 1, -1.0)),
    "nan price": ("price", lambda oc, p: oc.place_limit(p, SBER, "buy", 1, float("nan"))),
    "long comment": (
        "comment",
        lambda oc, p: oc.place_market(p, SBER, "buy", 1, comment="x" * 101),
    ),
    "bad condition": (
        "condition",
        lambda oc, p: oc.place_stop(p, SBER, "sell", 1, 280.0, "sideways"),
    ),
    "bad side": ("side", lambda oc, p: oc.place_market(p, SBER, "hold", 1)),
    "protecting seconds": (
        "protecting_seconds",
        lambda oc, p: oc.place_stop(p, SBER, "sell", 1, 280.0, "less", protecting_seconds=301),
    ),
    "bad time in force": (
        "time_in_force",
        lambda oc, p: oc.place_market(p, SBER, "buy", 1, time_in_force="forever"),
    ),
    "bad exchange": ("exchange", lambda oc, p: oc.place_market(p, SBER, "buy", 1, exchange="NYSE")),
    "empty symbol": ("symbol", lambda oc, p: oc.place_market(p, "", "buy", 1)),
    "empty portfolio": ("portfolio", lambda oc, p: oc.place_market("", SBER, "buy", 1)),
    "long guid": ("guid", lambda oc, p: oc.place_market(p, SBER, "buy", 1, guid="g" * 51)),
    "bad cancel kind": ("kind", lambda oc, p: oc.cancel("1", p, kind="swap")),
    "empty order id": ("order_id", lambda oc, p: oc.cancel("", p)),
    "not a command": ("cmd", lambda oc, p: oc.send({"opcode": "create:market"})),  # type: ignore[arg-type]
}


async def test_bad_arguments_raise_before_anything_is_sent(
    sim: Simulator, orders: OrderClient, portfolio: str, replies: dict[str, dict[str, Any]]
) -> None:
    """Every bad argument raises InvalidArgumentError naming the field; nothing reaches the
    server (no connection is even opened)."""
    handled = sim.server.hub.requests_handled
    for case, (field, call) in BAD_CALLS.items():
        with pytest.raises(InvalidArgumentError) as caught:
            await call(orders, portfolio)
        assert caught.value.field == field, case
    assert orders.stats()["commands"] == 0 and orders.stats()["sent"] == 0
    assert cws_connections(sim) == 0
    assert sim.server.hub.requests_handled == handled and replies == {}


async def test_guid_in_flight_is_refused(
    sim: Simulator, orders: OrderClient, portfolio: str
) -> None:
    """A guid already waiting for its reply cannot be sent again in parallel."""
    first = asyncio.ensure_future(orders.place_market(portfolio, SBER, "buy", 1, guid="dup-1"))
    await asyncio.sleep(0)  # let it register
    with pytest.raises(InvalidArgumentError) as caught:
        await orders.place_market(portfolio, SBER, "buy", 1, guid="dup-1")
    assert caught.value.field == "guid"
    assert (await first).guid == "dup-1"


# -- exactly once under drops -----------------------------------------------------------------


async def test_drop_between_command_and_reply_100_times(
    sim: Simulator, orders: OrderClient, portfolio: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is dropped right after the server executes each command and before its
    reply goes out, 100 times (several commands in flight, close codes varied): every order
    exists exactly once and every caller gets its OrderAck."""
    tag = f"x{next(_run)}-"
    drops = 0
    codes = itertools.cycle((1006, 1000, 1011, 1012))
    execute = sim.engine.execute

    def execute_then_drop(p: str, command: Any, now_ms: int) -> Any:
        nonlocal drops
        result = execute(p, command, now_ms)
        comment = getattr(command, "comment", None)
        if isinstance(comment, str) and comment.startswith(tag) and drops < 100:
            drops += 1
            sim.faults.drop(code=next(codes), kind="cws")  # the reply is never sent
        return result

    monkeypatch.setattr(sim.engine, "execute", execute_then_drop)
    in_flight = asyncio.Semaphore(4)

    async def place(i: int) -> OrderAck:
        async with in_flight:
            return await orders.place_limit(
                portfolio, SBER, "sell", 1, FAR_SELL, comment=f"{tag}{i}"
            )

    acks = await asyncio.gather(*(place(i) for i in range(100)))

    assert drops == 100
    assert all(isinstance(a, OrderAck) and a.http_code == 200 for a in acks)
    ids = order_ids_by_comment(sim, tag)
    assert ids == {f"{tag}{i}": {a.order_number} for i, a in enumerate(acks)}  # exactly once
    engine_orders = [o for o in sim.engine.orders(portfolio) if (o.comment or "").startswith(tag)]
    assert len(engine_orders) == 100
    stats = orders.stats()
    assert stats["reconnects"] >= 100 and stats["resends"] >= 100
    assert stats["unknown"] == 0 and stats["rejections"] == 0


async def test_drop_while_replies_are_delayed(
    sim: Simulator, orders: OrderClient, portfolio: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With replies delayed in the server, a drop lands while commands are in flight (some
    executed, some not yet read): each still executes once and each caller gets its ack."""
    tag = f"d{next(_run)}-"
    await orders.place_market(portfolio, SBER, "buy", 1)  # connected
    executed = asyncio.Event()
    execute = sim.engine.execute

    def signal(p: str, command: Any, now_ms: int) -> Any:
        result = execute(p, command, now_ms)
        if (getattr(command, "comment", None) or "").startswith(tag):
            executed.set()
        return result

    monkeypatch.setattr(sim.engine, "execute", signal)
    sim.faults.delay(0.02)
    codes = itertools.cycle((1006, 1011, 1000))
    acks: list[OrderAck] = []
    for round_ in range(15):
        executed.clear()
        tasks = [
            asyncio.ensure_future(
                orders.place_limit(
                    portfolio, SBER, "sell", 1, FAR_SELL, comment=f"{tag}{round_}-{i}"
                )
            )
            for i in range(3)
        ]
        async with asyncio.timeout(5):
            await executed.wait()
        assert sim.faults.drop(code=next(codes), kind="cws") == 1
        acks.extend(await asyncio.gather(*tasks))
    sim.faults.delay(0)
    ids = order_ids_by_comment(sim, tag)
    assert len(ids) == 45 and all(len(v) == 1 for v in ids.values())
    assert sorted(a.order_number for a in acks) == sorted(next(iter(v)) for v in ids.values())
    assert orders.stats()["reconnects"] >= 15 and orders.stats()["unknown"] == 0


async def test_commands_issued_while_down_are_queued(
    sim: Simulator, orders: OrderClient, portfolio: str
) -> None:
    """Commands issued while the server refuses connections wait and go out after
    re-authorization."""
    tag = f"q{next(_run)}-"
    await orders.place_market(portfolio, SBER, "buy", 1)
    sim.faults.refuse(0.3)
    sim.faults.drop(code=1006, kind="cws")
    acks = await asyncio.gather(
        *(
            orders.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, comment=f"{tag}{i}")
            for i in range(5)
        )
    )
    assert len(order_ids_by_comment(sim, tag)) == 5 and len({a.order_number for a in acks}) == 5
    assert orders.stats()["connect_failures"] >= 1


async def test_no_reply_in_time_is_order_status_unknown(
    sim: Simulator, tokens: TokenManager, portfolio: str
) -> None:
    """A reply that does not come within reply_timeout raises OrderStatusUnknown with the guid
    (never a silent success); re-sending the same guid later returns the one order's ack."""
    async with OrderClient(sim.cws_url, tokens, backoff=FAST, reply_timeout=0.3) as oc:
        await oc.place_market(portfolio, SBER, "buy", 1)
        sim.faults.delay(0.6)
        with pytest.raises(OrderStatusUnknown) as caught:
            await oc.place_limit(
                portfolio, SBER, "sell", 1, FAR_SELL, comment="late", guid="late-1"
            )
        assert caught.value.guid == "late-1" and "late-1" in str(caught.value)
        sim.faults.delay(0)
        # The reply does come, after the caller was told "unknown": it is counted and dropped.
        await until(lambda: oc.stats()["late_replies"] == 1)
        ack = await oc.place_limit(portfolio, SBER, "sell", 1, FAR_SELL, guid="late-1")
        assert order_ids_by_comment(sim, "late") == {"late": {ack.order_number}}
        assert oc.stats()["unknown"] == 1


async def test_never_sent_is_transport_timeout(
    sim: Simulator, tokens: TokenManager, portfolio: str
) -> None:
    """With no connection possible, a command times out as not sent (nothing executed)."""
    sim.faults.refuse(5.0)
    async with OrderClient(sim.cws_url, tokens, backoff=FAST, reply_timeout=0.3) as oc:
        with pytest.raises(TransportTimeout, match="was not executed"):
            await oc.place_market(portfolio, SBER, "buy", 1)
        assert oc.stats()["not_sent"] == 1 and oc.stats()["sent"] == 0
    assert sim.engine.orders(portfolio) == []


async def test_closed_client_refuses_commands(tokens: TokenManager, sim: Simulator) -> None:
    """After aclose, commands raise InvalidState; aclose is idempotent."""
    oc = OrderClient(sim.cws_url, tokens, backoff=FAST)
    await oc.aclose()
    await oc.aclose()
    with pytest.raises(InvalidState):
        await oc.place_market("D00001", SBER, "buy", 1)
    assert "closed" in repr(oc)


# -- tokens -----------------------------------------------------------------------------------


async def test_token_expiry_is_invisible() -> None:
    """With 2-second tokens, orders keep succeeding over several lifetimes: the connection is
    re-authorized ahead of each token's exp."""
    async with (
        Simulator(
            port=0, day_order_lifetime=DAY, seed=5, rate=5.0, history_days=1, token_lifetime=2
        ) as sim,
        TokenManager(sim.demo_refresh_token, sim.url) as tm,
        OrderClient(sim.cws_url, tm, backoff=FAST, reply_timeout=5.0) as oc,
    ):
        portfolio = tm.portfolios[0]
        started = time.monotonic()
        acks = []
        async with asyncio.timeout(15):
            while time.monotonic() - started < 5.0 or oc.stats()["reauthorizations"] < 3:
                acks.append(await oc.place_limit(portfolio, SBER, "sell", 1, FAR_SELL))
                await asyncio.sleep(0.05)  # pacing, not synchronisation
        stats = oc.stats()
        assert len(acks) > 20 and all(a.http_code == 200 for a in acks)
        assert stats["reauthorizations"] >= 3 and stats["reconnects"] == 0
        assert stats["unknown"] == 0 and stats["rejections"] == 0


async def test_new_token_reauthorizes_open_connection(
    tokens: TokenManager, orders: OrderClient, portfolio: str
) -> None:
    """A token refresh re-authorizes the open connection (no reconnect)."""
    await orders.place_market(portfolio, SBER, "buy", 1)
    await tokens.refresh(force=True)
    await until(lambda: orders.stats()["reauthorizations"] == 1)
    await orders.place_market(portfolio, SBER, "buy", 1)
    assert orders.stats()["reconnects"] == 0 and orders.stats()["authorizations"] == 2


async def test_expired_tokens_reauthorize(
    sim: Simulator, tokens: TokenManager, orders: OrderClient, portfolio: str
) -> None:
    """After every token is expired, commands still succeed: on the open connection, and after
    a reconnect whose authorize gets 401 (refresh, authorize again)."""
    await orders.place_market(portfolio, SBER, "buy", 1)
    sim.faults.expire_tokens()
    await orders.place_market(portfolio, SBER, "buy", 1)
    refreshes = tokens.stats["refreshes"]
    sim.faults.expire_tokens()
    sim.faults.drop(code=1006, kind="cws")
    ack = await orders.place_market(portfolio, SBER, "buy", 1)
    assert ack.http_code == 200
    assert tokens.stats["refreshes"] > refreshes  # the 401 forced a refresh
    assert orders.stats()["reconnects"] == 1 and orders.stats()["unknown"] == 0


async def test_command_401_reauthorizes_and_resends(sim: Simulator, portfolio: str) -> None:
    """A command refused with 401 (the connection's token expired) is re-sent after a
    re-authorize with a refreshed token, on the same connection."""
    # exp is whole seconds, so a 1 s token can be stale on arrival under load (the first
    # authorize then fails instead of a command): 3 s leaves at least 2 s for the first order.
    short = sim.access_token(lifetime=3)
    source = StaticTokens(short, fresh=sim.access_token)
    async with OrderClient(sim.cws_url, source, backoff=FAST, reply_timeout=5.0) as oc:
        await oc.place_market(portfolio, SBER, "buy", 1)
        # The server judges expiry by the wall clock: let the token's exp pass.
        await asyncio.sleep(max(0.0, decode_claims(short).exp - time.time()) + 0.05)
        ack = await oc.place_market(portfolio, SBER, "buy", 1)
        assert ack.http_code == 200
        stats = oc.stats()
        assert source.refreshes == 1 and stats["reauthorizations"] == 1
        assert stats["reconnects"] == 0 and stats["resends"] == 1


async def test_authorize_refused_twice_raises_token_rejected(
    sim: Simulator, portfolio: str
) -> None:
    """An authorize refused with 401 is retried once with a forced refresh, then the command
    fails with TokenRejected (and was never sent)."""
    secret = "bad-token-0123456789-secret"
    source = StaticTokens(secret)
    async with OrderClient(sim.cws_url, source, backoff=FAST, reply_timeout=5.0) as oc:
        with pytest.raises(TokenRejected) as caught:
            await oc.place_market(portfolio, SBER, "buy", 1)
        assert source.refreshes == 1
        assert caught.value.http_code == 401 and secret not in str(caught.value)
        assert oc.stats()["sent"] == 0
    assert sim.engine.orders(portfolio) == []


async def test_no_token_in_logs_repr_or_exceptions(
    sim: Simulator,
    tokens: TokenManager,
    portfolio: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Across a session with reconnects, re-authorizations, a 401 and rejections, neither the
    refresh token nor any access token appears in a log line, a repr or an exception."""
    caplog.set_level(1)  # everything, picows' own level 9 included
    seen = [t for t in (tokens.current,) if t]
    tokens.add_listener(seen.append)
    texts: list[str] = []
    async with OrderClient(sim.cws_url, tokens, backoff=FAST, reply_timeout=5.0) as oc:
        await oc.place_limit(portfolio, SBER, "sell", 1, FAR_SELL)
        sim.faults.drop(code=1006, kind="cws")
        await oc.place_limit(portfolio, SBER, "sell", 1, FAR_SELL)
        await tokens.refresh(force=True)
        await until(lambda: oc.stats()["reauthorizations"] == 1)
        sim.faults.expire_tokens()
        sim.faults.drop(code=1011, kind="cws")
        await oc.place_limit(portfolio, SBER, "sell", 1, FAR_SELL)
        with pytest.raises(OrderRejected) as rejected:
            await oc.place_limit(portfolio, "NOPE", "sell", 1, 100.0)
        texts += [str(rejected.value), repr(rejected.value), repr(oc), str(oc.stats())]
    texts += [repr(oc), repr(tokens)]
    bad = StaticTokens("bad-token-0123456789-secret")
    async with OrderClient(sim.cws_url, bad, backoff=FAST) as oc2:
        with pytest.raises(TokenRejected) as refused:
            await oc2.place_market(portfolio, SBER, "buy", 1)
        texts += [str(refused.value), repr(refused.value), repr(oc2), str(oc2.stats())]
    secrets = [sim.demo_refresh_token, bad.value, *seen]
    assert len(seen) >= 3  # the first, the forced and the one after expire_tokens
    lines = [r.getMessage() for r in caplog.records] + [caplog.text]
    assert any(r.name.startswith("alorws.orders") for r in caplog.records)
    for secret in secrets:
        assert not any(secret in line for line in lines)
        assert not any(secret in text for text in texts)


def test_default_guids_are_unique_short_and_fresh_per_client() -> None:
    """Default guids fit the 50-character limit and differ between clients (the server
    remembers guids for an hour, across connections)."""
    source = StaticTokens("t")
    first = OrderClient("ws://127.0.0.1:1/cws", source)
    second = OrderClient("ws://127.0.0.1:1/cws", source)
    guids = [first._new_guid() for _ in range(1000)] + [second._new_guid() for _ in range(1000)]
    assert len(set(guids)) == 2000 and max(map(len, guids)) <= 50


@pytest.mark.parametrize("name", ["reply_timeout", "connect_timeout"])
def test_bad_configuration(name: str) -> None:
    """Timeouts must be positive."""
    with pytest.raises(ValueError, match=name):
        kwargs: dict[str, Any] = {name: 0}
        OrderClient("ws://127.0.0.1:1/cws", StaticTokens("t"), **kwargs)
