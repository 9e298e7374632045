"""Route + typed decode per message, against the json.loads + dict pattern of existing clients.

Both sides do the same work per frame: parse, find the subscription by guid, check it is a data
message, read a few fields. Measured side by side in one run; the ratio is what counts.

``alorws`` is what the client does per frame: the subscription found from the frame's tail
(:class:`~alorws.protocol.codec.TailTable`: a slice and a dict lookup), then envelope and payload
decoded in one pass (:func:`~alorws.protocol.codec.frame_decoder_for`); frames of another shape
would go through ``route()``. ``route()+decode`` is the two-pass path those frames take
(:func:`~alorws.protocol.route`, then the payload), shown for comparison.

    python bench/decode.py [--repeat 7] [--number 20000]
"""

from __future__ import annotations

import argparse
import functools
import json
import timeit
from collections.abc import Callable
from typing import Any

from alorws.protocol.codec import (
    DataMessage,
    TailTable,
    decoder_for,
    frame_decoder_for,
    route,
)
from alorws.protocol.enums import Format
from alorws.protocol.market import OrderBook, Quote, Trade


QUOTE = (
    '{"data":{"symbol":"LKOH","exchange":"MOEX","description":"ЛУКОЙЛ","prev_close_price":6980.0,'
    '"last_price":7013.0,"last_price_timestamp":1750663601,"high_price":7040.5,"low_price":6971.0,'
    '"accruedInt":0,"volume":412890,"open_interest":null,"ask":7013.5,"bid":7012.5,"ask_vol":3,'
    '"bid_vol":14,"ob_ms_timestamp":1750663601402,"open_price":6990.0,"yield":null,"lotsize":1,'
    '"lotvalue":7013.0,"facevalue":0,"type":"CS","total_bid_vol":18211,"total_ask_vol":20990,'
    '"accrued_interest":0,"change":33.0,"change_percent":0.47},'
    '"guid":"7f3c2a10-0b6e-4c1d-9e2f-5a8b3c4d1e01"}'
).encode()


def _book(fmt: Format, levels: int = 20) -> bytes:
    bids = [(312.47 - i * 0.01, 100 + 7 * i) for i in range(levels)]
    asks = [(312.48 + i * 0.01, 90 + 5 * i) for i in range(levels)]
    if fmt is Format.SLIM:
        data: dict[str, Any] = {
            "b": [{"p": round(p, 2), "v": v} for p, v in bids],
            "a": [{"p": round(p, 2), "v": v} for p, v in asks],
            "t": 1750663563117,
            "h": False,
        }
    else:
        data = {
            "snapshot": False,
            "bids": [{"price": round(p, 2), "volume": v} for p, v in bids],
            "asks": [{"price": round(p, 2), "volume": v} for p, v in asks],
            "timestamp": 1750663563,
            "ms_timestamp": 1750663563117,
            "existing": False,
        }
    return json.dumps({"data": data, "guid": "ob-sber-20"}, separators=(",", ":")).encode()


TRADE = (
    b'{"data":{"id":11482203391,"sym":"SBER","bd":"TQBR","q":25,"px":312.48,'
    b'"t":1750663603557,"oi":0,"h":false,"s":"buy"},"guid":"at-sber"}'
)


def baseline(frame: bytes, subs: dict[str, Any], fields: tuple[str, ...]) -> Any:
    """What existing Python ALOR clients do: json.loads, guid lookup, dict reads."""
    msg = json.loads(frame)
    sub = subs.get(msg.get("guid"))
    data = msg.get("data")
    if sub is None or data is None:
        return None
    return [data.get(f) for f in fields]


def ours(frame: bytes, subs: TailTable[Any], fields: tuple[str, ...]) -> Any:
    """alorws: the subscription from the tail, one-pass typed decode, attribute reads."""
    decoder = subs.match(frame)
    if decoder is None:  # another shape (not here): route() finds the guid, same decode
        msg = route(frame)
        if type(msg) is not DataMessage or (decoder := subs.get(msg.guid)) is None:
            return None
    obj = decoder.decode(frame).data
    return [getattr(obj, f) for f in fields]


def two_pass(frame: bytes, subs: dict[str, Any], fields: tuple[str, ...]) -> Any:
    """route() without decoding the payload, look the guid up, typed decode of the payload."""
    msg = route(frame)
    if type(msg) is not DataMessage:
        return None
    decoder = subs.get(msg.guid)
    if decoder is None:
        return None
    obj = decoder.decode(msg.data)
    return [getattr(obj, f) for f in fields]


def best_us(fns: tuple[Callable[[], Any], ...], number: int, repeat: int) -> list[float]:
    """Best-of-``repeat`` microseconds per call of each function, measured interleaved (A, B,
    A, B, ...) so all see the same machine conditions (this VM's speed drifts)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], timeit.timeit(fn, number=number))
    return [b / number * 1e6 for b in best]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=10000)
    args = parser.parse_args(argv)

    cases = [
        ("Simple quote", QUOTE, Quote, Format.SIMPLE, ("last_price", "bid", "ask"), 4.0),
        (
            "Simple book, 20 levels",
            _book(Format.SIMPLE),
            OrderBook,
            Format.SIMPLE,
            ("bids", "asks"),
            3.0,
        ),
        ("Slim book, 20 levels", _book(Format.SLIM), OrderBook, Format.SLIM, ("b", "a"), None),
        ("Slim trade", TRADE, Trade, Format.SLIM, ("px", "q", "s"), None),
    ]
    print(
        f"{'message':<24}{'bytes':>7}{'json.loads+dict µs':>20}{'alorws µs':>11}{'ratio':>8}"
        f"{'route()+decode µs':>19}{'ratio':>8}  goal"
    )
    failed = False
    for name, frame, model, fmt, keys, goal in cases:
        guid = route(frame).guid  # type: ignore[union-attr]
        decoder = decoder_for(model, fmt)
        frame_decoder = frame_decoder_for(model, fmt)
        attrs = {
            "b": "bids",
            "a": "asks",
            "px": "price",
            "q": "qty",
            "s": "side",
        }
        py_fields = tuple(attrs.get(k, k) for k in keys)
        base_subs = {guid: object()}
        our_subs: TailTable[Any] = TailTable()
        our_subs[guid] = frame_decoder
        two_subs = {guid: decoder}
        assert ours(frame, our_subs, py_fields) == two_pass(frame, two_subs, py_fields)
        assert baseline(frame, base_subs, keys) is not None
        run_base = functools.partial(baseline, frame, base_subs, keys)
        run_ours = functools.partial(ours, frame, our_subs, py_fields)
        run_two = functools.partial(two_pass, frame, two_subs, py_fields)
        t_base, t_ours, t_two = best_us((run_base, run_ours, run_two), args.number, args.repeat)
        ratio = t_base / t_ours
        mark = ""
        if goal is not None:
            mark = f"≥{goal:.0f}× {'ok' if ratio >= goal else 'MISSED'}"
            failed |= ratio < goal
        print(
            f"{name:<24}{len(frame):>7}{t_base:>20.2f}{t_ours:>11.2f}{ratio:>7.1f}×"
            f"{t_two:>19.2f}{t_base / t_two:>7.1f}×  {mark}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
