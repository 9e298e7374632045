"""Recording every received frame to Parquet, and replaying a recording as typed streams.

* :class:`Recorder` taps a client's connections and writes Parquet off the reader's path
  (:mod:`alorws.record.recorder`);
* :class:`Replay` feeds a recording through the live router and models, as the client's own
  streams (:mod:`alorws.record.replay`); :class:`StreamSource` is what both offer a strategy;
* :mod:`alorws.record.format` documents the files (schema, layout, crash journal).
"""

from __future__ import annotations

from .format import SCHEMA as SCHEMA, recover as recover
from .recorder import Recorder as Recorder
from .replay import (
    RecordedSubscription as RecordedSubscription,
    Replay as Replay,
    StreamSource as StreamSource,
)


__all__ = [
    # .format
    "SCHEMA",
    "recover",
    # .recorder
    "Recorder",
    # .replay
    "RecordedSubscription",
    "Replay",
    "StreamSource",
]
