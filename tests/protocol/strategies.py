"""Hypothesis strategies that build any normalized model from its msgspec field types."""

from __future__ import annotations

import enum
import functools
import types
import typing
from typing import Any

import msgspec
from hypothesis import strategies as st

from alorws.protocol._model import Model


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)


def for_type(tp: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of annotation ``tp`` as models use them."""
    if tp is type(None) or tp is None:
        return st.none()
    if tp is msgspec.UnsetType:
        return st.just(msgspec.UNSET)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return INT64
    if tp is float:
        return FLOATS
    if tp is str:
        return TEXT
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and issubclass(tp, Model):
        return models(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:  # a range (msgspec.Meta): draw inside it
        inner, *meta = args
        bounds = next((m for m in meta if isinstance(m, msgspec.Meta)), msgspec.Meta())
        if inner is int:
            return st.integers(min_value=bounds.ge, max_value=bounds.le)
        if inner is float:
            return st.floats(
                min_value=bounds.ge, max_value=bounds.le, allow_nan=False, allow_infinity=False
            )
        return for_type(inner)
    if origin in (types.UnionType, typing.Union):
        return st.one_of(*(for_type(a) for a in args))
    if origin is list:
        return st.lists(for_type(args[0]), max_size=4)
    raise TypeError(f"no strategy for {tp!r}")


@functools.cache
def models(model: type[Model]) -> st.SearchStrategy[Any]:
    """Instances of ``model`` with every field drawn from its declared type."""
    fields = {f.name: for_type(f.type) for f in msgspec.structs.fields(model)}
    return st.fixed_dictionaries(fields).map(lambda kw: model(**kw))
