"""Download candles over HTTP into a list of dicts, ready for ``pandas.DataFrame(rows)``.

    python examples/history.py                            # SBER, 1-minute bars, last 6 hours
    python examples/history.py GAZP --tf 300 --hours 24
    ALOR_REFRESH_TOKEN=... python examples/history.py --url http://127.0.0.1:8765

``client.http.history`` follows the server's paging (``prev``/``next``) and returns every bar of
the range exactly once, oldest first; ``client.http.iter_history`` yields it page by page.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from _common import connect, parser, run, say


async def main(args: argparse.Namespace) -> None:
    now = int(time.time())
    async with connect(args) as client, asyncio.timeout(args.seconds):
        tf: int | str = int(args.tf) if args.tf.isdigit() else args.tf
        bars = await client.http.history(args.symbol, tf, now - int(args.hours * 3600), now)
    rows: list[dict[str, Any]] = [
        {
            "time": datetime.fromtimestamp(b.time, UTC),
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
        }
        for b in bars
    ]
    say(f"{len(rows)} bars of {args.symbol} (tf={args.tf})")
    for i, row in enumerate(rows):
        if i < 3 or i >= len(rows) - 3:
            say(row)
        elif i == 3:
            say("...")
    # import pandas as pd; df = pd.DataFrame(rows).set_index("time")


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("symbol", nargs="?", default="SBER", help="ticker (MOEX)")
    p.add_argument("--tf", default="60", help="timeframe: seconds, or D / W / M / Y")
    p.add_argument("--hours", type=float, default=6.0, help="how far back")
    run(main, p.parse_args())
