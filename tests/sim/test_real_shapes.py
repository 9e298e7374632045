"""The simulator's messages have ALOR's real shapes (``tests/fixtures/alor``).

One simulator is driven over real sockets (raw ``/ws`` and ``/cws`` clients, aiohttp for HTTP)
until it has produced every stream in every format and answered every HTTP endpoint that has a
fixture. Each fixture case is then compared with the simulator's messages of the same kind:

* every key the real message has is there (a case named ``…partial`` is a partial update: only
  the keys it carries are compared, and the simulator may send any key the real full message
  has);
* no key the real server does not send;
* the JSON type of each key, recursively: int and float are one ``number``; ``null`` only where
  a real message of that model and format has ``null`` (a key that is ``null`` in every real
  example says nothing of its other type, so anything goes there).

The types a key may have are pooled over every case of the same model and format (the WS stream
and its HTTP twin share the mapping, docs/protocol.md §8.1). Where the simulator differs on purpose,
the difference is listed in :data:`DEVIATIONS` with the reason.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from alorws.sim.app import Simulator

from .._fixtures import cases, names
from .._sim import DAY
from .wsclient import RawWS


FORMATS = ("Simple", "Slim", "Heavy")
SBER = {"symbol": "SBER", "exchange": "MOEX", "instrumentGroup": "TQBR"}
SI = {"symbol": "SiZ6", "exchange": "MOEX"}
BOND = "SU26238RMFS4"

#: Deliberate differences: (fixture file, case-name pattern, key paths) -> why. A path is
#: relative to the model (no ``data.`` envelope, no ``[]`` of a list answer).
DEVIATIONS: dict[tuple[str, str, tuple[str, ...]], str] = {
    ("ws/summaries", "slim-*", ("bp2v", "bpv2")): (
        "ALOR's schema and its HTTP example name the Slim per-currency list `bpv2`; only the WS "
        "example spells it `bp2v` (docs/protocol.md §12.13: the simulator sends `bpv2`)"
    ),
    ("http/alltrades-history", "*", ("list",)): (
        "an array of trades: ALOR's example shows one object, its schema and every client an "
        "array (docs/protocol.md §12.13); each trade is compared with the example's object"
    ),
    ("http/orders", "*", ("board", "bd")): (
        "ALOR's schema of this list, its single-order example and the WS orders all carry the "
        "board; only the list example omits it"
    ),
    ("http/trades", "*-stats", ("comment", "cmt")): (
        "ALOR's schemas of the trade history (Trade_Heavy, Trade_Slim) list the comment, and "
        "its Simple example has it; only the Heavy and Slim examples omit it"
    ),
}

#: Keys ALOR documents as nullable where no example shows a null: (model, key) -> the source.
NULLABLE: dict[tuple[str, str], str] = {
    ("Order", "volume"): "ALOR's schema (field_VolumeNullable): null for a market order",
    ("Order", "v"): "the same in Slim",
}


# -- the comparison ------------------------------------------------------------------------------


def jtype(value: Any) -> str:
    """The JSON type of a decoded value; int and float are one ``number``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _message(case: dict[str, Any]) -> Any:
    for key in ("frame", "payload", "body"):
        if key in case:
            return case[key]
    raise AssertionError(f"case {case['name']} has no message")


def _model_path(path: str) -> str:
    """``data.bids[].price`` -> ``bids[].price``; ``[].id`` -> ``id`` (relative to the model)."""
    for head in ("data.", "[]."):
        if path.startswith(head):
            return path[len(head) :]
    return path


def _walk(value: Any, path: str, out: dict[str, set[str]]) -> None:
    out[_model_path(path)].add(jtype(value))
    if isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}.{key}" if path else key, out)
    elif isinstance(value, list):
        for item in value:
            _walk(item, f"{path}[]", out)


def _pool_key(file: str, case: dict[str, Any]) -> tuple[str, str | None]:
    return (case.get("model") or file, case.get("format"))


def _pools() -> dict[tuple[str, str | None], dict[str, set[str]]]:
    """Every JSON type a key has in some real message of that model and format."""
    out: dict[tuple[str, str | None], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for file in [*names("ws"), *names("http"), "cws"]:
        for case in cases(file):
            _walk(_message(case), "", out[_pool_key(file, case)])
    return out


POOLS = _pools()


def _deviation(file: str, name: str, path: str) -> str | None:
    for (f, pattern, paths), reason in DEVIATIONS.items():
        if f == file and fnmatch.fnmatch(name, pattern) and _model_path(path) in paths:
            return reason
    return None


@dataclass
class Comparison:
    """One fixture case against one message of the simulator."""

    file: str
    case: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return "partial" in self.case["name"]

    def run(self, real: Any, sim: Any) -> list[str]:
        self._compare(real, sim, "")
        return self.problems

    def _problem(self, path: str, text: str) -> None:
        if _deviation(self.file, self.case["name"], path) is None:
            self.problems.append(f"{path or '<message>'}: {text}")

    def _allowed(self, path: str, real: Any) -> set[str]:
        pooled = POOLS[_pool_key(self.file, self.case)].get(_model_path(path), set())
        if (self.case.get("model"), _model_path(path)) in NULLABLE:
            pooled = pooled | {"null"}
        return pooled | {jtype(real)}

    def _compare(self, real: Any, sim: Any, path: str) -> None:
        if isinstance(real, dict) and isinstance(sim, list):
            if _deviation(self.file, self.case["name"], path) is not None:
                for item in sim:  # an array where the example shows one object (see DEVIATIONS)
                    self._compare(real, item, f"{path}[]")
                return
        allowed = self._allowed(path, real)
        got = jtype(sim)
        if got not in allowed and allowed != {"null"}:
            self._problem(path, f"{got}, real {'/'.join(sorted(allowed))}")
            return
        if isinstance(real, dict) and isinstance(sim, dict):
            pooled = POOLS[_pool_key(self.file, self.case)]
            for key, value in real.items():
                sub = f"{path}.{key}" if path else key
                if key not in sim:
                    if not self.partial:
                        self._problem(sub, "missing")
                    continue
                self._compare(value, sim[key], sub)
            for key, value in sim.items():
                if key in real:
                    continue
                sub = f"{path}.{key}" if path else key
                if self.partial and _model_path(sub) in pooled:
                    # A partial update may carry any key of the full message, with its type.
                    known = pooled[_model_path(sub)]
                    if jtype(value) not in known and known != {"null"}:
                        self._problem(sub, f"{jtype(value)}, real {'/'.join(sorted(known))}")
                    continue
                self._problem(sub, "not sent by the real server")
        elif isinstance(real, list) and isinstance(sim, list) and real:
            for item in sim:
                self._compare(real[0], item, f"{path}[]")


# -- driving the simulator ----------------------------------------------------------------------


@dataclass
class Output:
    """What the simulator sent: ``/ws`` frames by (stream, format), HTTP answers by (endpoint,
    format) as ``(status, body)``, and the status and ``/cws`` replies by kind."""

    ws: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    http: dict[tuple[str, str], Any] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    cws: dict[str, dict[str, Any]] = field(default_factory=dict)


_ids = itertools.count(1)


def guid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def command(opcode: str, portfolio: str, **fields: Any) -> dict[str, Any]:
    return {"opcode": opcode, "guid": guid("cmd"), "user": {"portfolio": portfolio}, **fields}


async def _orders(sim: Simulator, out: Output) -> None:
    """Fill a stock and a futures position, leave a working limit order and a working stop,
    fire a stop order, and keep one of each /cws reply."""
    stock, _, futures = sim.demo.portfolios
    low = sim.market.instruments["SBER"].price_min
    async with await RawWS.connect(sim.cws_url) as cws:
        auth = {"opcode": "authorize", "guid": guid("auth"), "token": sim.access_token()}
        out.cws["authorize-200"] = await cws.request(auth)

        async def ok(frame: dict[str, Any]) -> dict[str, Any]:
            reply = await cws.request(frame)
            assert reply["httpCode"] == 200, reply
            return reply

        market = {"side": "buy", "quantity": 1, "instrument": SBER}
        out.cws["create-200"] = await ok(command("create:market", stock, **market))
        limit = {"side": "buy", "quantity": 1, "price": low, "instrument": SBER}
        first = await ok(command("create:limit", stock, **limit))
        again = dict(limit, price=round(low + 0.01, 2), orderId=first["orderNumber"])
        out.cws["update-200"] = updated = await ok(command("update:limit", stock, **again))
        gone = {"orderId": updated["orderNumber"], "exchange": "MOEX"}
        out.cws["delete-200"] = await ok(command("delete:limit", stock, **gone))
        await ok(command("create:limit", stock, **limit))
        zero = dict(market, quantity=0)
        out.cws["400"] = await cws.request(command("create:market", stock, **zero))
        stop = {"quantity": 1, "triggerPrice": low, "instrument": SBER}
        await ok(command("create:stop", stock, side="sell", condition="Less", **stop))
        await ok(command("create:stop", stock, side="buy", condition="More", **stop))
        await ok(command("create:market", futures, side="buy", quantity=1, instrument=SI))
    sim.set_trading_status("SBER", 17)  # not in a break: the prints below must happen
    for _ in range(50):  # each burst prints at once; the `More` stop fires on one of them
        sim.burst("SBER", 20)
        if any(s.status and s.status.value == "filled" for s in sim.engine.stop_orders(stock)):
            return
    raise AssertionError("the stop order did not fire")


Done = Callable[[list[dict[str, Any]]], bool]


def _has(*checks: Callable[[dict[str, Any]], bool]) -> Done:
    return lambda frames: all(any(check(f["data"]) for f in frames) for check in checks)


def _at_least(n: int) -> Done:
    return lambda items: len(items) >= n


def _field(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def get(data: dict[str, Any]) -> Any:
        for key in keys:
            if key in data:
                return data[key]
        return None

    return get


_CURRENCY = _field("isCurrency", "cur")
_STATUS = _field("status", "st")


async def _streams(sim: Simulator, fmt: str, out: Output) -> None:
    """Every /ws stream in ``fmt``: the snapshot, then live messages (trades, a status patch)."""
    token = sim.access_token()
    stock, _, futures = sim.demo.portfolios
    now = int(time.time())
    common = {"exchange": "MOEX", "format": fmt, "token": token}
    subs: dict[str, tuple[dict[str, Any], Done]] = {
        "orderbook": (
            {"opcode": "OrderBookGetAndSubscribe", "code": "SBER", "depth": 5},
            _at_least(1),
        ),
        "orderbook-bonds": (
            {"opcode": "OrderBookGetAndSubscribe", "code": BOND, "depth": 5},
            _at_least(1),
        ),
        "quotes": ({"opcode": "QuotesSubscribe", "code": "SBER"}, _at_least(1)),
        "bars": (
            {"opcode": "BarsGetAndSubscribe", "code": "SBER", "tf": "60", "from": now - 300},
            _at_least(1),
        ),
        "alltrades": (
            {"opcode": "AllTradesGetAndSubscribe", "code": "SBER", "depth": 5},
            _has(lambda t: t.get("existing", t.get("h")) is False),
        ),
        "instruments": ({"opcode": "InstrumentsGetAndSubscribeV2", "code": "SBER"}, _at_least(2)),
        "positions": (
            {"opcode": "PositionsGetAndSubscribeV2", "portfolio": stock},
            _has(lambda p: _CURRENCY(p) is True, lambda p: _CURRENCY(p) is False),
        ),
        "summaries": ({"opcode": "SummariesGetAndSubscribeV2", "portfolio": stock}, _at_least(1)),
        "risks": ({"opcode": "RisksGetAndSubscribe", "portfolio": stock}, _at_least(1)),
        "spectrarisks": (
            {"opcode": "SpectraRisksGetAndSubscribe", "portfolio": futures},
            _at_least(1),
        ),
        "trades": ({"opcode": "TradesGetAndSubscribeV2", "portfolio": stock}, _at_least(2)),
        "orders": (
            {"opcode": "OrdersGetAndSubscribeV2", "portfolio": stock},
            _has(lambda o: _STATUS(o) == "working", lambda o: _STATUS(o) == "filled"),
        ),
        "stoporders": (
            {"opcode": "StopOrdersGetAndSubscribeV2", "portfolio": stock},
            _has(lambda o: _STATUS(o) == "working", lambda o: _STATUS(o) == "filled"),
        ),
    }
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in subs}
    by_guid: dict[str, str] = {}
    replies: dict[str, dict[str, Any]] = {}
    async with await RawWS.connect(sim.ws_url) as ws:
        bad = {"opcode": "QuotesSubscribe", "code": "SBER", **common, "token": "x", "guid": "g"}
        out.status["401"] = await ws.request(bad)
        for name, (fields, _) in subs.items():
            req = {**fields, **common, "guid": guid(name)}
            if "portfolio" in req:
                req["skipHistory"] = False
            by_guid[req["guid"]] = name
            await ws.send(req)
        toggled = burst = False
        deadline = time.monotonic() + 15
        while waiting := [name for name, (_, done) in subs.items() if not done(got[name])]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{fmt}: no complete {waiting} from the simulator")
            msg = await ws.recv()
            if "requestGuid" in msg:
                replies[by_guid[msg["requestGuid"]]] = msg
                assert msg["httpCode"] == 200, msg
                continue
            name = by_guid[msg["guid"]]
            assert name in replies, f"{name}: data before the status reply"
            got[name].append(msg)
            if got["alltrades"] and not burst:
                sim.burst("SBER", 40)  # live trades after the replayed ones
                burst = True
            if got["instruments"] and not toggled:
                sim.set_trading_status("SBER", 2)  # a break: a partial instrument update
                toggled = True
    sim.set_trading_status("SBER", 17)  # trading again, for the next format's live trades
    out.status["200"] = replies["quotes"]
    for name, frames in got.items():
        out.ws[name, fmt] = frames


async def _get(http: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, Any]:
    async with http.get(path, params={k: str(v) for k, v in params.items()}) as resp:
        body = await resp.json(content_type=None) if resp.status == 200 else await resp.text()
        return resp.status, body


async def _http(sim: Simulator, out: Output) -> None:
    """Every HTTP endpoint with a fixture, in every format."""
    stock, _, futures = sim.demo.portfolios
    now = int(time.time())
    headers = {"Authorization": f"Bearer {sim.access_token()}"}
    orders = sim.engine.orders(stock)
    working = next(o.id for o in orders if o.status and o.status.value == "working")
    stops = {s.status.value: s.id for s in sim.engine.stop_orders(stock) if s.status}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
        out.http["time", ""] = await _get(http, "/md/v2/time")
        out.http["boards", ""] = await _get(http, "/md/v2/Securities/MOEX/SBER/availableBoards")
        for fmt in FORMATS:
            f = {"format": fmt}
            clients = f"/md/v2/Clients/MOEX/{stock}"
            gets: dict[str, tuple[str, dict[str, Any]]] = {
                "alltrades": ("/md/v2/Securities/MOEX/SBER/alltrades", {"take": 5}),
                "alltrades-history": (
                    "/md/v2/Securities/MOEX/SBER/alltrades/history",
                    {"limit": 5, "from": now - 86_400, "to": now},
                ),
                "fortsrisk": (f"/md/v2/Clients/MOEX/{futures}/fortsrisk", {}),
                "history": (
                    "/md/v2/history",
                    {"symbol": "SBER", "exchange": "MOEX", "tf": 60, "from": now - 600, "to": now},
                ),
                "order": (f"{clients}/orders/{working}", {}),
                "orderbook": ("/md/v2/orderbooks/MOEX/SBER", {"depth": 5}),
                "orderbook-bonds": (f"/md/v2/orderbooks/MOEX/{BOND}", {"depth": 5}),
                "orders": (f"{clients}/orders", {}),
                "position": (f"{clients}/positions/SBER", {}),
                "positions": (f"{clients}/positions", {}),
                "quotes": ("/md/v2/Securities/MOEX:SBER/quotes", {}),
                "quotes-futures": ("/md/v2/Securities/MOEX/Si/actualFuturesQuote", {}),
                "risk": (f"{clients}/risk", {}),
                "securities": ("/md/v2/Securities/MOEX", {"market": "FORTS"}),
                "security": ("/md/v2/Securities/MOEX/SiZ6", {}),
                "stoporders": (f"{clients}/stoporders", {}),
                "stoporder-working": (f"{clients}/stoporders/{stops['working']}", {}),
                "stoporder-filled": (f"{clients}/stoporders/{stops['filled']}", {}),
                "summary": (f"{clients}/summary", {}),
                "trades": (f"{clients}/trades", {}),
                "trades-stats": (f"/md/stats/MOEX/{stock}/history/trades", {}),
            }
            for name, (path, params) in gets.items():
                out.http[name, fmt] = await _get(http, path, **params, **f)
        path = "/commandapi/warptrans/TRADE/v2/client/orders/actions/limit"
        body = {
            "side": "buy",
            "quantity": 1,
            "price": sim.market.instruments["SBER"].price_min,
            "instrument": SBER,
            "user": {"portfolio": stock},
        }
        for name in ("200", "400-replay"):
            async with http.post(path, json=body, headers={"X-REQID": f"{stock};1"}) as resp:
                out.http["commandapi", name] = (200, await resp.json())


async def _collect() -> Output:
    out = Output()
    async with Simulator(port=0, seed=7, rate=100.0, history_days=1, day_order_lifetime=DAY) as sim:
        await _orders(sim, out)
        await _http(sim, out)
        for fmt in FORMATS:
            await _streams(sim, fmt, out)
    return out


@pytest.fixture(scope="module")
def output() -> Output:
    """Everything the simulator sent, collected once over real sockets."""
    return asyncio.run(_collect())


# -- which messages each case is compared with ---------------------------------------------------


def _data(frames: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> list[Any]:
    return [f for f in frames if keep(f["data"])]


def samples(out: Output, file: str, case: dict[str, Any]) -> Iterator[Any]:
    """The simulator's messages to compare with ``case`` (of fixture ``file``)."""
    name: str = case["name"]
    fmt: str = case.get("format") or ""
    kind = file.split("/")[1] if "/" in file else file
    if file == "cws":
        yield out.cws[name.removeprefix("example-")]
        return
    if file == "ws/status":
        yield out.status["401" if name.endswith("401") else "200"]
        return
    if file.startswith("ws/"):
        stream = "orderbook-bonds" if kind == "orderbook" and "bonds" in name else kind
        frames = out.ws[stream, fmt]
        if kind == "instruments":
            frames = frames[1:] if "partial" in name else frames[:1]
        elif kind == "positions":
            cash = "cash" in name
            frames = _data(frames, lambda p: _CURRENCY(p) is cash)
        elif kind == "stoporders":
            wanted = "filled" if "fired" in name else "working"
            frames = _data(frames, lambda o: _STATUS(o) == wanted)
        if "payload" in case:
            yield from (f["data"] for f in frames)
        else:
            yield from frames
        return
    # HTTP
    if kind in ("time", "boards"):
        status, body = out.http[kind, ""]
    elif kind == "commandapi":
        status, body = out.http[kind, name.removeprefix("example-")]
    elif kind == "stoporders" and name.endswith("-one"):
        for which in ("working", "filled"):
            yield _ok(out.http[f"stoporder-{which}", fmt], file, name)
        return
    elif kind == "trades" and name.endswith("-one"):
        yield from _ok(out.http["trades", fmt], file, name)
        return
    elif kind == "trades" and name.endswith("-stats"):
        yield from _ok(out.http["trades-stats", fmt], file, name)
        return
    elif kind in ("orderbook", "quotes") and ("bonds" in name or "futures" in name):
        suffix = "bonds" if "bonds" in name else "futures"
        status, body = out.http[f"{kind}-{suffix}", fmt]
    else:
        status, body = out.http[kind, fmt]
    yield _ok((status, body), file, name)


def _ok(answer: tuple[int, Any], file: str, name: str) -> Any:
    status, body = answer
    if status != 200:
        pytest.fail(f"{file}:{name}: HTTP {status} {str(body)[:200]}")
    return body


def all_cases() -> list[Any]:
    return [
        pytest.param(file, case, id=f"{file}:{case['name']}")
        for file in [*names("ws"), *names("http"), "cws"]
        for case in cases(file)
    ]


@pytest.mark.parametrize(("file", "case"), all_cases())
def test_simulator_sends_the_real_shape(output: Output, file: str, case: dict[str, Any]) -> None:
    """Keys, JSON types and nulls of the simulator's messages match the real message."""
    real = _message(case)
    if case.get("shape") == "list" and not isinstance(real, list):  # pragma: no cover
        raise AssertionError(f"{file}:{case['name']} is not a list")
    compared = 0
    problems: dict[str, int] = {}
    for sim_message in samples(output, file, case):
        compared += 1
        for problem in Comparison(file, case).run(real, sim_message):
            problems[problem] = problems.get(problem, 0) + 1
    assert compared, f"the simulator sent nothing to compare with {file}:{case['name']}"
    assert not problems, "\n".join(f"{p}  (x{n})" for p, n in sorted(problems.items()))


def test_the_comparison_can_fail() -> None:
    """A renamed key, an extra key, a wrong type and an unexpected null are all reported."""
    case = cases("ws/quotes")[0]
    real = _message(case)
    data = dict(real["data"])
    data["lastPriceX"] = data.pop("lastPrice")
    data["volume"] = "5614360"
    data["exchange"] = None
    problems = Comparison("ws/quotes", case).run(real, {**real, "data": data})
    assert sorted(problems) == [
        "data.exchange: null, real string",
        "data.lastPrice: missing",
        "data.lastPriceX: not sent by the real server",
        "data.volume: string, real number",
    ]
