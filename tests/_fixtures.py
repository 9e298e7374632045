"""The real ALOR message shapes under ``tests/fixtures/alor`` (see its README)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any


ROOT = Path(__file__).parent / "fixtures" / "alor"


@cache
def cases(name: str) -> tuple[dict[str, Any], ...]:
    """The cases of one fixture file, e.g. ``cases("ws/positions")`` or ``cases("requests")``."""
    data = json.loads((ROOT / f"{name}.json").read_text(encoding="utf-8"))
    return tuple(data["cases"])


def names(folder: str) -> list[str]:
    """The fixture files under ``folder`` (``"ws"`` or ``"http"``), as ``cases()`` names."""
    return sorted(f"{folder}/{p.stem}" for p in (ROOT / folder).glob("*.json"))
