"""A gateway in a subprocess (``python -m alorws gateway``), for tests that kill or outlive it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from pathlib import Path


_ROLE_LINE = re.compile(r"^node: (?P<node>\S+) \((?P<role>\w+)\)")


class GatewayProcess:
    """``alorws gateway --nats URL --url SIM --token-file F ...`` with its output (stdout and
    stderr) read line by line in the background."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._role: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls, nats_url: str, sim_url: str, token_file: Path, *args: str
    ) -> GatewayProcess:
        """Start it; ``args`` are more options of the command."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "alorws", "gateway", "--nats", nats_url, "--url", sim_url,
            "--token-file", str(token_file), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            found = _ROLE_LINE.match(line)
            if found and not self._role.done():
                self._role.set_result(found["role"])
        if not self._role.done():
            self._role.set_exception(
                AssertionError(f"the gateway exited before serving:\n{self.output()}")
            )

    async def started(self, seconds: float) -> str:
        """The role it started in (``leader`` or ``standby``), once it says so."""
        try:
            async with asyncio.timeout(seconds):
                return await asyncio.shield(self._role)
        except TimeoutError:
            raise AssertionError(f"the gateway did not start:\n{self.output()}") from None

    def output(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.lines)

    async def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def aclose(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after a bound) and its reader."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10.0):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        async with asyncio.timeout(5.0):
            with contextlib.suppress(Exception):
                await self._reader
