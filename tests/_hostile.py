"""Hostile frames for the tests: good frames to follow them, deep nesting, tokens, and the
hypothesis strategies of the fuzz tests (structured: valid envelopes with bad values; bytes).

Good frames are the real ALOR shapes of ``tests/fixtures/alor`` (Simple format) with a marker
in one field, so a test can tell its own frame from the simulator's live market.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from typing import Any, Final

import msgspec
from hypothesis import HealthCheck, settings, strategies as st

from ._fixtures import cases


#: How many examples a fuzz test runs: small in the suite, more with ALORWS_FUZZ_EXAMPLES.
FUZZ_EXAMPLES: Final = int(os.environ.get("ALORWS_FUZZ_EXAMPLES", "0")) or None


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``examples`` in the suite (or ALORWS_FUZZ_EXAMPLES),
    no deadline (sockets), and no complaint about module fixtures, slow or large examples."""
    return settings(
        max_examples=FUZZ_EXAMPLES or examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


class LogLines(logging.Handler):
    """Keeps every log message, to look for token-shaped text in them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


#: A JWT as ALOR issues them (header, claims, signature: three base64url parts).
JWT: Final = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJQMDUwMDAwIiwiZW50IjoiY2xpZW50IiwiZXhwIjoxNzAwMDAwMDAwfQ."
    "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQtYW55d2hlcmU"
)
#: A refresh token as the ALOR portal issues them (not a JWT: only its key gives it away).
REFRESH: Final = "4f0c1a6e-8d2b-4c3a-9e1f-7b6d5a4c3b2a"
#: What must never be seen: the tokens, and the pieces of the JWT a cut excerpt would show
#: (its header is the same for every token; its claims and signature are not).
SECRETS: Final = (JWT, JWT[:45], JWT.split(".")[1][:12], REFRESH)

#: Trade ids of the injected trades start here (far from the simulator's).
_TRADE_IDS: Final = 7_000_000_000_000
#: stream kind -> (fixture file, marker field)
_KINDS: Final = {
    "quotes": ("ws/quotes", "symbol"),
    "trades": ("ws/alltrades", "id"),
    "orders": ("ws/orders", "id"),
}


def payload(kind: str) -> dict[str, Any]:
    """The real Simple payload of a ``quotes``, ``trades`` or ``orders`` frame (a copy)."""
    name, _ = _KINDS[kind]
    case = next(c for c in cases(name) if c["format"] == "Simple")
    return copy.deepcopy(case["frame"]["data"])


def frame(data: Any, guid: str) -> bytes:
    """A data frame in the server's compact shape, ``guid`` last (the reader's fast path)."""
    return msgspec.json.encode({"data": data, "guid": guid})


def good(kind: str, guid: str, marker: int) -> bytes:
    """A valid frame of ``kind`` for subscription ``guid``, told apart by ``marker``."""
    return frame(good_data(kind, marker), guid)


def good_payload(kind: str, marker: int) -> bytes:
    """The ``data`` JSON of :func:`good`'s frame (what the gateway publishes)."""
    return msgspec.json.encode(good_data(kind, marker))


def good_data(kind: str, marker: int) -> dict[str, Any]:
    """A valid payload of ``kind`` told apart by ``marker``."""
    data = payload(kind)
    field = _KINDS[kind][1]
    if kind == "quotes":
        data[field] = f"INJ{marker}"
    elif kind == "trades":
        data[field] = _TRADE_IDS + marker
    else:
        data[field] = f"9{marker:018d}"
    if kind == "orders":
        data["existing"] = False
    return data


def marker_of(kind: str, obj: Any) -> int | None:
    """The marker of an object :func:`good` built, or None for anything else."""
    if kind == "quotes":
        digits = obj.symbol[3:] if obj.symbol.startswith("INJ") else ""
    elif kind == "trades":
        ident = obj.id
        ok = isinstance(ident, int) and _TRADE_IDS <= ident < _TRADE_IDS + 10**9
        return ident - _TRADE_IDS if ok else None
    else:
        ident = str(obj.id)
        digits = ident[1:] if len(ident) == 19 and ident.startswith("9") else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def deep(guid: str, depth: int = 20_000) -> bytes:
    """A data frame whose payload nests ``depth`` arrays deep: valid JSON, compact shape.

    Deeper than every supported Python lets a C decoder recurse: 3.11 follows the recursion
    limit (raised to about 3000 for the tests), 3.12 stops at 1500, 3.13 at about 10,000."""
    return b'{"data":{"x":' + b"[" * depth + b"]" * depth + b'},"guid":"' + guid.encode() + b'"}'


def echoed_token(guid: str) -> bytes:
    """A bad data frame that echoes a subscribe request with its token, the JWT cut by the
    200-character excerpt of the log inside its claims (the JWT starts at character 138)."""
    pad = "p" * 110
    return (
        b'{"data":{"pad":"' + pad.encode() + b'","token":"' + JWT.encode()
        + b'","refreshToken":"' + REFRESH.encode() + b'","x":},"guid":"' + guid.encode() + b'"}'
    )  # fmt: skip


# -- hypothesis strategies ------------------------------------------------------------------

#: Values of the wrong kind and at the edges: huge ints, floats where ints are expected,
#: strings where numbers are, -0, 1e400 (infinite once read), unicode and escapes.
_EDGE_NUMBERS: Final = [
    "0",
    "-0",
    "-0.0",
    "-1",
    "1e400",
    "-1e400",
    "1e-400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "1" * 400,
    "0.1",
    "1.5e308",
    "123456789012345678901234567890.5",
]
_EDGE_STRINGS: Final = [
    '""',
    '"x"',
    '"\\u0000"',
    '"\\ud800"',  # a lone surrogate, escaped
    '"\\ud83d\\ude00"',
    '"' + "я" * 300 + '"',
    '"' + "x" * 100_000 + '"',
    '"working"',
    '"WORKING"',
    '"buy"',
    '"limit"',
    '"MOEX"',
    '"2024-01-08T15:57:12.2911671Z"',
    '"2024-13-45T99:99:99Z"',
    '"' + JWT + '"',
]
_EDGE_OTHERS: Final = ["null", "true", "false", "[]", "{}", "[1,2]", '{"a":1}']
#: Nesting depths: shallow, or far beyond any recursion limit a test runs under (Python's
#: default is 1000; pytest and hypothesis raise it to about 3000 while a test runs). In
#: between, whether a decoder gives up depends on the limit of the moment and on how deep the
#: stack already is, and a test could not say in advance what the client must make of it.
_depths = st.one_of(st.integers(1, 200), st.integers(6000, 12000))

edge_values = st.one_of(
    st.sampled_from(_EDGE_NUMBERS),
    st.sampled_from(_EDGE_STRINGS),
    st.sampled_from(_EDGE_OTHERS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f)),
    st.text(max_size=20).map(lambda s: msgspec.json.encode(s).decode()),
    _depths.map(lambda n: "[" * n + "]" * n),
    _depths.map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@st.composite
def structured_payload(draw: st.DrawFn, kind: str) -> bytes:
    """A real payload of ``kind`` with some fields changed, removed or added (or replaced by
    something that is not an object at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(edge_values).encode()
    data = payload(kind)
    raw: dict[str, str] = {k: msgspec.json.encode(v).decode() for k, v in data.items()}
    keys = sorted(raw)
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        if draw(st.booleans()):
            raw[key] = draw(edge_values)
        else:
            del raw[key]
    for _ in range(draw(st.integers(0, 2))):
        raw[draw(st.text(max_size=8))] = draw(edge_values)
    body = ",".join(f"{msgspec.json.encode(k).decode()}:{v}" for k, v in raw.items())
    return ("{" + body + "}").encode()


def structured(kind: str, guid: str) -> st.SearchStrategy[bytes]:
    """A valid envelope (compact, ``guid`` last) around a :func:`structured_payload`."""
    return structured_payload(kind).map(
        lambda body: b'{"data":' + body + b',"guid":"' + guid.encode() + b'"}'
    )


@st.composite
def damaged(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` damaged at the byte level: cut short, bytes overwritten, bytes inserted, or
    replaced by random bytes."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(min_size=1, max_size=300))
    if choice == 1:
        return base[: draw(st.integers(1, len(base) - 1))]
    if choice == 2:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)
    cut = draw(st.integers(1, len(base) - 1))
    return base[:cut] + draw(st.binary(min_size=1, max_size=20)) + base[cut:]


@st.composite
def raw_bytes(draw: st.DrawFn, kind: str, guid: str) -> bytes:
    """Byte-level damage to a frame: random bytes, a good frame cut short or with bytes
    changed or inserted, invalid UTF-8 inside a frame that keeps its tail (so it reaches the
    stream)."""
    base = good(kind, guid, 0)  # marker 0: never a test's sentinel (those count from 1)
    if draw(st.integers(0, 4)) == 0:
        junk = draw(st.binary(min_size=1, max_size=40))
        return b'{"data":{"symbol":"' + junk + b'"},"guid":"' + guid.encode() + b'"}'
    return draw(damaged(base))


def hostile(kind: str, guid: str) -> st.SearchStrategy[bytes]:
    """Every kind of hostile frame for a ``kind`` stream subscribed as ``guid``."""
    return st.one_of(structured(kind, guid), raw_bytes(kind, guid))


def hostile_payload(kind: str) -> st.SearchStrategy[bytes]:
    """Every kind of hostile ``data`` payload of a ``kind`` stream (no envelope)."""
    base = msgspec.json.encode(payload(kind))
    return st.one_of(structured_payload(kind), damaged(base))


async def read_until(stream: Any, kind: str, marker: int, style: int = 0) -> None:
    """Consume ``stream`` until the object :func:`good` marked ``marker`` arrives, reading with
    ``get_batch`` (style 0), ``get`` (1) or ``async for`` (2)."""
    async with asyncio.timeout(20):
        while True:
            if style == 0:
                got = await stream.get_batch(50)
            elif style == 1:
                got = [await stream.get()]
            else:
                got = []
                async for obj in stream:
                    got.append(obj)
                    break
            if any(marker_of(kind, obj) == marker for obj in got):
                return
