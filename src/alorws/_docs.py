"""Generates ``docs/streams.md``: a page per stream with its fields in every wire format.

Run ``python -m alorws._docs > docs/streams.md``; a test fails when the page is out of date.
"""

from __future__ import annotations

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


def render() -> str:
    """The whole page as Markdown."""
    out = [
        "# Streams and their fields",
        "",
        "Generated from the models by `python -m alorws._docs`; do not edit by hand.",
        "",
        "Every stream decodes into one normalized model whatever the wire format. The tables give",
        "each Python field, its type and its key in each format (— : the format lacks it; the",
        "field then keeps its default). Protocol facts: `alor-protocol.md` §4.",
        "",
    ]
    for opcode, model in STREAM_MODELS.items():
        request = REQUEST_TYPES.get(opcode)
        out += [f"## {opcode.value} → `{model.__name__}`", ""]
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            out += [doc[0], ""]
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
