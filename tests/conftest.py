"""Session-wide fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


#: The test that replays 60 s of the demo (tests/record/test_demo_replay.py).
DEMO_TEST = "test_a_minute_of_the_demo_replays_identically"
DEMO_SECONDS = 60.0


@dataclass
class DemoRun:
    """A demo run in a helper process (tests/record/demo_run.py) and where it writes."""

    process: subprocess.Popen[bytes]
    out: Path
    seconds: float


@pytest.fixture(scope="session", autouse=True)
def private_sim_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Simulators started by tests (`alorws sim`) write their state file into a temporary
    directory, and `--sim` looks there: never the user's own (see alorws.sim.statefile)."""
    path = tmp_path_factory.mktemp("sim-state") / "sim.json"
    old = os.environ.get("ALORWS_SIM_STATE")
    os.environ["ALORWS_SIM_STATE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ALORWS_SIM_STATE", None)
    else:
        os.environ["ALORWS_SIM_STATE"] = old


@pytest.fixture(scope="session", autouse=True)
def demo_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoRun | None]:
    """Start the 60 s demo recording when the session begins, if its test was collected.

    It runs in its own process (another interpreter: it takes no GIL from the tests) while the
    other tests run; the demo's simulator is slow (rate 50), so it needs a few percent of one
    CPU. The test waits for it and compares; at the end of the session it is killed if it is
    still running (e.g. the test was deselected by -x after a failure)."""
    if not any(item.name == DEMO_TEST for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("demo60")
    root = Path(__file__).resolve().parent.parent
    with (out / "stderr.txt").open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.record.demo_run", str(out), str(DEMO_SECONDS)],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        yield DemoRun(process, out, DEMO_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
