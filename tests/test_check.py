"""``alorws check``: the read-only tour that checks every message decodes.

The command runs as users run it (``python -m alorws check --url …`` in a subprocess) against
a simulator on 127.0.0.1, found by its URL alone; a bad frame is injected into one stream
through the simulator's fault injection. The helpers it is built from are tested directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from alorws.client.check import (
    FRAME_CHARS,
    CheckReport,
    Result,
    _excerpt,
    describe_error,
    pick_future,
    scrub,
    split_items,
)
from alorws.errors import FrameError
from alorws.protocol._model import wire_keys
from alorws.protocol.account import Position
from alorws.protocol.codec import decode_frame
from alorws.protocol.enums import Format
from alorws.protocol.http_models import Security
from alorws.protocol.market import Quote
from alorws.sim.app import Simulator

from ._fixtures import cases
from ._sim import DAY


TOKEN_ENV = "ALOR_REFRESH_TOKEN"
#: Looks like a JWT: the check must never show it.
FAKE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLXNlY3JldA"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(
        port=0, admin=True, seed=5, rate=50.0, history_days=2, day_order_lifetime=DAY
    ) as sim:
        yield sim


Run = tuple[int, str, str]


async def run_check(
    args: list[str],
    token: str | None,
    when_listening: Callable[[], object] | None = None,
) -> Run:
    """Run ``python -m alorws check ARGS`` with ``token`` in the environment; call
    ``when_listening()`` once it says it listens to its streams. Returns (code, out, err)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "alorws", "check", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    head: list[bytes] = []
    try:
        async with asyncio.timeout(45):
            if when_listening is not None:
                while line := await proc.stdout.readline():
                    head.append(line)
                    if line.startswith(b"listening"):
                        when_listening()
                        break
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, (b"".join(head) + out).decode(), err.decode()


def rows(out: str, title: str) -> dict[str, list[str]]:
    """The table under ``title`` in the report: name -> its cells (Simple, Slim, Heavy)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header = lines[start]
    edges = [header.index(f) for f in ("Simple", "Slim", "Heavy")] + [None]
    table: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        name = line[: edges[0]].strip()
        table[name] = [line[a:b].strip() for a, b in zip(edges, edges[1:], strict=False)]
    return table


async def test_every_stream_and_call_decodes_against_the_simulator(sim: Simulator) -> None:
    """Against the simulator by URL: every stream and call in every format decodes; exit 0;
    no order is placed; the token is never printed."""
    portfolios = [str(p) for p in sim.demo.portfolios]
    code, out, err = await run_check(["--url", sim.url, "--seconds", "3"], sim.demo_refresh_token)
    assert code == 0, out + err
    assert sim.demo_refresh_token not in out + err
    assert f"portfolios (from the token): {', '.join(portfolios)}" in out
    assert "instruments: SBER (MOEX TQBR), future SiZ6 (MOEX RFUD)" in out
    ws = rows(out, "/ws streams")
    for name in ("quotes SBER", "book SBER", "trades SBER", "bars SBER 60", "quotes SiZ6"):
        assert all(cell.isdigit() and int(cell) > 0 for cell in ws[name]), (name, ws[name])
    for p in portfolios:
        for stream in ("positions", "summary", "orders", "stop orders"):
            assert all(cell.isdigit() for cell in ws[f"{stream} {p}"]), (stream, p, ws)
        assert ws[f"positions {p}"] != ["0", "0", "0"]
    http = rows(out, "HTTP calls")
    for name in ("security SBER", "search Si (FORTS)", "quotes SBER,SiZ6", "order book SBER",
                 "history SBER 60", "all trades SBER", f"summary {portfolios[0]}",
                 f"positions {portfolios[0]}", f"orders {portfolios[0]}",
                 f"stop orders {portfolios[0]}"):  # fmt: skip
        assert all(cell.isdigit() for cell in http[name]), (name, http[name])
    assert http["quotes SBER,SiZ6"] == ["2", "2", "2"]
    assert "undecodable" not in out and "failed steps" not in out
    assert out.rstrip().splitlines()[-1].startswith("summary: ")
    assert " messages decoded, 0 did not decode" in out
    for p in portfolios:  # read-only: nothing was placed
        assert list(sim.engine.orders(p)) == [] and list(sim.engine.stop_orders(p)) == []


async def test_a_bad_frame_in_a_stream_is_reported_and_saved(
    sim: Simulator, tmp_path: Path
) -> None:
    """A Slim quote whose last price is text, sent twice: the report names the stream, format,
    model and field once (x2), shows the frame without the token in it, saves it with --save,
    and exits 1."""
    slim = wire_keys(Quote, Format.SLIM)
    injected: list[str] = []

    def inject() -> None:
        subs = [(guid, sub) for conn in sim.server.hub.connections.values()
                for guid, sub in conn.subs.items()]  # fmt: skip
        guid = next(g for g, s in subs if s.key == ("quote", "SBER") and s.fmt is Format.SLIM)
        data = {slim["symbol"]: "SBER", slim["description"]: FAKE_JWT, slim["last_price"]: "abc"}
        frame = json.dumps({"data": data, "guid": guid}, separators=(",", ":"))
        with pytest.raises(FrameError):  # what the check must report
            decode_frame(frame, Quote, Format.SLIM)
        for _ in range(2):
            assert sim.faults.inject(frame, kind="ws") >= 1
        injected.append(frame)

    save = tmp_path / "saved"
    code, out, err = await run_check(
        ["--url", sim.url, "--seconds", "4", "--save", str(save)],
        sim.demo_refresh_token,
        inject,
    )
    assert injected
    assert code == 1, out + err
    field = f"{slim['last_price']} (last_price)"
    assert f"1. /ws quotes SBER (Slim): Quote field {field}: Expected `float | null`" in out
    assert "got `str` [x2]" in out and "2. " not in out
    assert "2 did not decode (in 1 of" in out
    assert FAKE_JWT not in out + err and "<token>" in out
    assert sim.demo_refresh_token not in out + err
    assert rows(out, "/ws streams")["quotes SBER"][1].endswith("+2 bad")
    saved = json.loads((save / "undecodable-001.json").read_text(encoding="utf-8"))
    assert saved["where"] == "/ws quotes SBER" and saved["format"] == "Slim"
    assert saved["model"] == "Quote" and saved["field"] == field and saved["count"] == 2
    assert '"abc"' in saved["message"] and FAKE_JWT not in saved["message"]
    assert not (save / "undecodable-002.json").exists()
    report = (save / "report.txt").read_text(encoding="utf-8")
    assert "undecodable messages (2)" in report and FAKE_JWT not in report


async def test_a_refused_token_exits_2_without_showing_it(sim: Simulator) -> None:
    """A refresh token the server refuses: exit 2, one clear message, the token nowhere."""
    token = "not-a-real-refresh-token-0123456789"
    code, out, err = await run_check(["--url", sim.url, "--seconds", "2"], token)
    assert code == 2
    assert "alorws: check: could not connect or authenticate to" in err
    assert "refresh token was refused" in err and "hint: " in err
    assert token not in out + err and "Traceback" not in err
    assert "summary:" not in out


async def test_no_server_exits_2() -> None:
    """Nothing listens at the URL: exit 2 once the step timeout ends, naming the token URL."""
    with socket.socket() as sock:  # a loopback port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, out, err = await run_check(
        ["--url", url, "--seconds", "2", "--step-timeout", "0.5"], "some-refresh-token"
    )
    assert code == 2
    assert f"could not connect or authenticate to {url}: no access token from {url}/refresh" in err
    assert "some-refresh-token" not in out + err


async def test_no_token_exits_2() -> None:
    """No token at all: exit 2 with the hint, before anything is sent."""
    code, out, err = await run_check(["--env", "dev", "--seconds", "2"], None)
    assert code == 2
    assert "could not connect or authenticate to ALOR dev: no refresh token" in err
    assert f"set {TOKEN_ENV}" in err


# -- the helpers ---------------------------------------------------------------------------------


def test_scrub_blanks_every_kind_of_token() -> None:
    """JWTs, bearer values, token-named JSON keys and given secrets are replaced."""
    secret = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc"
    text = (
        f'{{"token":"abc\\"def","AccessToken":"{FAKE_JWT}","x":"Bearer qwerty.123",'
        f'"refresh":"{secret}","price":310.5}}'
    )
    clean = scrub(text, [secret])
    assert FAKE_JWT not in clean and secret not in clean
    assert "qwerty" not in clean and "abc" not in clean
    assert '"price":310.5' in clean
    assert clean.count("<redacted>") == 4


def test_long_frames_are_cut_around_the_bad_field() -> None:
    """The report shows about FRAME_CHARS characters, including the offending key."""
    keys = ",".join(f'"k{i}":{i}' for i in range(300))
    frame = f'{{"data":{{{keys},"bad":"x",{keys}}},"guid":"g"}}'
    shown = _excerpt(frame, "bad", frame.index('"data"'))
    assert '"bad":"x"' in shown and len(shown) <= FRAME_CHARS + 6
    assert shown.startswith("...") and shown.endswith("...")
    assert _excerpt(frame, None) == frame[:FRAME_CHARS] + "..."
    assert _excerpt('{"data":{}}', "bad") == '{"data":{}}'


def test_describe_error_names_the_field() -> None:
    """The wire path below the root, with the model's name for its top key."""
    slim = wire_keys(Quote, Format.SLIM)
    frame = json.dumps({"data": {slim["symbol"]: "SBER", slim["volume"]: -5}, "guid": "g"})
    with pytest.raises(FrameError) as info:
        decode_frame(frame, Quote, Format.SLIM)
    field, detail, key = describe_error(info.value.reason, Quote, Format.SLIM, "$.data")
    assert field == f"{slim['volume']} (volume)"
    assert detail == "Expected `int` >= 0" and key == slim["volume"]

    with pytest.raises(FrameError) as info:
        decode_frame('{"data":{"x":1},"guid":"g"}', Quote, Format.SIMPLE)
    field, detail, _ = describe_error(info.value.reason, Quote, Format.SIMPLE, "$.data")
    assert field == "symbol" and "missing required field" in detail

    with pytest.raises(FrameError) as info:
        decode_frame("garbage{", Quote, Format.SIMPLE)
    field, detail, key = describe_error(info.value.reason, Quote, Format.SIMPLE, "$.data")
    assert field is None and key is None and detail.startswith("JSON is malformed")


def test_split_items_blames_the_bad_item_only() -> None:
    """A list answer with one bad item: the others count, the bad one is named."""
    case = next(c for c in cases("http/positions") if c["format"] == "Slim")
    item = case["body"][0]
    key = wire_keys(Position, Format.SLIM)["symbol"]
    body = msgspec.json.encode([item, {**item, key: 12}, item])
    split = split_items(body, Position, Format.SLIM)
    assert split is not None
    ok, bad = split
    assert ok == 2 and len(bad) == 1
    exc, raw = bad[0]
    assert msgspec.json.decode(raw)[key] == 12
    field, _, _ = describe_error(exc.reason, Position, Format.SLIM)
    assert field == f"{key} (symbol)" if key != "symbol" else field == "symbol"
    assert split_items(b'{"not": "a list"}', Position, Format.SLIM) is None


def test_pick_future_takes_the_nearest_unexpired_future() -> None:
    """Futures only (CFI FF…), expired ones skipped, the nearest expiry first."""
    found = [
        Security(symbol="SiH5", cfi_code="FFXCSX", cancellation="2025-03-20T00:00:00"),
        Security(symbol="Si-opt", cfi_code="OCAFPS", cancellation="2025-06-01T00:00:00"),
        Security(symbol="SiU5", cfi_code="FFXCSX", cancellation="2025-09-18T00:00:00"),
        Security(symbol="SiM5", cfi_code="FFXCSX", cancellation="2025-06-19T00:00:00"),
    ]
    may_2025 = 1_746_000_000.0
    picked = pick_future(found, now=may_2025)
    assert picked is not None and picked.symbol == "SiM5"
    assert pick_future(found[:2], now=may_2025) is None


def test_exit_codes() -> None:
    """0 all decoded, 1 some did not, 2 could not connect; failed steps alone keep 0."""
    report = CheckReport(target="t", seconds=1.0)
    report.results.append(Result("http", "summary D1", "Simple", error="refused: 403 no"))
    assert report.exit_code == 0
    assert "failed steps (1):" in report.lines()
    report.bad_total = 1
    assert report.exit_code == 1
    report.fatal = "no answer"
    assert report.exit_code == 2
