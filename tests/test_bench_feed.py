"""The benches' raw feed (``bench/_feed.py``): its frames are quotes the client accepts, and the
last one of a stream carries the end-of-stream sentinel its consumers wait for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from alorws.protocol import Quote
from alorws.protocol.codec import frame_decoder_for
from alorws.protocol.enums import Format


FEED = Path(__file__).resolve().parents[1] / "bench" / "_feed.py"


def _feed_module() -> ModuleType:
    name = "_alorws_bench_feed"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stamped", [False, True])
def test_the_last_frame_is_a_valid_quote_with_the_sentinel(stamped: bool) -> None:
    """Every frame decodes as a Simple ``Quote`` (a refused one would leave a ``latest``
    consumer waiting for the end forever); only the last carries ``LAST_VOLUME``."""
    feed = _feed_module()
    decoder = frame_decoder_for(Quote, Format.SIMPLE)
    if stamped:
        frames = [feed._StampedQuote("g-1", last=last).frame(123) for last in (False, True)]
        payloads = [f[4:] for f in frames]  # past the 2+2 byte header of a 126..65535 frame
    else:
        payloads = [feed.quote_payload("g-1", last=last) for last in (False, True)]
    plain, last = (decoder.decode(p).data for p in payloads)
    assert last.volume == feed.LAST_VOLUME
    assert plain.volume != feed.LAST_VOLUME
    assert plain.last_price == last.last_price == feed.QUOTE_DATA["last_price"]
    if stamped:
        assert plain.ob_ms_timestamp == last.ob_ms_timestamp == 123
