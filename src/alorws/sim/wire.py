"""How the simulator writes payloads: the shared models' encoding plus what ALOR really sends.

:func:`alorws.protocol._model.to_wire` renders a model with the keys of its format. A few real
shapes carry more than the model holds, or another JSON type; the simulator writes those here,
so the models stay what a client decodes into:

* a stop order that has fired carries its exchange order id as a JSON number
  (``exchangeOrderId`` / Slim ``eid``, docs/protocol.md §4.12); the model keeps it as text;
* a Heavy own trade repeats its lots as ``qty``, as Simple does (docs/protocol.md §4.10);
* quantities in lots of a position are written as integers when they are whole (a stock
  position has ``100``, not ``100.0``); a money position's lots are fractional
  (docs/protocol.md §12.15).

The HTTP-only additions (Heavy ``shortName``/``currency`` of the session's own trades) are made
by the server, which knows the instrument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from ..protocol._model import Model, to_wire
from ..protocol.account import OwnTrade, Position, StopOrder
from ..protocol.enums import Format


__all__ = ["encode_payload", "wire"]

_ENC: Final = msgspec.json.Encoder()


def _stop_order(obj: Any, fmt: Format, out: dict[str, Any]) -> dict[str, Any]:
    eid = obj.exchange_order_id
    if eid is not None and eid.isdigit():
        out["eid" if fmt is Format.SLIM else "exchangeOrderId"] = int(eid)
    return out


def _own_trade(obj: Any, fmt: Format, out: dict[str, Any]) -> dict[str, Any]:
    if fmt is not Format.HEAVY:
        return out
    # `qty` right after `qtyBatch`, where ALOR puts it.
    fixed: dict[str, Any] = {}
    for key, value in out.items():
        fixed[key] = value
        if key == "qtyBatch":
            fixed["qty"] = obj.qty_batch
    return fixed


_LOT_KEYS: Final = frozenset(
    {
        "qtyT0Batch",
        "qtyT1Batch",
        "qtyT2Batch",
        "qtyTFutureBatch",
        "qtyBatch",
        "openQtyBatch",
        "qty",
        "open",
    }
)


def _position(obj: Any, fmt: Format, out: dict[str, Any]) -> dict[str, Any]:
    for key in _LOT_KEYS.intersection(out):
        value = out[key]
        if type(value) is float and value.is_integer():
            out[key] = int(value)
    return out


_FIXES: Final[dict[type, Callable[[Any, Format, dict[str, Any]], dict[str, Any]]]] = {
    StopOrder: _stop_order,
    OwnTrade: _own_trade,
    Position: _position,
}


def wire(model: Model, fmt: Format) -> dict[str, Any]:
    """``model`` as the JSON object ALOR sends in ``fmt`` (a plain dict, ready to encode)."""
    out = to_wire(model, fmt)
    fix = _FIXES.get(type(model))
    return out if fix is None else fix(model, fmt, out)


def encode_payload(model: Model, fmt: Format) -> bytes:
    """``model`` encoded as the ``data`` of a ``/ws`` message in ``fmt`` (docs/protocol.md §3.4)."""
    return _ENC.encode(wire(model, fmt))
