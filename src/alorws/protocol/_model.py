"""The machinery behind the normalized models: one Python shape, three wire formats.

Every payload model is a frozen msgspec ``Struct`` with snake_case fields (named after the Heavy
format, docs/protocol.md §3.5). :func:`formats` attaches, for each of Simple/Slim/Heavy, a generated
subclass of the model whose fields are renamed to that format's wire keys. Decoding a frame with
that subclass gives an instance of the model directly: no dict is built and nothing is
post-processed, so ``isinstance(msg, Quote)`` holds and ``msg.last_price`` reads the same whatever
the format.

Encoding (used by the simulator and the recorder) goes the other way with :func:`to_wire`, which
emits only the keys the format really has, plus its deprecated duplicates (e.g. Simple's
``accruedInt``), so the simulator speaks the real shapes.

Ranges are checked while decoding, by msgspec ``Meta`` constraints on the field types below
(they run in C, inside the one decode pass): a value outside its range fails the decode with
the field's wire path, which the codec turns into a :class:`~alorws.errors.FrameError`.

* every ``float`` is finite: JSON has no ``inf``/``nan``, and msgspec refuses a number that
  overflows a double (``1e400``: "Number out of range"), so no bound is needed for that;
* prices and money are signed and otherwise unchecked: MOEX trades some derivatives at
  negative prices (commodity futures since 2020, calendar spreads) and a short position has
  negative quantities;
* what cannot be negative is ``>= 0``: quantities of orders and trades, volumes, open
  interest, lot and face sizes, ids, timestamps;
* lots of orders and trades and numeric ids are 64-bit (``<= 2**63 - 1``: ``long`` on the
  server). Volumes and timestamps are checked for their sign only: each bound costs a few
  nanoseconds per value, and a 20-level book carries 40 volumes.

Where the wire is wider than the model (a numeric id the model keeps as text, one object where
a list is documented) or stricter (``null`` where a message must carry a value), :class:`Wire`
tells :func:`formats` how the decoders read that field, without changing the model's Python
type.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Final, NamedTuple, TypeVar

import msgspec

from .enums import Format


__all__ = [
    "DECIMAL_MAX",
    "INT64_MAX",
    "Count",
    "Int64",
    "Model",
    "Money",
    "Price",
    "Qty",
    "Rate",
    "Size",
    "Time",
    "Volume",
    "Wire",
    "as_list",
    "camel",
    "format_class",
    "formats",
    "id_text",
    "to_wire",
    "wire_keys",
]

#: The largest magnitude of a .NET ``decimal`` (``decimal.MaxValue``, about 7.9e28): the
#: server keeps prices and amounts in ``decimal``, so a price sent to it cannot be larger.
DECIMAL_MAX: Final = 79228162514264337593543950335.0
#: The largest signed 64-bit integer: ids, volumes and timestamps are ``long`` on the server.
INT64_MAX: Final = 2**63 - 1

#: A price: signed (MOEX allows negative prices on some derivatives). Finite as every float.
Price = float
#: An amount of money (values, P&L, margins, commissions, buying power): signed.
Money = float
#: A quantity that may be negative (a short position): signed.
Qty = float
#: A rate, percent or yield (negative yields exist): signed.
Rate = float
#: A quantity, size or step that cannot be negative (pieces of an order, lot size): ``>= 0``.
Size = Annotated[float, msgspec.Meta(ge=0.0)]
#: Lots of an order or a trade, and numeric ids: a whole number in ``0..2**63-1``.
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
#: Volumes (of a book level, a quote, a candle) and open interest: a whole number ``>= 0``.
#: Only the sign is checked: each bound costs a few ns per value (a 20-level book has 40).
Volume = Annotated[int, msgspec.Meta(ge=0)]
#: A Unix timestamp (seconds or milliseconds as the field says): ``>= 0``.
Time = Annotated[int, msgspec.Meta(ge=0)]
#: A raw integer code or count of the server (trading status, risk category): signed 64-bit.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=INT64_MAX)]


class Wire(NamedTuple):
    """How the decoders read one field whose wire shape differs from the model's type.

    Attributes:
        type: the type the decoders accept (``Annotated`` ranges allowed); the model's own
            annotation stays what Python code sees.
            A type without ``None`` refuses ``null`` while an absent key still takes the
            model's default (and :func:`to_wire` leaves the key out when the value is None).
        normalize: turns a decoded value into the model's type (run by the decode classes of
            this model only, so other models pay nothing); ``None``: the value is kept.
    """

    type: Any
    normalize: Callable[[Any], Any] | None = None


def id_text(value: Any) -> Any:
    """A numeric id as its text (ALOR sends some ids as JSON numbers); anything else as is."""
    return str(value) if type(value) is int else value


def as_list(value: Any) -> Any:
    """One object as a one-item list; a list (or None) as is."""
    return [value] if isinstance(value, Model) else value


class Model(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Base of every normalized payload model.

    Instances are immutable and not tracked by the cyclic GC (they hold no cycles), which keeps
    a large backlog of decoded messages cheap: the GC does not re-walk them on every collection.
    """

    # Filled in by ``formats()``: format -> (python field -> wire key), decode class, extras.
    __alor_wire__: ClassVar[dict[Format, dict[str, str]]]
    __alor_decode__: ClassVar[dict[Format, type[Model]]]
    __alor_extras__: ClassVar[dict[Format, dict[str, Callable[[Any], Any]]]]
    __alor_omit_none__: ClassVar[frozenset[str]]


M = TypeVar("M", bound=Model)


def camel(name: str) -> str:
    """``last_price_timestamp`` -> ``lastPriceTimestamp``."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _substitute(tp: Any, fmt: Format) -> Any:
    """Replace every Model inside annotation ``tp`` with its decode class for ``fmt``."""
    if isinstance(tp, type) and issubclass(tp, Model) and "__alor_decode__" in tp.__dict__:
        return tp.__alor_decode__[fmt]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:  # a range on a scalar: keep it
        inner = _substitute(args[0], fmt)
        return tp if inner is args[0] else Annotated[inner, *tp.__metadata__]
    if origin is None or not args:
        return tp
    new_args = tuple(_substitute(a, fmt) for a in args)
    if origin in (types.UnionType, typing.Union):
        return functools.reduce(operator.or_, new_args)
    if origin is list:
        return list[new_args[0]]  # type: ignore[valid-type]
    if origin is dict:
        return dict[new_args[0], new_args[1]]  # type: ignore[valid-type]
    raise TypeError(f"unsupported annotation in a model: {tp!r}")


def formats(
    *,
    simple: Mapping[str, str | None] | None = None,
    slim: Mapping[str, str | None] | None = None,
    heavy: Mapping[str, str | None] | None = None,
    simple_extras: Mapping[str, Callable[[Any], Any]] | None = None,
    omit_none: frozenset[str] = frozenset(),
    wire: Mapping[str, Wire] | None = None,
) -> Callable[[type[M]], type[M]]:
    """Class decorator: declare the wire keys of a model in each format.

    Each mapping lists only the fields whose key differs from the camelCase default; a value of
    ``None`` means the field does not exist in that format (it then decodes to its default).
    ``simple_extras`` adds deprecated keys that Simple still sends, computed from the model.
    ``omit_none`` names fields the server leaves out rather than sending ``null`` (e.g. Slim
    book levels carry ``y`` for bonds only). ``wire`` gives the fields the decoders read
    differently from the model's type (see :class:`Wire`).
    """
    readers = dict(wire or {})

    def decorate(cls: type[M]) -> type[M]:
        infos = msgspec.structs.fields(cls)
        unknown_wire = set(readers) - {f.name for f in infos}
        if unknown_wire:
            raise TypeError(f"{cls.__name__}: wire names unknown fields {unknown_wire}")
        namespace = _normalizer(readers)
        wire: dict[Format, dict[str, str]] = {}
        decode: dict[Format, type[Model]] = {}
        for fmt, overrides in (
            (Format.SIMPLE, simple or {}),
            (Format.SLIM, slim or {}),
            (Format.HEAVY, heavy or {}),
        ):
            unknown = set(overrides) - {f.name for f in infos}
            if unknown:
                raise TypeError(f"{cls.__name__}: {fmt} mapping names unknown fields {unknown}")
            keys: dict[str, str] = {}
            for info in infos:
                key = overrides.get(info.name, camel(info.name))
                if key is None:
                    if info.required:
                        raise TypeError(
                            f"{cls.__name__}.{info.name} is required but absent in {fmt}"
                        )
                    continue
                keys[info.name] = key
            if len(set(keys.values())) != len(keys):
                raise TypeError(f"{cls.__name__}: two fields share a wire key in {fmt}")
            wire[fmt] = keys
            # Absent fields keep a key no payload will carry, so they take their default.
            rename = {info.name: keys.get(info.name, f"~absent~{info.name}") for info in infos}
            fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
            for info in infos:
                how = readers.get(info.name)
                tp = _substitute(info.type if how is None else how.type, fmt)
                if info.required:
                    fields.append((info.name, tp))
                elif info.default_factory is not msgspec.NODEFAULT:
                    fields.append(
                        (info.name, tp, msgspec.field(default_factory=info.default_factory))
                    )
                else:
                    fields.append((info.name, tp, info.default))
            decode[fmt] = msgspec.defstruct(  # type: ignore[assignment]
                f"{cls.__name__}{fmt.value}",
                fields,
                bases=(cls,),
                namespace=namespace,
                rename=rename,
                module=cls.__module__,
                frozen=True,
                gc=False,
                kw_only=True,
            )
        cls.__alor_wire__ = wire
        # A field whose wire type refuses null is left out when it is None, so what
        # to_wire() renders always decodes again.
        cls.__alor_omit_none__ = omit_none | {
            name for name, how in readers.items() if not _accepts_none(how.type)
        }
        cls.__alor_decode__ = decode
        cls.__alor_extras__ = {
            Format.SIMPLE: dict(simple_extras or {}),
            Format.SLIM: {},
            Format.HEAVY: {},
        }
        return cls

    return decorate


def _accepts_none(tp: Any) -> bool:
    if tp is None or tp is type(None):
        return True
    return any(_accepts_none(a) for a in typing.get_args(tp))


def _normalizer(wire: Mapping[str, Wire]) -> dict[str, Any]:
    """The namespace of a decode class: a ``__post_init__`` running the ``normalize`` hooks."""
    steps = tuple((name, how.normalize) for name, how in wire.items() if how.normalize)
    if not steps:
        return {}
    force = msgspec.structs.force_setattr

    def __post_init__(self: Model) -> None:
        for name, normalize in steps:
            value = getattr(self, name)
            new = normalize(value)
            if new is not value:
                force(self, name, new)

    return {"__post_init__": __post_init__}


def format_class(model: type[M], fmt: Format) -> type[M]:
    """The generated subclass of ``model`` that decodes ``fmt`` payloads."""
    return typing.cast("type[M]", model.__alor_decode__[Format(fmt)])


def wire_keys(model: type[Model], fmt: Format) -> dict[str, str]:
    """Python field name -> wire key, for the fields ``model`` has in ``fmt``."""
    return dict(model.__alor_wire__[Format(fmt)])


def _wire_value(value: Any, fmt: Format) -> Any:
    if isinstance(value, Model):
        return to_wire(value, fmt)
    if isinstance(value, list):
        return [_wire_value(v, fmt) for v in value]
    return value


def to_wire(obj: Model, fmt: Format) -> dict[str, Any]:
    """Render ``obj`` as the JSON object the server sends in ``fmt`` (keys of that format only).

    The result is a plain dict ready for ``msgspec.json.encode``. Fields the format lacks are
    left out; deprecated duplicates the format still carries are added.
    """
    fmt = Format(fmt)
    cls = type(obj)
    out: dict[str, Any] = {}
    omit_none = cls.__alor_omit_none__
    for name, key in cls.__alor_wire__[fmt].items():
        value = getattr(obj, name)
        if value is msgspec.UNSET or (value is None and name in omit_none):
            continue  # absent from a partial update, or a key sent only when it has a value
        out[key] = _wire_value(value, fmt)
    for key, compute in cls.__alor_extras__[fmt].items():
        out[key] = compute(obj)
    return out
