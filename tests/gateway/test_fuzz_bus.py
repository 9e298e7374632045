"""Hostile input on the NATS side: BusClient streams, the gateway's control subjects, and
frames from ALOR passing through the gateway. One nats-server, simulator, ALOR client,
gateway and BusClient serve the whole module.

* **Bus payloads**: generated ``data`` payloads (structured: a real payload with wrong types,
  bad enum values, number edges, keys removed or added, deep nesting, odd unicode; or bytes:
  random, cut short, overwritten, inserted) and gap events with junk bodies are published
  straight to the subjects a :class:`~alorws.bus.BusStream` reads (core NATS for market data,
  the JetStream stream for orders), then a good payload with a marker.
* **Gateway requests**: random bytes and wrong-typed JSON sent to ``ctl.subscribe``,
  ``ctl.unsubscribe``, ``ctl.renew`` and ``orders.*``.
* **Frames from ALOR**: hostile frames injected by the simulator into the gateway's own
  subscriptions (quotes pass through undecoded, all trades are decoded and re-encoded).

Invariants: no exception escapes a consumer; every request gets an answer; each bad payload
or frame is counted exactly once, where it is first decoded (``bad_payloads`` of the bus
stream or of the gateway's stream, ``errors`` of the gateway); a good message after the bad
ones still arrives; the gateway keeps serving; nothing token-shaped reaches the log.

Bounded examples in the suite; ``ALORWS_FUZZ_EXAMPLES=5000`` runs more (see
``tests/_hostile.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import pytest
import pytest_asyncio
from hypothesis import given, strategies as st
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from alorws.bus import BusClient, wire
from alorws.bus.client import BusStream
from alorws.client import AlorClient
from alorws.errors import FrameError
from alorws.gateway import Gateway, NatsServer
from alorws.protocol.codec import (
    DATA_HEAD,
    DataMessage,
    decoder_for,
    frame_decoder_for,
    frame_payload,
    frame_tail,
    route,
)
from alorws.protocol.market import Quote, Trade
from alorws.sim.app import Simulator

from .._hostile import (
    JWT,
    REFRESH,
    SECRETS,
    LogLines,
    deep,
    edge_values,
    fuzz_settings,
    good,
    good_payload,
    hostile,
    hostile_payload,
    read_until,
)
from .._sim import DAY
from .conftest import FAST


pytestmark = pytest.mark.asyncio(loop_scope="module")

KINDS = ("quotes", "trades", "orders")
SETTINGS = fuzz_settings(50)


@dataclass
class Rig:
    """The module's servers and clients, and what the examples did."""

    sim: Simulator
    client: AlorClient
    gateway: Gateway
    bus: BusClient
    nc: NatsClient
    js: JetStreamContext
    streams: dict[str, BusStream[Any]]
    log: LogLines
    marker: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def next_marker(self) -> int:
        self.marker += 1
        return self.marker

    async def publish(self, kind: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Put ``data`` where the gateway would: core NATS, or the JetStream account stream."""
        subject = self.streams[kind].subject
        if kind == "orders":
            await self.js.publish(subject, data, headers=headers)
        else:
            await self.nc.publish(subject, data, headers=headers)
            await self.nc.flush()

    async def sync(self) -> None:
        """A good payload on every bus stream, read until it arrives: what was published before
        is then counted (and a failed example leaves nothing behind for the next)."""
        markers = {kind: self.next_marker() for kind in self.streams}
        for kind, marker in markers.items():
            await self.publish(kind, good_payload(kind, marker))
        for kind, marker in markers.items():
            await read_until(self.streams[kind], kind, marker)

    def upstream(self, name: str) -> dict[str, Any]:
        """The stats of the gateway's own stream called ``name`` (``"quotes SBER"``)."""
        return next(s for s in self.client.stats()["streams"] if s["name"] == name)

    def assert_clean_log(self, since: int) -> None:
        for line in self.log.lines[since:]:
            assert not any(secret in line for secret in SECRETS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig() -> AsyncIterator[Rig]:
    records = LogLines()
    logger = logging.getLogger("alorws")
    logger.addHandler(records)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with (
            NatsServer() as server,
            Simulator(
                port=0, day_order_lifetime=DAY, seed=9, rate=5.0, admin=True, history_days=1
            ) as sim,
            AlorClient(
                sim.demo_refresh_token, base_url=sim.url, backoff=FAST, ping_interval=5.0
            ) as client,
            Gateway(client, server.url, market_policy="queue") as gateway,
            BusClient(server.url) as bus,
        ):
            nc = await nats.connect(server.url)
            try:
                streams: dict[str, BusStream[Any]] = {
                    "quotes": bus.quotes("SBER", policy="queue"),
                    "trades": bus.all_trades("SBER"),
                    "orders": bus.orders(client.portfolios[0]),
                }
                for stream in streams.values():
                    await stream.subscribe()
                rig = Rig(sim, client, gateway, bus, nc, nc.jetstream(), streams, records)
                yield rig
                for stream in streams.values():
                    assert stream.is_open
                print(f"\nbus/gateway fuzz: {rig.counts}")  # noqa: T201
            finally:
                await nc.close()
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)


# -- the bus streams ----------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
async def test_hostile_payloads_never_escape_a_bus_stream(rig: Rig, data: st.DataObject) -> None:
    """Hostile payloads and gap events with junk bodies, then a good payload: the consumer
    gets it; each payload that does not decode is counted once; each event is recorded."""
    kind = data.draw(st.sampled_from(KINDS), label="stream")
    stream = rig.streams[kind]
    payloads = data.draw(st.lists(hostile_payload(kind), min_size=1, max_size=4), label="data")
    events = data.draw(
        st.lists(st.one_of(st.binary(max_size=50), edge_values.map(str.encode)), max_size=1),
        label="events",
    )
    decoder = decoder_for(stream.model, stream.request.format)
    bad = 0
    for p in payloads:
        try:
            decoder.decode(p)
        except Exception:
            bad += 1
    await rig.sync()
    before, events_before, lines = stream.bad_payloads, len(stream.events), len(rig.log.lines)
    for p in payloads:
        await rig.publish(kind, p)
    for body in events:
        await rig.publish(kind, body, headers={wire.EVENT_HEADER: "disconnected"})
    marker = rig.next_marker()
    await rig.publish(kind, good_payload(kind, marker))
    await read_until(stream, kind, marker, data.draw(st.integers(0, 2), label="style"))
    assert stream.is_open
    assert stream.bad_payloads - before == bad, payloads
    assert len(stream.events) - events_before == len(events)
    rig.count("bus payloads", len(payloads))
    rig.count("bus bad payloads", bad)
    rig.assert_clean_log(lines)


# -- the gateway's control and order subjects ---------------------------------------------------

_OPS = {
    "ctl.subscribe": wire.SubscribeCtl,
    "ctl.unsubscribe": wire.UnsubscribeCtl,
    "ctl.renew": wire.RenewCtl,
    "orders.place_limit": wire.OrderCtl,
    "orders.cancel": wire.OrderCtl,
}
_KEYS = ["consumer", "handle", "handles", "request", "key", "args"]


@st.composite
def hostile_request(draw: st.DrawFn) -> bytes:
    """Random bytes, or a JSON object of the control keys with values of the wrong kind."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    keys = draw(st.lists(st.sampled_from(_KEYS), max_size=4, unique=True))
    return ("{" + ",".join(f'"{k}":{draw(edge_values)}' for k in keys) + "}").encode()


@SETTINGS
@given(data=st.data())
async def test_hostile_requests_are_answered_and_counted(rig: Rig, data: st.DataObject) -> None:
    """Each hostile request gets an error reply (an InvalidArgumentError) and is counted in
    the gateway's ``errors``; the gateway goes on serving the bus streams."""
    request = st.tuples(st.sampled_from(sorted(_OPS)), hostile_request())
    sends = data.draw(st.lists(request, min_size=1, max_size=4), label="requests")
    errors, lines = rig.gateway.counters["errors"], len(rig.log.lines)
    refused = 0
    for op, body in sends:
        try:
            msgspec.json.decode(body, type=_OPS[op])
            decodable = True
        except Exception:
            decodable = False
        reply = await rig.nc.request(f"{rig.gateway.prefix}.{op}", body, timeout=10)
        answer = msgspec.json.decode(reply.data)
        assert isinstance(answer, dict)
        # An undecodable request is always refused; a decodable one may be too (an order op
        # whose arguments do not fit the trading call), never with anything but bad arguments.
        assert decodable or answer.get("error") is not None, (op, body, answer)
        if answer.get("error") is not None:
            assert answer["error"]["type"] in ("InvalidArgumentError",), answer
            refused += 1
    assert rig.gateway.counters["errors"] - errors == refused, sends
    assert rig.gateway.is_leader
    marker = rig.next_marker()
    await rig.publish("quotes", good_payload("quotes", marker))
    await read_until(rig.streams["quotes"], "quotes", marker)
    rig.count("gateway requests", len(sends))
    rig.count("gateway bad requests", refused)
    rig.assert_clean_log(lines)


# -- frames from ALOR through the gateway -------------------------------------------------------


def _at_gateway(frame: bytes, guids: dict[str, str]) -> tuple[str, bytes | None]:
    """Where ``frame``, received on the gateway's market connection (subscriptions ``guids``:
    guid -> ``"quotes"``/``"trades"``), is first found bad, if anywhere: ``("quotes",
    payload)`` is a payload the gateway forwards undecoded, ``("quotes-bad"|"trades-bad",
    None)`` a frame its stream counts, ``("trades", None)`` a trade it re-encodes,
    ``("other", None)`` anything else (a bad frame of the connection, unknown guid)."""
    target: str | None = None
    if frame[:9] == DATA_HEAD:
        target = next((g for g in guids if frame.endswith(frame_tail(g))), None)
    if target is None:
        try:
            msg = route(frame)
        except FrameError:
            return "other", None
        if not isinstance(msg, DataMessage) or msg.guid not in guids:
            return "other", None
        target = msg.guid
    if guids[target] == "trades":
        try:
            frame_decoder_for(Trade, "Simple").decode(frame)
        except Exception:
            return "trades-bad", None
        return "trades", None
    tail = frame_tail(target)
    if frame[:9] == DATA_HEAD and frame.endswith(tail):
        return "quotes", frame[8 : -len(tail)]
    try:
        return "quotes", frame_payload(frame)
    except FrameError:
        return "quotes-bad", None


@SETTINGS
@given(data=st.data())
async def test_hostile_frames_from_alor_pass_the_gateway_counted(
    rig: Rig, data: st.DataObject
) -> None:
    """Hostile frames into the gateway's quotes (passed through) and all-trades (re-encoded)
    subscriptions, then good ones: the bus streams get the good ones; each hostile frame is
    counted once, by the gateway's stream or by the bus stream, wherever it is decoded."""
    gw_quotes, gw_trades = rig.upstream("quotes SBER"), rig.upstream("trades SBER")
    guids = {gw_quotes["guid"]: "quotes", gw_trades["guid"]: "trades"}
    kind = data.draw(st.sampled_from(("quotes", "trades")), label="stream")
    target = gw_quotes["guid"] if kind == "quotes" else gw_trades["guid"]
    frames = data.draw(st.lists(hostile(kind, target), min_size=1, max_size=4), label="frames")
    want = {"quotes-bad": 0, "trades-bad": 0, "bus-bad": 0}
    quote_decoder = decoder_for(Quote, "Simple")
    for f in frames:
        where, forwarded = _at_gateway(f, guids)
        if where in want:
            want[where] += 1
        elif where == "quotes" and forwarded is not None:
            try:
                quote_decoder.decode(forwarded)
            except Exception:
                want["bus-bad"] += 1
    bus_quotes, bus_trades = rig.streams["quotes"], rig.streams["trades"]
    before = (gw_quotes["bad_payloads"], gw_trades["bad_payloads"], bus_quotes.bad_payloads)
    lines = len(rig.log.lines)
    for f in frames:
        assert rig.sim.faults.inject(f, kind="ws") >= 1
    markers = {k: rig.next_marker() for k in ("quotes", "trades")}
    for k, guid in (("quotes", gw_quotes["guid"]), ("trades", gw_trades["guid"])):
        assert rig.sim.faults.inject(good(k, guid, markers[k]), kind="ws") >= 1
    await read_until(bus_quotes, "quotes", markers["quotes"])
    await read_until(bus_trades, "trades", markers["trades"])
    after = (
        rig.upstream("quotes SBER")["bad_payloads"],
        rig.upstream("trades SBER")["bad_payloads"],
        bus_quotes.bad_payloads,
    )
    names = ("quotes-bad", "trades-bad", "bus-bad")
    got = {name: a - b for name, a, b in zip(names, after, before, strict=True)}
    assert got == want, frames
    rig.count("frames through the gateway", len(frames))
    rig.count("bad frames through the gateway", sum(want.values()))
    rig.assert_clean_log(lines)


async def test_a_bad_last_payload_does_not_break_a_subscribe(rig: Rig) -> None:
    """The gateway keeps the last quote of a subscription for the subscribe reply of a
    consumer that joins later; when that payload is nested thousands deep, the joining
    consumer is still subscribed (without a snapshot) and gets the next good quote."""
    first = rig.bus.quotes("GAZP", frequency=600_000, policy="queue")  # one live quote only
    await first.subscribe()
    upstream = rig.upstream("quotes GAZP")
    assert upstream["guid"] is not None
    assert rig.sim.faults.inject(deep(upstream["guid"]), kind="ws") >= 1
    async with asyncio.timeout(10):  # the deep payload went through: the first one counted it
        while first.bad_payloads == 0:
            # get_batch() returns only with something decodable: give it a slice of time
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await first.get_batch()
    async with BusClient(rig.bus.nats_url) as other:
        second = other.quotes("GAZP", frequency=600_000, policy="queue")
        await second.subscribe()  # the gateway must not fail on the stored deep payload
        marker = rig.next_marker()
        assert rig.sim.faults.inject(good("quotes", upstream["guid"], marker), kind="ws") >= 1
        await read_until(second, "quotes", marker)
        await read_until(first, "quotes", marker)
        await second.aclose()
    await first.aclose()


async def test_tokens_in_bad_payloads_and_requests_never_reach_the_log(rig: Rig) -> None:
    """A bus payload and a gateway request that echo tokens (one cut by the 200-character
    excerpt): the bus stream's and the gateway's log lines and the error reply carry neither
    the JWT nor the refresh token."""
    lines = len(rig.log.lines)
    stream = rig.bus.quotes("LKOH", policy="queue")  # a stream of its own: its first bad frame
    await stream.subscribe()
    pad = "p" * 120  # the 200-character excerpt ends inside the JWT's claims
    await rig.nc.publish(stream.subject, f'{{"pad":"{pad}","token":"{JWT}","x":1'.encode())
    marker = rig.next_marker()
    await rig.nc.publish(stream.subject, good_payload("quotes", marker))
    await read_until(stream, "quotes", marker)
    assert stream.bad_payloads == 1
    await stream.aclose()
    request = f'{{"consumer":"{pad}","handle":"{JWT}","request":{{"token":"{REFRESH}"}}}}'
    reply = await rig.nc.request(f"{rig.gateway.prefix}.ctl.subscribe", request.encode(), 10)
    answer = reply.data.decode()
    assert "InvalidArgumentError" in answer
    logged = rig.log.lines[lines:]
    assert any("quotes LKOH: bad Quote payload" in line for line in logged)
    for text in [*logged, answer]:
        for secret in SECRETS:
            assert secret not in text
