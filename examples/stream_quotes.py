"""Stream quotes of a few instruments and print each one as it comes.

    python examples/stream_quotes.py                      # the in-process simulator
    python examples/stream_quotes.py SBER GAZP --seconds 10
    ALOR_REFRESH_TOKEN=... python examples/stream_quotes.py --url http://127.0.0.1:8765

Each ``client.quotes(...)`` is an async context manager (subscribe / unsubscribe) and an async
iterator of typed :class:`~alorws.protocol.Quote` objects; reconnects are handled inside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from _common import connect, parser, run, say
from alorws import AlorClient


async def follow(client: AlorClient, symbol: str, counts: dict[str, int]) -> None:
    """Print every quote of ``symbol``."""
    async with client.quotes(symbol) as quotes:
        async for q in quotes:
            counts[symbol] += 1
            say(f"{q.symbol:6} last={q.last_price} bid={q.bid} ask={q.ask} volume={q.volume}")


async def main(args: argparse.Namespace) -> None:
    counts = dict.fromkeys(args.symbols, 0)
    async with connect(args) as client:
        tasks = [asyncio.create_task(follow(client, s, counts)) for s in args.symbols]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.seconds):
                await asyncio.gather(*tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    say("quotes received:", ", ".join(f"{s}={n}" for s, n in counts.items()))


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("symbols", nargs="*", default=["SBER", "GAZP"], help="tickers (MOEX)")
    run(main, p.parse_args())
