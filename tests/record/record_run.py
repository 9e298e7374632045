"""Record a simulator with the writer process, then wait to be killed (a helper for a test).

    python -m tests.record.record_run URL REFRESH_TOKEN ROOT

Connects to the simulator at URL, records its SBER trades under ROOT with
``Recorder(process=True)``, and once rows are on disk prints one line, ``<writer pid> <rows>``,
then waits on stdin until it is killed (or stdin closes).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alorws.client import AlorClient
from alorws.protocol.backoff import Backoff
from alorws.record import Recorder


async def main(url: str, token: str, root: Path) -> None:
    async with AlorClient(token, base_url=url, backoff=Backoff(base=0.01, cap=0.05)) as client:
        recorder = Recorder(client, root, flush_seconds=0.05, poll=0.01)
        await recorder.start()
        async with client.all_trades("SBER") as trades:
            while recorder.stats()["rows"] < 20:
                await trades.get()
            sys.stdout.write(f"{recorder.pid} {recorder.stats()['rows']}\n")
            sys.stdout.flush()
            await asyncio.to_thread(sys.stdin.read)  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
