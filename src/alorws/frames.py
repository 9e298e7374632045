"""Lists of models that turn into DataFrames: :class:`Rows` and :class:`Bars`.

``HttpClient.history`` returns :class:`Bars` (a ``list`` of :class:`~alorws.protocol.market.Bar`,
so everything that worked on the list still does) and a recording's messages come out of
``Replay.to_pandas``; both convert with::

    df = bars.to_pandas()             # pandas (pip install 'alorws[pandas]')
    df = bars.to_polars()             # polars (pip install 'alorws[polars]')
    df = bars.to_pandas(tz="UTC")     # timestamps in UTC instead of Moscow time

Columns are the model's fields by their Python names, in declaration order. Dtypes:

===========================  ==========================================  =======================
field                        pandas                                      polars
===========================  ==========================================  =======================
a time (below)               ``datetime64[ns, Europe/Moscow]``           ``Datetime("ns", tz)``
``float`` (prices, money)    ``float64`` (None -> NaN)                   ``Float64``
``decimal.Decimal``          ``object`` holding the exact ``Decimal``    ``Decimal``
``int`` (volumes, ids)       ``int64``; ``Int64`` when it may be None    ``Int64``
``bool``                     ``bool``; ``boolean`` when it may be None   ``Boolean``
``str`` and str enums        ``object`` holding ``str``                  ``String``
anything else (book levels)  ``object`` holding the values               ``Object``
===========================  ==========================================  =======================

Prices are ``float`` in every model: ALOR sends them as JSON numbers, which decode to the
nearest double, so ``float64`` loses nothing the model had. A model field typed
``Decimal`` is kept exact as an ``object`` column of ``Decimal`` values (pandas has no decimal
dtype), never rounded through ``float``.

Times become timezone-aware timestamps, in Moscow time (:data:`~alorws.protocol.timeutil.MSK_NAME`)
by default or in the ``tz`` asked for: ``Bar.time`` and ``Quote.last_price_timestamp`` (Unix
seconds), ``Quote.ob_ms_timestamp``, ``OrderBook.ms_timestamp`` and ``Trade.timestamp`` (Unix
milliseconds), and the ISO-8601 strings of orders, stop orders, own trades and risks
(``trans_time``, ``update_time``, ``end_time``, ``date``, ``calculation_time``; ``Trade.time``).
Other fields keep their values (the unit of ``ClusterSnapshot.timestamp`` is not known,
docs/protocol.md §4.13: it stays an int).
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import re
import types
import typing
import zoneinfo
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import msgspec

from ._deps import require
from .errors import InvalidArgumentError
from .protocol.market import Bar
from .protocol.timeutil import MSK_NAME, parse_iso


if TYPE_CHECKING:
    import pandas as pd
    import polars as pl


__all__ = ["Bars", "Rows", "time_fields"]

M = TypeVar("M", bound=msgspec.Struct)
TimeUnit = Literal["s", "ms", "ns", "iso"]
Kind = Literal["time", "float", "decimal", "int", "bool", "str", "object"]

#: The time fields of models by field name, and their unit; applied to every model.
_TIMES: Final[dict[str, dict[str, TimeUnit]]] = {
    "Bar": {"time": "s"},
    "Quote": {"last_price_timestamp": "s", "ob_ms_timestamp": "ms"},
    "OrderBook": {"ms_timestamp": "ms"},
    "Trade": {"time": "iso", "timestamp": "ms"},
    "Order": {"trans_time": "iso", "update_time": "iso", "end_time": "iso"},
    "StopOrder": {"trans_time": "iso", "update_time": "iso", "end_time": "iso"},
    "OwnTrade": {"date": "iso"},
    "Risk": {"calculation_time": "iso"},
}


def time_fields(model: type[msgspec.Struct]) -> dict[str, TimeUnit]:
    """The fields of ``model`` that become timestamps, and their unit on the wire."""
    for cls in model.__mro__:
        found = _TIMES.get(cls.__name__)
        if found is not None:
            return dict(found)
    return {}


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """The base type of an annotation (``Annotated`` and ``None`` removed), and whether None
    is allowed."""
    optional = False
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(tp))
            args = [a for a in args if a is not msgspec.UnsetType]
            if len(args) == 1:
                tp = args[0]
                continue
            return tp, True  # a real union: keep the values as they are
        return tp, optional


def _kind(tp: Any) -> Kind:
    if isinstance(tp, type):
        if issubclass(tp, bool):
            return "bool"
        if issubclass(tp, enum.Enum):
            return "str" if issubclass(tp, str) else "object"
        if issubclass(tp, decimal.Decimal):
            return "decimal"
        if issubclass(tp, int):
            return "int"
        if issubclass(tp, float):
            return "float"
        if issubclass(tp, str):
            return "str"
    return "object"


def _columns(model: type[msgspec.Struct]) -> list[tuple[str, Kind, bool, TimeUnit | None]]:
    """``(name, kind, optional, time unit)`` of each field of ``model``."""
    times = time_fields(model)
    out: list[tuple[str, Kind, bool, TimeUnit | None]] = []
    for field in msgspec.structs.fields(model):
        tp, optional = _unwrap(field.type)
        unit = times.get(field.name)
        out.append((field.name, "time" if unit else _kind(tp), optional, unit))
    return out


def _plain(value: Any) -> Any:
    """A str enum member as its text; anything else as it is."""
    return value.value if isinstance(value, enum.Enum) and isinstance(value, str) else value


def _epoch_ns(values: Sequence[Any], unit: TimeUnit) -> list[int | None]:
    """Times as Unix nanoseconds (None stays None)."""
    scale = {"s": 1_000_000_000, "ms": 1_000_000, "ns": 1}.get(unit, 1)
    if unit == "iso":
        out: list[int | None] = []
        for v in values:
            if v is None or v == "":
                out.append(None)
                continue
            t = parse_iso(v)
            delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
            out.append(
                (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
            )
        return out
    return [None if v is None else int(v) * scale for v in values]


class Rows(list[M]):
    """A list of models of one type that converts to a DataFrame.

    It is a plain ``list`` in every other way (indexing, ``len``, ``==`` with a list,
    JSON encoding). ``model`` is the type of the items; it gives the columns, even of an empty
    list.
    """

    model: type[msgspec.Struct]

    def __init__(self, items: Iterable[M] = (), *, model: type[msgspec.Struct]) -> None:
        if not (isinstance(model, type) and issubclass(model, msgspec.Struct)):
            raise InvalidArgumentError("model", f"must be a model class, got {model!r}")
        super().__init__(items)
        self.model = model

    def __reduce__(self) -> Any:  # keeps `model` through pickle and copy
        return (_rebuild, (type(self), list(self), self.model))

    def to_pandas(self, *, tz: str = MSK_NAME) -> pd.DataFrame:
        """The rows as a pandas DataFrame (dtypes in :mod:`alorws.frames`); times in ``tz``
        (default Moscow time, ``"UTC"`` for UTC). Needs ``pip install 'alorws[pandas]'``."""
        return _to_pandas(self, self.model, tz)

    def to_polars(self, *, tz: str = MSK_NAME) -> pl.DataFrame:
        """The rows as a polars DataFrame (dtypes in :mod:`alorws.frames`); times in ``tz``.
        Needs ``pip install 'alorws[polars]'``."""
        return _to_polars(self, self.model, tz)


def _rebuild(cls: type[Rows[Any]], items: list[Any], model: type[msgspec.Struct]) -> Rows[Any]:
    if cls is Bars:
        return Bars(items)
    return cls(items, model=model)


class Bars(Rows[Bar]):
    """Candles, oldest first (what ``HttpClient.history`` returns): a ``list[Bar]`` with
    :meth:`to_pandas` / :meth:`to_polars` (columns ``time``, ``open``, ``high``, ``low``,
    ``close``, ``volume``: a Moscow-time timestamp, four ``float64``, an ``int64``)."""

    def __init__(self, items: Iterable[Bar] = ()) -> None:
        super().__init__(items, model=Bar)


#: Extra columns put before a model's fields: name -> (values, time unit or None).
_Lead = dict[str, tuple[Sequence[Any], TimeUnit | None]]


def _specs(
    rows: Sequence[Any], model: type[msgspec.Struct], lead: _Lead | None
) -> list[tuple[str, Kind, bool, TimeUnit | None, Sequence[Any]]]:
    """``(name, kind, optional, time unit, values)`` of each column: ``lead``'s, then the
    fields of ``model`` read from ``rows`` (what both DataFrame builders convert)."""
    specs: list[tuple[str, Kind, bool, TimeUnit | None, Sequence[Any]]] = []
    for name, (values, unit) in (lead or {}).items():
        specs.append((name, "time" if unit else "object", False, unit, values))
    for row in rows:
        if not isinstance(row, model):  # one wrong item would fail deep in a column
            raise InvalidArgumentError(
                "rows", f"holds a {type(row).__name__} among rows of {model.__name__}"
            )
    for name, kind, optional, unit in _columns(model):
        specs.append((name, kind, optional, unit, [getattr(r, name) for r in rows]))
    return specs


#: A fixed UTC offset, which pandas and polars both take as a time zone.
_OFFSET: Final = re.compile(r"[+-]\d{2}:\d{2}")


def _zone(tz: object) -> str:
    """``tz`` if both DataFrame libraries take it: an IANA name, ``UTC``, or ``+03:00``."""
    if isinstance(tz, str) and (tz.upper() == "UTC" or _OFFSET.fullmatch(tz)):
        return tz
    if isinstance(tz, str) and tz.strip():
        try:
            zoneinfo.ZoneInfo(tz)
            return tz
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidArgumentError(
        "tz",
        f"{tz!r} is not a time zone; use an IANA name such as 'Europe/Moscow' or 'UTC', or an "
        "offset such as '+03:00'",
    )


def _to_pandas(
    rows: Sequence[Any],
    model: type[msgspec.Struct],
    tz: str,
    lead: _Lead | None = None,
) -> pd.DataFrame:
    """``rows`` of ``model`` as a pandas DataFrame; ``lead`` adds columns before the fields."""
    tz = _zone(tz)
    pandas: Any = require("pandas", "DataFrames (to_pandas)")
    data: dict[str, Any] = {}
    for name, kind, optional, unit, values in _specs(rows, model, lead):
        if kind == "time":
            assert unit is not None
            # int64 nanoseconds viewed as datetime64[ns]: exact, and INT64_MIN is NaT.
            numpy: Any = require("numpy", "DataFrames (to_pandas)")
            nat = numpy.iinfo(numpy.int64).min
            ns = numpy.array(
                [nat if v is None else v for v in _epoch_ns(values, unit)], dtype=numpy.int64
            )
            index = pandas.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
            data[name] = pandas.Series(index.tz_convert(tz))
        elif kind == "float":
            data[name] = pandas.Series(
                [float("nan") if v is None else v for v in values], dtype="float64"
            )
        elif kind == "int":
            data[name] = pandas.Series(values, dtype="Int64" if optional else "int64")
        elif kind == "bool":
            data[name] = pandas.Series(values, dtype="boolean" if optional else "bool")
        else:  # str, decimal (exact), object
            column = pandas.Series(len(values) * [None], dtype="object")
            column[:] = [_plain(v) for v in values]
            data[name] = column
    frame = pandas.DataFrame(data)
    return typing.cast("pd.DataFrame", frame)


_POLARS_KINDS: Final = {
    "float": "Float64",
    "int": "Int64",
    "bool": "Boolean",
    "str": "String",
    "decimal": "Decimal",
}


def _to_polars(
    rows: Sequence[Any],
    model: type[msgspec.Struct],
    tz: str,
    lead: _Lead | None = None,
) -> pl.DataFrame:
    """``rows`` of ``model`` as a polars DataFrame; ``lead`` adds columns before the fields."""
    tz = _zone(tz)
    polars: Any = require("polars", "DataFrames (to_polars)")
    columns: list[Any] = []
    for name, kind, _optional, unit, values in _specs(rows, model, lead):
        if kind == "time":
            assert unit is not None
            ns = polars.Series(name, _epoch_ns(values, unit), dtype=polars.Int64)
            columns.append(ns.cast(polars.Datetime("ns", "UTC")).dt.convert_time_zone(tz))
        elif kind in _POLARS_KINDS:
            dtype = getattr(polars, _POLARS_KINDS[kind])
            columns.append(polars.Series(name, [_plain(v) for v in values], dtype=dtype))
        else:
            columns.append(polars.Series(name, list(values), dtype=polars.Object))
    return typing.cast("pl.DataFrame", polars.DataFrame(columns))
