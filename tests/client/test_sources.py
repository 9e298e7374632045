"""Every source (AlorClient, BusClient, Replay) offers the same stream methods, written once,
and ``stream(request)`` for any request (the typing side: ``typing_sources.py``, checked by
mypy)."""

from __future__ import annotations

import inspect
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest

from alorws.bus import BusClient, BusStream
from alorws.client import AlorClient, DataStream, Stream
from alorws.client.buffer import Policy
from alorws.client.sources import STREAM_KINDS, StreamMethods
from alorws.errors import InvalidArgumentError, InvalidState
from alorws.protocol import model_for
from alorws.protocol.account import Order
from alorws.protocol.enums import Exchange, Format
from alorws.protocol.market import InstrumentPatch, OrderBook, Quote
from alorws.protocol.requests import (
    REQUEST_TYPES,
    InstrumentRequest,
    OrderBookRequest,
    OrdersRequest,
    QuotesRequest,
    SummariesRequest,
)
from alorws.record import Replay
from alorws.sim.app import Simulator


SOURCES = [AlorClient, BusClient, Replay]
TYPED = [
    "quotes",
    "order_book",
    "bars",
    "all_trades",
    "instrument",
    "positions",
    "summaries",
    "risks",
    "spectra_risks",
    "own_trades",
    "orders",
    "stop_orders",
]


def _public_methods(cls: type) -> set[str]:
    return {n for n, v in inspect.getmembers(cls, callable) if not n.startswith("_")}


def _parameters(fn: Any) -> list[tuple[str, Any, Any, Any]]:
    """A signature's parameters without the return type, annotations resolved."""
    hints = typing.get_type_hints(inspect.unwrap(fn))
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default, hints.get(p.name)) for p in sig.parameters.values()]


def test_sources_expose_the_same_stream_methods_with_the_same_signatures() -> None:
    """The twelve typed methods and ``stream`` exist on every source with one signature, and
    no source writes a typed method itself (they are StreamMethods', once)."""
    assert list(STREAM_KINDS) == TYPED
    for cls in SOURCES:
        assert issubclass(cls, StreamMethods)
        assert set(TYPED) | {"stream"} <= _public_methods(cls), cls
        assert [n for n in TYPED if n in vars(cls)] == [], cls
        assert "stream" in vars(cls), cls  # each source implements it
    for name in TYPED:
        signatures = {str(inspect.signature(getattr(cls, name))) for cls in SOURCES}
        assert len(signatures) == 1, (name, signatures)
    streams = [_parameters(cls.stream) for cls in SOURCES]
    assert streams[0] == streams[1] == streams[2]
    assert [p[0] for p in streams[0]] == ["self", "request", "policy", "max_buffer",
                                          "silence_timeout"]  # fmt: skip


def test_typed_methods_show_and_check_their_keyword_arguments() -> None:
    """``help()`` shows every keyword argument with its default; an unknown one is a
    TypeError naming it, before any request is built."""
    sig = inspect.signature(AlorClient.order_book)
    assert sig.parameters["exchange"].default is Exchange.MOEX
    assert sig.parameters["depth"].default is None
    assert list(sig.parameters)[-3:] == ["policy", "max_buffer", "silence_timeout"]
    assert inspect.signature(AlorClient.orders).parameters["skip_history"].default is False
    client = AlorClient("not-a-token")
    with pytest.raises(TypeError, match="unexpected keyword argument 'depht'"):
        client.order_book("SBER", depht=5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'depth'"):
        client.quotes("SBER", depth=5)  # type: ignore[call-arg]
    with pytest.raises(InvalidState):  # a good call on a client not started yet
        client.quotes("SBER")


def test_every_stream_class_is_a_data_stream() -> None:
    """Stream (client and replay) and BusStream satisfy DataStream at run time too."""
    stream = Stream(
        None,  # type: ignore[arg-type]  # never subscribed here
        QuotesRequest(code="SBER"),
        Quote,
        policy=Policy.LATEST,
        account=False,
        max_buffer=10,
    )
    bus = BusClient("nats://127.0.0.1:1")
    bus_stream = BusStream(
        bus, QuotesRequest(code="SBER"), Quote, policy=Policy.LATEST, max_buffer=10, filter=None,
        name="quotes SBER",
    )  # fmt: skip
    for s in (stream, bus_stream):
        assert isinstance(s, DataStream)
        assert (s.model, s.policy, s.is_open, s.events, s.bad_payloads) == (
            Quote,
            Policy.LATEST,
            False,
            [],
            0,
        )


def test_the_typing_module_is_checked_by_mypy() -> None:
    """typing_sources.py is in mypy's files (a mismatch there fails the type check)."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    assert "tests/client/typing_sources.py" in config["tool"]["mypy"]["files"]


async def test_stream_of_a_request_is_the_typed_methods_stream(
    client: AlorClient, sim: Simulator
) -> None:
    """``client.stream(request)`` gives the model of the request's opcode, shares the
    subscription of the typed method's equal request, and makes account requests as the
    typed methods do (history kept for orders, skipped client-side)."""
    portfolio = client.portfolios[0]
    typed = client.order_book("SBER", depth=5)
    generic = client.stream(OrderBookRequest(code="SBER", depth=5))
    assert generic.request == typed.request and generic.model is OrderBook
    assert generic.policy is Policy.LATEST and generic.name == typed.name == "book SBER"
    async with typed, generic:
        assert isinstance(await generic.get(), OrderBook)
        assert client.stats()["subscriptions"] == 1

    orders = client.stream(OrdersRequest(portfolio=portfolio, skip_history=True))
    assert orders.request == client.orders(portfolio, skip_history=True).request
    assert orders.request.skip_history is False  # type: ignore[attr-defined]
    assert orders.model is Order and orders.account
    summaries = client.stream(SummariesRequest(portfolio=portfolio))
    assert summaries.request == client.summaries(portfolio).request  # skipHistory sent, False

    instrument = client.stream(InstrumentRequest(code="SBER"), max_buffer=7)
    assert instrument.model is InstrumentPatch and instrument.policy is Policy.QUEUE
    assert instrument._buffer.maxsize == 7
    assert client.instrument("SBER").policy is Policy.QUEUE  # patches: every one is needed

    for opcode, cls in REQUEST_TYPES.items():  # the model follows from the opcode
        fields = {"code": "SBER", "portfolio": portfolio, "tf": 60, "from_": 0}
        request = cls(**{k: v for k, v in fields.items() if k in cls.__struct_fields__})
        assert client.stream(request).model is model_for(opcode)
    with pytest.raises(InvalidArgumentError, match="SubscriptionRequest"):
        client.stream({"opcode": "QuotesSubscribe"})  # type: ignore[arg-type]


async def test_typed_methods_use_the_clients_format(sim: Simulator) -> None:
    """``format=None`` is the source's format; an explicit one wins."""
    async with AlorClient(sim.demo_refresh_token, base_url=sim.url, format="slim") as client:
        assert client.quotes("SBER").request.format is Format.SLIM
        assert client.quotes("SBER", format="heavy").request.format is Format.HEAVY
        async with client.quotes("SBER") as quotes:
            assert isinstance(await quotes.get(), Quote)
