"""Keep a local order book with ``OrderBookView`` and print the top of the book twice a second.

    python examples/keep_a_book.py                        # SBER on the in-process simulator
    python examples/keep_a_book.py GAZP --depth 5 --seconds 10
    ALOR_REFRESH_TOKEN=... python examples/keep_a_book.py --url http://127.0.0.1:8765

Every book message is the whole top-``depth`` book, so the view is replaced per message; it
adds best bid/ask, spread, mid, depth at a price, cumulative volume and a ``stale`` flag that is
set while the connection is restoring (do not trade on a frozen book).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from _common import connect, parser, run, say
from alorws import OrderBookView


async def main(args: argparse.Namespace) -> None:
    view = OrderBookView()
    async with connect(args) as client, client.order_book(args.symbol, depth=args.depth) as book:
        follower = asyncio.create_task(view.follow(book))
        deadline = time.monotonic() + args.seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.5, left)):
                    await view.wait_update()
            if view.book is None:
                continue
            s = {k: round(v, 6) if isinstance(v, float) else v for k, v in view.snapshot().items()}
            say(
                f"{args.symbol} bid={s['best_bid']} ask={s['best_ask']} spread={s['spread']} "
                f"mid={s['mid']} bid_lots={view.cumulative_volume('buy')} "
                f"ask_lots={view.cumulative_volume('sell')} stale={s['stale']}"
            )
            await asyncio.sleep(max(0.0, min(0.5, deadline - time.monotonic())))  # print rate
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    say(f"book updates: {view.updates}")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("symbol", nargs="?", default="SBER", help="ticker (MOEX)")
    p.add_argument("--depth", type=int, default=10, help="levels a side")
    run(main, p.parse_args())
