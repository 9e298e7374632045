"""Hostile frames for the tests: good frames to follow them, deep nesting, tokens, and the
hypothesis strategies of the fuzz tests (structured: valid envelopes with bad values; bytes).

Good frames are the real ALOR shapes of ``tests/fixtures/alor`` (Simple format) with a marker
in one field, so a test can tell its own frame from the simulator's live market.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Final

import msgspec
from hypothesis import strategies as st

from ._fixtures import cases


#: How many examples a fuzz test runs: small in the suite, more with ALORWS_FUZZ_EXAMPLES.
FUZZ_EXAMPLES: Final = int(os.environ.get("ALORWS_FUZZ_EXAMPLES", "0")) or None

#: A JWT as ALOR issues them (header, claims, signature: three base64url parts).
JWT: Final = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJQMDUwMDAwIiwiZW50IjoiY2xpZW50IiwiZXhwIjoxNzAwMDAwMDAwfQ."
    "c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQtYW55d2hlcmU"
)
#: A refresh token as the ALOR portal issues them (not a JWT: only its key gives it away).
REFRESH: Final = "4f0c1a6e-8d2b-4c3a-9e1f-7b6d5a4c3b2a"

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
    return frame(data, guid)


def marker_of(kind: str, obj: Any) -> int | None:
    """The marker of an object :func:`good` built, or None for anything else."""
    if kind == "quotes":
        symbol = obj.symbol
        return int(symbol[3:]) if symbol.startswith("INJ") and symbol[3:].isdigit() else None
    if kind == "trades":
        ident = obj.id
        ok = isinstance(ident, int) and _TRADE_IDS <= ident < _TRADE_IDS + 10**9
        return ident - _TRADE_IDS if ok else None
    ident = str(obj.id)
    return int(ident[1:]) if len(ident) == 19 and ident.startswith("9") else None


def deep(guid: str, depth: int = 1500) -> bytes:
    """A data frame whose payload nests ``depth`` arrays deep: valid JSON, compact shape."""
    return b'{"data":{"x":' + b"[" * depth + b"]" * depth + b'},"guid":"' + guid.encode() + b'"}'


def echoed_token(guid: str) -> bytes:
    """A bad data frame that echoes a subscribe request with its token, the JWT cut by the
    200-character excerpt of the log (the first ~190 characters are padding)."""
    pad = "p" * 150
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

edge_values = st.one_of(
    st.sampled_from(_EDGE_NUMBERS),
    st.sampled_from(_EDGE_STRINGS),
    st.sampled_from(_EDGE_OTHERS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f)),
    st.text(max_size=20).map(lambda s: msgspec.json.encode(s).decode()),
    st.integers(min_value=1, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@st.composite
def structured(draw: st.DrawFn, kind: str, guid: str) -> bytes:
    """A valid envelope around a real payload with some fields changed, removed or added."""
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
    if draw(st.integers(0, 9)) == 0:  # a payload that is not an object at all
        body_json = draw(edge_values)
    else:
        body_json = "{" + body + "}"
    return ('{"data":' + body_json + ',"guid":"' + guid + '"}').encode()


@st.composite
def raw_bytes(draw: st.DrawFn, kind: str, guid: str) -> bytes:
    """Byte-level damage: random bytes, a good frame cut short or with bytes flipped, invalid
    UTF-8 inside a frame that keeps its tail (so it reaches the stream)."""
    base = good(kind, guid, 1)
    choice = draw(st.integers(0, 4))
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
    if choice == 3:
        junk = draw(st.binary(min_size=1, max_size=40))
        return b'{"data":{"symbol":"' + junk + b'"},"guid":"' + guid.encode() + b'"}'
    cut = draw(st.integers(9, len(base) - 1))
    return base[:cut] + draw(st.binary(max_size=20)) + base[cut:]


def hostile(kind: str, guid: str) -> st.SearchStrategy[bytes]:
    """Every kind of hostile frame for a ``kind`` stream subscribed as ``guid``."""
    return st.one_of(structured(kind, guid), raw_bytes(kind, guid))
