"""``alorws check`` against ALOR's test environment (``pytest -m live``; needs a token).

Deselected by default (``-m "not live"`` in the project's pytest options) and skipped when
``ALOR_REFRESH_TOKEN`` is not set. It runs the read-only tour (it places no order) and fails,
showing the whole report, when ALOR sends a message alorws cannot decode.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


pytestmark = [
    pytest.mark.live,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not os.environ.get("ALOR_REFRESH_TOKEN", "").strip(),
        reason="set ALOR_REFRESH_TOKEN (a refresh token of ALOR's test environment)",
    ),
]


def test_every_message_from_alor_dev_decodes() -> None:
    """The tour on ALOR dev: connects, and every stream and HTTP answer decodes (exit 0)."""
    token = os.environ["ALOR_REFRESH_TOKEN"].strip()
    seconds = os.environ.get("ALORWS_LIVE_SECONDS", "20")
    proc = subprocess.run(
        [sys.executable, "-m", "alorws", "check", "--env", "dev", "--seconds", seconds],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    report = proc.stdout + proc.stderr
    leaked = token in report
    assert not leaked, "the refresh token appeared in the output"
    assert proc.returncode != 2, f"could not connect to ALOR dev:\n{report}"
    assert proc.returncode == 0, f"some messages did not decode:\n{report}"
    assert " did not decode" in proc.stdout
