"""The machinery behind the normalized models: one Python shape, three wire formats.

Every payload model is a frozen msgspec ``Struct`` with snake_case fields (named after the Heavy
format, §3.5). :func:`formats` attaches, for each of Simple/Slim/Heavy, a generated subclass of
the model whose fields are renamed to that format's wire keys. Decoding a frame with that subclass
gives an instance of the model directly: no dict is built and nothing is post-processed, so
``isinstance(msg, Quote)`` holds and ``msg.last_price`` reads the same whatever the format.

Encoding (used by the simulator and the recorder) goes the other way with :func:`to_wire`, which
emits only the keys the format really has, plus its deprecated duplicates (e.g. Simple's
``accruedInt``), so the simulator speaks the real shapes.
"""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from .enums import Format


__all__ = ["Model", "camel", "format_class", "formats", "to_wire", "wire_keys"]


class Model(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """Base of every normalized payload model.

    Instances are immutable and not tracked by the cyclic GC (they hold no cycles), which keeps
    a large backlog of decoded messages cheap (see ``shared/perf-reference.md``).
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
) -> Callable[[type[M]], type[M]]:
    """Class decorator: declare the wire keys of a model in each format.

    Each mapping lists only the fields whose key differs from the camelCase default; a value of
    ``None`` means the field does not exist in that format (it then decodes to its default).
    ``simple_extras`` adds deprecated keys that Simple still sends, computed from the model.
    ``omit_none`` names fields the server leaves out rather than sending ``null`` (e.g. Slim
    book levels carry ``y`` for bonds only).
    """

    def decorate(cls: type[M]) -> type[M]:
        infos = msgspec.structs.fields(cls)
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
                tp = _substitute(info.type, fmt)
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
                rename=rename,
                module=cls.__module__,
                frozen=True,
                gc=False,
                kw_only=True,
            )
        cls.__alor_wire__ = wire
        cls.__alor_omit_none__ = omit_none
        cls.__alor_decode__ = decode
        cls.__alor_extras__ = {
            Format.SIMPLE: dict(simple_extras or {}),
            Format.SLIM: {},
            Format.HEAVY: {},
        }
        return cls

    return decorate


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
