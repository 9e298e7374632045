"""Place, modify and cancel a limit order, then place a market order and watch its fills.

    python examples/orders.py                             # the simulator's demo portfolio
    ALOR_REFRESH_TOKEN=... python examples/orders.py --url http://127.0.0.1:8765 --portfolio D1

Orders go over one ``/cws`` connection (``client.trading``); each command returns an
``OrderAck`` or raises ``OrderRejected`` with the server's code and message, and is sent
exactly once even if the connection drops. What happens to the orders arrives on the account
streams: ``client.orders(...)`` (every state change) and ``client.own_trades(...)`` (fills).
**Against a real account this places real orders.**
"""

from __future__ import annotations

import argparse
import asyncio

from _common import connect, parser, run, say
from alorws import Order, OrderStatus, OwnTrade, Stream


class Watcher:
    """Prints every order change and every fill, and remembers them."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.fills: list[OwnTrade] = []
        self.changed = asyncio.Event()

    async def follow_orders(self, stream: Stream[Order]) -> None:
        async for o in stream:
            self.orders[o.id] = o
            self.changed.set()
            say(
                f"order {o.id} {o.type} {o.side} {o.status} "
                f"filled {o.filled_qty_batch}/{o.qty_batch} @ {o.price}"
            )

    async def follow_trades(self, stream: Stream[OwnTrade]) -> None:
        async for t in stream:
            self.fills.append(t)
            self.changed.set()
            say(f"fill {t.id} of order {t.order_no}: {t.side} {t.qty_batch} lots @ {t.price}")

    def filled(self, order_id: str) -> int | None:
        """Lots filled if the order is final and all its fills arrived, else None."""
        o = self.orders.get(order_id)
        got = sum(t.qty_batch or 0 for t in self.fills if t.order_no == order_id)
        if o is None or o.status is OrderStatus.WORKING or got != (o.filled_qty_batch or 0):
            return None
        return got


async def main(args: argparse.Namespace) -> None:
    async with connect(args) as client:
        portfolio = args.portfolio or client.portfolios[0]
        symbol, trading = args.symbol, client.trading
        w = Watcher()
        # Subscribe first, so that nothing placed below is missed.
        async with (
            client.orders(portfolio, skip_history=True) as orders,
            client.own_trades(portfolio, skip_history=True) as trades,
        ):
            tasks = [
                asyncio.create_task(w.follow_orders(orders)),
                asyncio.create_task(w.follow_trades(trades)),
            ]
            try:
                async with asyncio.timeout(args.seconds):
                    sec = await client.http.security(symbol)
                    step = sec.min_step or 0.01
                    quote = (await client.http.quotes([f"MOEX:{symbol}"]))[0]
                    assert quote.bid is not None
                    far = round(round(quote.bid * 0.9 / step) * step, 8)  # rests below the bid

                    ack = await trading.place_limit(
                        portfolio, symbol, "buy", 1, far, comment="demo"
                    )
                    say(f"placed limit {ack.order_number} at {far}")
                    ack = await trading.modify_limit(
                        ack.order_number, portfolio, symbol, "buy", 2, round(far - step, 8)
                    )
                    say(f"modified: the new id is {ack.order_number}")
                    await trading.cancel(ack.order_number, portfolio)
                    say(f"cancelled {ack.order_number}")

                    market = await trading.place_market(portfolio, symbol, "buy", args.lots)
                    say(f"placed market {market.order_number} for {args.lots} lots")
                    while (lots := w.filled(market.order_number)) is None:
                        w.changed.clear()
                        await w.changed.wait()
                    status = w.orders[market.order_number].status
                    say(f"market order {market.order_number} {status}: {lots} lots filled")
            except TimeoutError:
                say("timed out")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--portfolio", help="portfolio id (default: the token's first)")
    p.add_argument("--symbol", default="SBER", help="ticker (MOEX)")
    p.add_argument("--lots", type=int, default=2, help="lots of the market order")
    run(main, p.parse_args())
