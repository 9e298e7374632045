"""Generates ``docs/streams.md``: a page per stream with its fields in every wire format.

Run ``python -m alorws._docs > docs/streams.md``; a test fails when the page is out of date.
A citation such as ``docs/protocol.md §4.1`` in a model's docstring becomes a link to that
section (the page sits next to docs/protocol.md, whose headings give the anchors).
"""

from __future__ import annotations

import pathlib
import re
import typing
from typing import Any

import msgspec

from .protocol._model import Model, wire_keys
from .protocol.codec import STREAM_MODELS
from .protocol.enums import Format
from .protocol.requests import REQUEST_TYPES


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if tp is msgspec.UnsetType:
        return "UNSET"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:  # a range (see the page's intro)
        meta = next((m for m in args[1:] if isinstance(m, msgspec.Meta)), msgspec.Meta())
        name = _type_name(args[0])
        if meta.ge == 0:
            return f"{name} 0…2⁶³−1" if meta.le is not None else f"{name} ≥ 0"
        return f"{name} (64-bit)" if meta.le is not None else name
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if args:
        return " | ".join(_type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _fields_table(model: type[Model]) -> list[str]:
    keys = {fmt: wire_keys(model, fmt) for fmt in Format}
    lines = ["| field | type | Simple | Slim | Heavy |", "|---|---|---|---|---|"]
    for info in msgspec.structs.fields(model):
        cells = [f"`{keys[f][info.name]}`" if info.name in keys[f] else "—" for f in Format]
        kind = _type_name(info.type).replace("|", "\\|")  # a bare | would split the cell
        lines.append(f"| `{info.name}` | {kind} | " + " | ".join(cells) + " |")
    return lines


def _nested(model: type[Model]) -> list[type[Model]]:
    found: list[type[Model]] = []
    for info in msgspec.structs.fields(model):
        stack = [info.type]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, Model) and tp not in found:
                found.append(tp)
            stack.extend(typing.get_args(tp))
    return found


_PROTOCOL = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_SECTION = "\u00a7"  # the section sign, escaped so that this file cites nothing itself
_CITATION = re.compile(r"docs/protocol\.md " + _SECTION + r"(\d+(?:\.\d+)?)")


def _anchors() -> dict[str, str]:
    """Section number ("4" or "4.6") -> its GitHub anchor, from docs/protocol.md's headings."""
    found: dict[str, str] = {}
    for line in _PROTOCOL.read_text(encoding="utf-8").splitlines():
        m = re.match(r"(##|###) (\d+(?:\.\d+)?)\.? ", line)
        if m:
            title = line.lstrip("#").strip().lower()
            found[m[2]] = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
    return found


def _link(text: str, anchors: dict[str, str]) -> str:
    """Each citation of docs/protocol.md in ``text`` as a Markdown link to its section."""
    return _CITATION.sub(
        lambda m: f"[protocol {_SECTION}{m[1]}](protocol.md#{anchors[m[1]]})", text
    )


def render() -> str:
    """The whole page as Markdown."""
    anchors = _anchors()
    out = [
        "# Streams and their fields",
        "",
        "Generated from the models by `python -m alorws._docs`; do not edit by hand.",
        "",
        "Every stream decodes into one normalized model whatever the wire format. The tables give",
        "each Python field, its type and its key in each format (— : the format lacks it; the",
        "field then keeps its default). Protocol facts: " + _link("docs/protocol.md §4.", anchors),
        "",
        "**Types and ranges.** The decoders check every number while decoding; a value outside",
        "its range is a `FrameError` naming the field (a stream counts it as a bad payload and",
        "goes on), never a model holding it:",
        "",
        "* every `float` is finite: JSON has no `inf`/`nan`, and a number that overflows a",
        "  double (`1e400`) fails the decode;",
        "* `≥ 0` marks what cannot be negative: quantities of orders and trades (total and",
        "  filled), volumes, open interest, lot sizes, face values, ids, timestamps;",
        "* lots of orders, stop orders and trades and numeric ids are also at most 2⁶³−1 (they",
        "  are `long` on the server); volumes and timestamps are checked for their sign only,",
        "  to keep the book decode fast (a bound costs a few ns a value, a book has 40 volumes);",
        "* prices are signed: MOEX allows negative prices on some derivatives (commodity futures",
        "  since 2020, calendar spreads), so a negative price is a value, not an error; money",
        "  (P&L, margins, values, commissions) and position quantities (a short position) are",
        "  signed too.",
        "",
        "Lots (`*_batch`) are `int` in orders, stop orders and own trades (an order is for whole",
        "lots) and `float` in positions: a money position has lot size 1 and its lots are its",
        "amount, e.g. `28692.09` roubles, which the server sends as a fractional number (its type",
        "is `decimal`). `float` is the type of `qty_units` already (`Decimal` would slow every",
        "decode and mix two number types in one model); a security's lots are whole numbers,",
        "so `int(position.qty_batch)` is exact for it.",
        "",
        "Ids are text: a stop order's `id` and `exchange_order_id` arrive as JSON numbers too",
        "(the server sends a fired stop order's exchange order id as a number) and are read as",
        "their digits. An order's `qty_batch` is never `null` on the wire (`None` only means the",
        "message left the key out).",
        "",
    ]
    for opcode, model in STREAM_MODELS.items():
        request = REQUEST_TYPES.get(opcode)
        out += [f"## {opcode.value} → `{model.__name__}`", ""]
        # The docstring's first paragraph, on one line.
        summary = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        if summary:
            out += [_link(summary, anchors), ""]
        if request is not None:
            params = ", ".join(f"`{f.name}`" for f in msgspec.structs.fields(request))
            out += [f"Request `{request.__name__}`: {params}.", ""]
        out += _fields_table(model)
        for nested in _nested(model):
            out += ["", f"`{nested.__name__}`:", ""] + _fields_table(nested)
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
