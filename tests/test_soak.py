"""The soak (``bench/soak.py``): a run under chaos loses, repeats and leaks nothing, and its
comparisons with the simulator's ground truth do catch a loss, a repeat and a double execution.

The run itself is marked ``soak`` (about a minute; ``pytest -m "not soak"`` skips it). Its seed
is random unless ``ALORWS_SOAK_SEED`` is set; a failure names it, and
``python bench/soak.py --seconds 60 --seed N`` replays the same fault sequence.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from alorws.sim.app import Simulator

from ._sim import DAY


ROOT = Path(__file__).resolve().parents[1]
SOAK = ROOT / "bench" / "soak.py"
# Long enough for five faults even on a loaded machine, where each hostile-frame injection may
# first wait for the client to settle (at 45 s, a run under a parallel test suite drew four).
SECONDS = 60


def _soak_module() -> ModuleType:
    name = "_alorws_bench_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.soak
@pytest.mark.timeout(SECONDS + 120)
def test_soak_loses_repeats_and_leaks_nothing(tmp_path: Path) -> None:
    """60 s of chaos against the simulator in its own process: PASS, and the invariants it
    prints hold: nothing lost, repeated or executed twice, every subscription restored under its
    guid, every hostile frame counted, no token in the log, RSS and descriptors flat."""
    seed = int(os.environ.get("ALORWS_SOAK_SEED") or random.randrange(1, 1_000_000))
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", str(SECONDS), "--seed", str(seed)]
        + ["--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 100,
    )
    how = f"seed {seed}: python bench/soak.py --seconds {SECONDS} --seed {seed}\n"
    assert proc.returncode == 0, how + proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.stdout.rstrip().endswith("RESULT: PASS"), how + proc.stdout[-3000:]
    r = json.loads(out.read_text())
    s = r["samples"]
    assert r["pass"] and r["failed"] == [], how + str(r["failed"])
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["executed_twice"] == 0
    assert r["restored"] == r["subscriptions"] > 0
    assert r["client_subscriptions"] == r["sim_subscriptions"]
    assert r["bad_counted"] == r["bad_injected"]
    assert r["token_leaks"] == [] and r["unhandled"] == [] and r["sim_errors"] == 0
    assert r["rss_growth_mb"] < 20
    warm, end = s["warmup"]["fd_census"], s["end"]["fd_census"]
    assert abs(end["other"] - warm["other"]) <= 4  # descriptors besides connections
    assert sum(end["to_sim"].values()) <= r["sim_connections"] + 16 + 2  # + HTTP pool
    assert abs(r["fds_after_close"] - s["start"]["fds"]) <= 4
    # The run did what it is for: faults happened, the client came back from them, orders
    # filled, hostile frames went in.
    skipped = r["bad_detail"]["injections_skipped_unsettled"]
    assert sum(r["faults"].values()) >= 5, how + f"{r['faults']}, injections skipped: {skipped}"
    assert r["reconnects"] > 0 and r["restores_seen"] > 0
    assert r["command_results"].get("ack", 0) > 0 and r["trades_at_sim"] > 0
    assert r["events_compared"] > 0
    assert r["bad_injected"] > 0 or r["faults"].get("inject", 0) == 0
    # Every production fault was used, with bodies the simulator took.
    assert all(r["optional_faults"].values()), r["optional_faults"]
    assert all(n > 0 for n in r["production"]["used"].values()), r["production"]
    assert r["admin_failures"] == [], r["admin_failures"]


async def test_the_production_fault_endpoints_are_served() -> None:
    """Every endpoint the chaos driver's production faults need is served by the simulator, and
    takes the bodies the driver sends (a restart window that flaps, a silence by opcode and
    portfolio, the idle /cws fault on and off)."""
    soak = _soak_module()
    async with (
        Simulator(port=0, day_order_lifetime=DAY, history_days=1, rate=5.0, admin=True) as sim,
        aiohttp.ClientSession(base_url=sim.url) as session,
    ):
        admin = soak.Admin(session)
        for kind, (paths, _) in soak.OPTIONAL_FAULTS.items():
            for path in paths:
                assert await admin.has(path), f"{kind}: {path} is not served"
        await admin.post("/sim/idle-cws", {"seconds": 0.5})
        await admin.post("/sim/idle-cws", {"seconds": None})
        body = {"seconds": 0.2, "accept": 0.4, "linger": 0.1, "code": 1012}
        assert (await admin.post("/sim/restart-window", body)) == {"dropped": 0}
        body = {"seconds": 1.0, "opcode": "OrdersGetAndSubscribeV2", "symbol": "D00001"}
        assert (await admin.post("/sim/silence", body)) == {"silenced": 0}
        assert (await admin.post("/sim/unsilence")) == {"restored": 0}
        assert admin.failures == []
        assert sim.stats()["errors"] == 0


# -- the comparisons themselves (no simulator, no sockets) ------------------------------------


def _order(oid: str, status: str, filled: int, comment: str = "") -> dict[str, Any]:
    return {"id": oid, "status": status, "filled_qty_batch": filled, "comment": comment}


TRUTH_ORDERS = [
    _order("1", "working", 0, "p-1"),
    _order("1", "working", 1, "p-1"),
    _order("1", "filled", 2, "p-1"),
    _order("2", "working", 0, "p-2"),
    _order("2", "canceled", 0, "p-2"),
]


def test_orders_compare_accepts_merged_states() -> None:
    """States skipped during an outage (merged into the state at the restore) are no loss."""
    soak = _soak_module()
    got = soak.compare_orders(
        [("1", "working", 0), ("1", "filled", 2), ("2", "canceled", 0)], TRUTH_ORDERS
    )
    assert (got["lost"], got["duplicated"], got["false"], got["phantom"]) == (0, 0, 0, 0)
    assert got["compared"] == 3 and got["orders"] == 2


@pytest.mark.parametrize(
    ("delivered", "counts"),
    [
        # A final state delivered twice, and a rollback after it.
        ([("1", "filled", 2), ("1", "filled", 2), ("2", "canceled", 0)], (0, 1, 0, 0)),
        ([("1", "filled", 2), ("1", "working", 1), ("2", "canceled", 0)], (0, 1, 0, 0)),
        # An order never final, one never delivered.
        ([("1", "working", 1)], (2, 0, 0, 0)),
        # A state the order never had; an order the truth does not know.
        ([("1", "working", 5), ("1", "filled", 2), ("2", "canceled", 0)], (0, 0, 1, 0)),
        ([("1", "filled", 2), ("2", "canceled", 0), ("9", "filled", 1)], (0, 0, 1, 1)),
    ],
)
def test_orders_compare_catches_loss_repeat_and_rollback(
    delivered: list[tuple[str, str, int]], counts: tuple[int, int, int, int]
) -> None:
    soak = _soak_module()
    got = soak.compare_orders(delivered, TRUTH_ORDERS)
    assert (got["lost"], got["duplicated"], got["false"], got["phantom"]) == counts, got


def test_trades_positions_and_double_execution_are_caught() -> None:
    soak = _soak_module()
    trades = [{"id": "a"}, {"id": "b"}]
    got = soak.compare_trades(["a", "a"], trades)
    assert (got["duplicated"], got["lost"], got["phantom"]) == (1, 1, 0)
    assert soak.compare_trades(["b", "a"], trades)["lost"] == 0

    positions = [{"symbol": "SBER", "qty_units": 10.0}, {"symbol": "SBER", "qty_units": 20.0}]
    assert soak.compare_positions({"SBER": 10.0}, 0, positions)["lost"] == 1
    assert soak.compare_positions({"SBER": 20.0}, 2, positions)["duplicated"] == 2
    assert soak.compare_positions({"SBER": 20.0}, 0, positions)["lost"] == 0

    twice = [*TRUTH_ORDERS, _order("3", "filled", 1, "p-2"), _order("4", "filled", 1, "other")]
    assert soak.executed_twice(TRUTH_ORDERS, "p-")[0] == 0
    count, examples = soak.executed_twice(twice, "p-")
    assert count == 1 and "p-2" in examples[0]

    truth = {
        "orders": TRUTH_ORDERS,
        "stop_orders": [],
        "trades": trades,
        "positions": positions,
    }
    orders = {"1": ("filled", 2), "2": ("canceled", 0)}
    assert soak.compare_portfolio(orders, {}, {"a", "b"}, {"SBER": 20.0}, truth) == []
    diff = soak.compare_portfolio(
        {"1": ("working", 1), "2": ("canceled", 0)}, {}, {"a"}, {"SBER": 10.0}, truth
    )
    assert len(diff) == 3


def _passing() -> dict[str, Any]:
    census = {"total": 30, "kinds": {}, "to_sim": {"established": 18}, "other": 12}
    sample = {"rss_mb": 50.0, "fds": 30, "tasks": 20, "io_tasks": 6, "threads": 2}
    return {
        "sim_connections": 3,
        "lost": 0,
        "duplicated": 0,
        "executed_twice": 0,
        "restored": 24,
        "subscriptions": 24,
        "client_subscriptions": 19,
        "sim_subscriptions": 19,
        "bad_counted": 30,
        "bad_injected": 30,
        "token_leaks": [],
        "unhandled": [],
        "sim_errors": 0,
        "rss_growth_mb": 1.0,
        "fds_after_close": 11,
        "settled": True,
        "samples": {
            "start": {**sample, "fds": 11, "fd_census": {**census, "to_sim": {}}},
            "warmup": {**sample, "fd_census": census},
            "end": {**sample, "fd_census": dict(census)},
        },
    }


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"lost": 1}, "lost"),
        ({"duplicated": 2}, "duplicated"),
        ({"executed_twice": 1}, "executed twice"),
        ({"restored": 23}, "restored"),
        ({"sim_subscriptions": 20}, "restored"),
        ({"bad_counted": 29}, "bad frames"),
        ({"token_leaks": ["alorws.lane: the refresh token"]}, "token"),
        ({"rss_growth_mb": 20.0}, "RSS"),
        ({"fds_after_close": 20}, "fds after close"),
        ({"settled": False}, "settle"),
    ],
)
def test_verdict_fails_on_each_invariant(change: dict[str, Any], reason: str) -> None:
    soak = _soak_module()
    assert soak.verdict(_passing()) == []
    failed = soak.verdict({**_passing(), **change})
    assert len(failed) == 1 and reason in failed[0], failed


def test_verdict_fails_on_growing_descriptors_and_tasks() -> None:
    """Idle HTTP keep-alive connections come and go; other descriptors, connections beyond
    the pool and tasks may not grow."""
    soak = _soak_module()
    r = _passing()
    r["samples"]["end"]["fd_census"] = {"to_sim": {"established": 21}, "other": 12}
    assert soak.verdict(r) == []
    r["samples"]["end"]["fd_census"] = {"to_sim": {"established": 20, "close_wait": 2}, "other": 17}
    r["samples"]["end"]["io_tasks"] = 60
    failed = soak.verdict(r)
    assert len(failed) == 3, failed
    assert failed[0].startswith("fds other than connections 12 -> 17")
    assert failed[1].startswith("22 connections to the simulator")
    assert failed[2].startswith("io_tasks 6 -> 60")


def test_log_watch_finds_a_secret() -> None:
    soak = _soak_module()
    watch = soak.LogWatch()
    watch.add_secret("the refresh token", "5e1d2b7f-9c3a-4d4b-8f20-6a7b8c9d0e1f")
    record = logging.LogRecord("alorws.lane", logging.WARNING, __file__, 1, "%s", ("clean",), None)
    watch.emit(record)
    assert watch.leaks == []
    leaky = logging.LogRecord(
        "alorws.lane",
        logging.WARNING,
        __file__,
        1,
        "frame %s",
        ("5e1d2b7f-9c3a-4d4b-8f20-6a7b8c9d0e1f",),
        None,
    )
    watch.emit(leaky)
    assert watch.leaks == ["alorws.lane: the refresh token"]
    assert watch.counts["WARNING alorws.lane"] == 2


def test_hostile_frames_are_refused_by_the_client() -> None:
    """Every envelope-level template fails the client's router (so every connection counts it)."""
    soak = _soak_module()
    rng = random.Random(3)
    for _ in range(5):
        for name, frame in soak.envelope_frames(rng):
            assert soak.is_unreadable(frame), name
    assert not soak.is_unreadable('{"requestGuid":"g","httpCode":200}')
