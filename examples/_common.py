"""Shared plumbing of the examples: arguments, a client for the simulator or a real server.

Without ``--url`` (or ``--env``) an example starts the simulator in-process and uses its demo
account. With ``--url URL`` (any compatible server, e.g. ``alorws sim`` running elsewhere) or
``--env prod|dev`` (ALOR itself) the refresh token is found as the client and the CLI find it
(:func:`alorws.client.resolve_refresh_token`: the ``ALOR_REFRESH_TOKEN`` environment variable,
the token file ``~/.config/alorws/refresh_token``, the OS keyring), never on the command line
(argv is visible to other users).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from alorws import AlorClient
from alorws.client import resolve_refresh_token
from alorws.errors import ConfigurationError
from alorws.sim.app import Simulator


def say(*parts: object) -> None:
    """Write one line to stdout (examples print as they go)."""
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--url``, ``--env`` and ``--seconds``."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    token = "token: ALOR_REFRESH_TOKEN, the token file or the keyring"
    where.add_argument("--url", help=f"base URL of a compatible server ({token})")
    where.add_argument("--env", choices=("prod", "dev"), help=f"ALOR itself ({token})")
    p.add_argument("--seconds", type=float, default=5.0, help="run for about this long")
    return p


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace) -> AsyncIterator[AlorClient]:
    """An open client: for the in-process simulator, or as ``--url``/``--env`` say."""
    async with contextlib.AsyncExitStack() as stack:
        if args.url or args.env:
            try:
                token = resolve_refresh_token()
            except ConfigurationError as exc:  # names every place looked at, never a token
                raise SystemExit(str(exc)) from None
            client = AlorClient(token, base_url=args.url, env=args.env or "prod")
        else:
            sim = await stack.enter_async_context(Simulator(port=0, seed=1, rate=50.0))
            say(f"simulator at {sim.url}")
            client = AlorClient(sim.demo_refresh_token, base_url=sim.url)
        yield await stack.enter_async_context(client)


def run(
    main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> None:
    """Run ``main(args)``; Ctrl-C ends it quietly."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))
