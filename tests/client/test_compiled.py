"""The compiled reader (``alorws.client._speedups``): built by the install, used only when it
matches the installed picows, and set aside by ``ALORWS_PURE_PYTHON=1``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import picows
import pytest

from alorws.client import _ws
from alorws.client._ws import BatchListener


FORCED_PURE = os.environ.get("ALORWS_PURE_PYTHON", "") not in ("", "0")


@pytest.mark.skipif(FORCED_PURE, reason="ALORWS_PURE_PYTHON is set")
def test_the_compiled_reader_is_built_and_in_use() -> None:
    """The development install builds it (hatch_build.py): a build that silently failed (no
    compiler, a Cython error) fails here instead of passing as the pure-Python reader."""
    assert _ws.COMPILED, (
        "the compiled reader is not in use: `pip install -v -e .` shows why it was not built"
    )
    from alorws.client import _speedups

    assert _speedups.PICOWS_VERSION == picows.__version__
    assert _ws.COMPILED
    assert _ws.dispatch_frames is _speedups.dispatch
    listener = _ws.BATCH_LISTENER(lambda frames: None, lambda: None)
    assert type(listener) is _speedups.BatchReader
    assert type(listener.listener) is BatchListener


@pytest.mark.skipif(not _ws.COMPILED, reason="the compiled reader is not in use")
def test_the_compiled_listener_cannot_be_overridden_in_python() -> None:
    """It is final: picows' C call of ``on_ws_frame`` runs the compiled method without
    looking for a Python override (and none can exist)."""
    from alorws.client import _speedups

    with pytest.raises(TypeError):
        type("Sub", (_speedups.BatchReader,), {})


def test_alorws_pure_python_forces_the_fallback() -> None:
    code = (
        "import alorws.client._ws as w, alorws.client.lane as lane\n"
        "from alorws.protocol.codec import TailTable\n"
        "assert w.BATCH_LISTENER is w.BatchListener\n"
        "assert lane.dispatch_frames is TailTable.dispatch\n"
        "print(w.COMPILED)\n"
    )
    env = {**os.environ, "ALORWS_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_module_built_against_another_picows_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its C view of picows' structs is only valid for the picows it was built against."""
    if FORCED_PURE or not _ws.COMPILED:
        pytest.skip("the compiled reader is not in use")
    monkeypatch.setattr(picows, "__version__", "0.0.1")
    with caplog.at_level(logging.WARNING, logger="alorws.client"):
        assert _ws._load_speedups() is None
    assert "built against picows" in caplog.text
    assert "0.0.1" in caplog.text
    monkeypatch.undo()
    assert _ws._load_speedups() is not None
