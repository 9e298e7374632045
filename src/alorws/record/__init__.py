"""Recording every received frame to Parquet, and replaying a recording as typed streams.

* :class:`Recorder` taps a client's connections and writes Parquet off the reader's path, in a
  writer process by default (:mod:`alorws.record.recorder`, :mod:`alorws.record._writer`);
* :class:`Replay` feeds a recording through the live router and models, as the client's own
  streams (:mod:`alorws.record.replay`); :data:`StreamSource` is what every source (a
  client, a ``BusClient``, a replay) offers a strategy;
* :mod:`alorws.record.format` documents the files (schema, layout, crash journal).

The replay names are loaded on first use (they import the client), so the writer process
(``python -m alorws.record._writer``) starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._deps import require
from ..errors import RecorderError as RecorderError  # its home is alorws.errors


require("pyarrow", "recording and replay")  # a clear error naming the extra, not a bare import

from .format import SCHEMA as SCHEMA, recover as recover  # noqa: E402
from .recorder import Recorder as Recorder  # noqa: E402


if TYPE_CHECKING:
    from .replay import (
        RecordedSubscription as RecordedSubscription,
        Replay as Replay,
        StreamSource as StreamSource,
    )

_REPLAY_NAMES = frozenset({"RecordedSubscription", "Replay", "StreamSource"})


def __getattr__(name: str) -> Any:
    if name in _REPLAY_NAMES:
        from . import replay

        return getattr(replay, name)
    raise AttributeError(f"module 'alorws.record' has no attribute {name!r}")


__all__ = [
    # .format
    "SCHEMA",
    "recover",
    # .recorder
    "Recorder",
    # alorws.errors
    "RecorderError",
    # .replay
    "RecordedSubscription",
    "Replay",
    "StreamSource",
]
