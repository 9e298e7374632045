"""The generated stream reference in docs/ is up to date with the models."""

from __future__ import annotations

import pathlib

from alorws import _docs


DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "streams.md"


def test_streams_page_is_current() -> None:
    """docs/streams.md equals `python -m alorws._docs` (regenerate it after changing a model)."""
    assert DOC.read_text(encoding="utf-8") == _docs.render()


def test_every_stream_has_a_section() -> None:
    """Each of the 13 stream opcodes has its own section with a field table."""
    text = _docs.render()
    assert text.count("\n## ") == 13
    assert text.count("| field | type | Simple | Slim | Heavy |") >= 13
