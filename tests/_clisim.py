"""Simulators for the command-line tests: one in a thread of this process (reached with --url,
faults injected from the test), or an ``alorws sim`` process (reached with --sim through its
state file)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alorws import cli
from alorws.sim.app import Simulator

from ._sim import DAY


#: What an in-process ``alorws`` run gives: the exit status, stdout and stderr.
Run = tuple[int, str, str]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """Run ``alorws ARGS`` in this process (:func:`alorws.cli.main`) and capture its output."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@dataclass
class ThreadSim:
    """A simulator running in a thread; ``call(fn)`` runs ``fn(sim)`` in its loop."""

    sim: Simulator
    loop: asyncio.AbstractEventLoop
    url: str
    token: str
    portfolio: str

    def call(self, fn: Callable[[Simulator], Any]) -> Any:
        async def run() -> Any:
            return fn(self.sim)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)


@contextmanager
def thread_sim(**options: Any) -> Iterator[ThreadSim]:
    """Start a simulator in a thread of its own for the duration of the block."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: list[ThreadSim] = []
    stop: list[asyncio.Event] = []
    options = {"port": 0, "day_order_lifetime": DAY, "seed": 3, "rate": 50.0,
               "history_days": 2, **options}  # fmt: skip

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with Simulator(**options) as sim:
            holder.append(
                ThreadSim(sim, loop, sim.url, sim.demo_refresh_token, sim.demo.portfolios[0])
            )
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(15), "the simulator did not start"
    try:
        yield holder[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(15)
        loop.close()


@dataclass
class ProcessSim:
    """An ``alorws sim`` process and what it printed."""

    process: subprocess.Popen[str]
    lines: dict[str, str]
    state: Path

    @property
    def url(self) -> str:
        return self.lines["url"]


@contextmanager
def process_sim(state: Path, *flags: str) -> Iterator[ProcessSim]:
    """Run ``python -m alorws sim --port 0 --state-file STATE FLAGS`` until the block ends
    (SIGINT, as Ctrl-C)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ALORWS_SIM_STATE": str(state)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alorws", "sim", "--port", "0", "--rate", "50", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        while "state" not in lines:
            line = proc.stdout.readline()  # bounded by the test's timeout
            assert line, f"alorws sim exited early: {proc.stderr.read() if proc.stderr else ''}"
            key, _, value = line.strip().partition(": ")
            lines[key] = value
        yield ProcessSim(proc, lines, state)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
