"""Checks of the arguments that go into HTTP paths, shared by the HTTP client and the candle
cache (no I/O): a value that could change the path or the query never reaches a URL."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from ..errors import InvalidArgumentError
from ..protocol.enums import Exchange
from ..protocol.requests import _enum, _text


__all__ = ["candle_span", "exchange_code", "segment"]

#: Characters never allowed in a path argument (ticker, board, portfolio, order id).
_BAD_PATH_CHARS: Final = frozenset(" /\\?#%,:;\t\r\n")

#: Longest candle of each letter timeframe, seconds (docs/protocol.md §4.3; months and years at
#: their longest).
_LETTER_SPANS: Final = {"D": 86_400, "W": 604_800, "M": 31 * 86_400, "Y": 366 * 86_400}


def segment(field: str, value: object) -> str:
    """A non-empty path argument without separators or spaces, URL-quoted."""
    text = _text(field, value)
    bad = sorted(_BAD_PATH_CHARS.intersection(text))
    if bad or not text.isprintable():
        raise InvalidArgumentError(field, f"{text!r} has characters not allowed here: {bad}")
    if text in (".", ".."):  # a dot segment would move the URL (and a cache path) up a level
        raise InvalidArgumentError(field, f"{text!r} is not a name")
    return quote(text, safe="")


def exchange_code(value: object, field: str = "exchange") -> str:
    """An exchange argument as the wire spells it (``MOEX``, ``SPBX``)."""
    return _enum(field, Exchange, value).value


def candle_span(tf: str) -> int:
    """The longest a candle of wire timeframe ``tf`` can last, in seconds."""
    return _LETTER_SPANS.get(tf) or int(tf)
