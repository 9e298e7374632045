"""``alorws.replay``: replay a recording through the same typed streams as live data.

An alias of :mod:`alorws.record.replay`; see there.
"""

from .record.replay import Replay as Replay, StreamSource as StreamSource


__all__ = ["Replay", "StreamSource"]
