"""A real proxy for the client tests: pproxy (HTTP CONNECT and SOCKS5) in a child process on
127.0.0.1, its connection log read line by line."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Callable


#: Runs pproxy's command line on a plain asyncio loop: pproxy installs uvloop when it can and
#: then calls ``asyncio.get_event_loop()``, which uvloop refuses outside a running loop.
_RUN = """
import asyncio, sys
sys.modules["uvloop"] = None
asyncio.set_event_loop(asyncio.new_event_loop())
from pproxy.server import main
sys.exit(main(sys.argv[1:]))
"""

_SERVING = re.compile(r"Serving on \S+ 127\.0\.0\.1:(\d+)")


class ProxyProcess:
    """One pproxy process; ``url`` is where it listens (with ``auth``'s credentials)."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, auth: str | None) -> None:
        self.process = process
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.auth = auth
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def url(self, scheme: str = "http", auth: str | None = "same") -> str:
        """The proxy's URL; ``auth`` ``"same"``: with the credentials it requires."""
        creds = self.auth if auth == "same" else auth
        return f"{scheme}://{creds + '@' if creds else ''}{self.address}"

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())
            self._changed.set()

    def tunnels(self, target: str) -> int:
        """Connections the proxy opened (or was asked to open) to ``target`` (``host:port``)."""
        return sum(1 for line in self.lines if line.endswith(f"-> {target}"))

    def refusals(self) -> int:
        """Connections the proxy refused for their credentials."""
        return sum(1 for line in self.lines if "Unauthorized" in line)

    async def wait_for(self, condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
        """Wait (bounded) until the proxy's log satisfies ``condition``."""
        try:
            async with asyncio.timeout(limit):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"proxy log: not within {limit} s: {what}\n{self.lines}") from None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def run_proxy(
    *, auth: str | None = None, tunnel_to: str | None = None
) -> AsyncIterator[ProxyProcess]:
    """pproxy serving HTTP and SOCKS5 on 127.0.0.1 (a free port), killed on exit.

    ``auth``: ``"user:password"`` it requires (checked on every connection); ``tunnel_to``:
    ``host:port`` every tunnel goes to, whatever host was asked for (so that a test can name a
    host that is not loopback while all traffic stays on 127.0.0.1)."""
    listen = "http+socks5://127.0.0.1:0/" + (f"#{auth}" if auth else "")
    args = ["-l", listen, "-v", "--auth", "0"]
    if tunnel_to is not None:
        args += ["-r", f"tunnel://{tunnel_to}"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        "-c",
        _RUN,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(20):
            while True:
                line = (await process.stdout.readline()).decode("utf-8", "replace")
                if not line:
                    raise AssertionError("pproxy exited before it listened")
                if match := _SERVING.search(line):
                    break
    except BaseException:
        if process.returncode is None:
            process.kill()
        await process.wait()
        raise
    proxy = ProxyProcess(process, int(match.group(1)), auth)
    try:
        yield proxy
    finally:
        await proxy.stop()
