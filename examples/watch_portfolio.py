"""Keep a portfolio's orders, trades, positions, summary and risks locally with ``Portfolio``.

    python examples/watch_portfolio.py                    # the simulator's demo portfolio
    ALOR_REFRESH_TOKEN=... python examples/watch_portfolio.py --url URL --portfolio D1

``Portfolio`` subscribes to the account streams, takes an HTTP snapshot, merges by id, and takes
a new snapshot after every reconnect, so its state is right after every gap (``stale`` says when
it may not be). On the simulator this example also buys a little, so that something changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from _common import connect, parser, run, say
from alorws import Portfolio


async def main(args: argparse.Namespace) -> None:
    async with connect(args) as client:
        portfolio = args.portfolio or client.portfolios[0]
        async with Portfolio(client, portfolio) as pf:
            say(f"{portfolio}: {len(pf.orders)} orders, {len(pf.trades)} trades")
            for symbol, pos in pf.positions.items():
                say(f"  position {symbol}: {pos.qty_units} units")

            def show(kind: str, obj: Any) -> None:
                if kind == "position":
                    say(f"position {obj.symbol}: {obj.qty_units} units, P/L {obj.unrealised_pl}")
                elif kind == "order":
                    lots = f"{obj.filled_qty_batch}/{obj.qty_batch}"
                    say(f"order {obj.id} {obj.side} {obj.status} {lots}")
                elif kind == "trade":
                    say(f"trade {obj.id}: {obj.side} {obj.qty_batch} @ {obj.price}")

            pf.on_change(show)
            if not (args.url or args.env):  # the simulator: make something happen
                await client.trading.place_market(portfolio, "SBER", "buy", 1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.seconds):
                    while True:
                        await pf.wait_change()
            s = pf.summary
            say(
                f"done: {len(pf.orders)} orders, {len(pf.trades)} trades, "
                f"{len(pf.positions)} positions, buying power "
                f"{s.buying_power if s else None}, stale={pf.stale}"
            )


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--portfolio", help="portfolio id (default: the token's first)")
    run(main, p.parse_args())
