"""``alorws sim``: the simulator's command line (typer, like every other ``alorws`` command).

Only the options live here; what runs them is passed in (:func:`sim_command`), so this module
imports nothing of the server: ``alorws --help`` loads it without aiohttp or the market, and
:mod:`alorws.sim.app` (which serves) builds on it rather than the reverse.
``python -m alorws.sim`` and ``alorws sim`` run the same command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer


__all__ = ["ADMIN_HELP", "run_standalone", "sim_command", "usage_error"]

#: Serves with the parsed options (an object with one attribute per option); returns the
#: exit status.
Runner = Callable[[Any], int]

#: The admin endpoints (``--admin``), for the help and docs/simulator.md.
ADMIN_HELP = """\b
Admin endpoints (with --admin; JSON bodies, every field optional):
  POST /sim/drop            {"code": 1006, "account": LOGIN}  close connections
  POST /sim/stall           {"seconds": 1, "account": LOGIN}  stop sending, keep open
  POST /sim/refuse          {"seconds": 1}   refuse new connections and HTTP (503)
  POST /sim/delay           {"seconds": 0}   delay every reply
  POST /sim/expire-tokens   {}               expire every access token now
  POST /sim/inject          {"frame": "...", "account": LOGIN}  send a raw frame
  POST /sim/restart         {"seconds": 2, "code": 1006}  drop all, refuse for a while
  POST /sim/restart-window  {"seconds", "accept", "linger", "code"}
  POST /sim/daily-restart   {"start": "09:00", "end": "10:00", ...}  (MSK); start null stops
  POST /sim/random-drops    {"every": s, "codes": [...], "account"}; every null stops
  POST /sim/idle-cws        {"seconds": s}   idle /cws goes stale; null turns it off
  POST /sim/silence         {"seconds", "guid", "opcode", "symbol", "account", "connection"}
  POST /sim/unsilence       {}               end every silence
  GET  /sim/ground-truth    every order event the engine produced
  GET  /sim/stats           connections, subscriptions, counters, faults
With an admin token: 'Authorization: Bearer TOKEN' or 'X-Sim-Admin: TOKEN'.
State file: see docs/simulator.md ('alorws ... --sim' connects through it)."""


def sim_command(run: Runner) -> Callable[..., None]:
    """The ``alorws sim`` command (a function for ``typer``) that serves with ``run``."""

    def sim(
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=0, help="0 picks a free port.")] = 8765,
        seed: Annotated[int, typer.Option("--seed", help="Seeds the synthetic market.")] = 1,
        rate: Annotated[float, typer.Option("--rate", help="Market events per second.")] = 20.0,
        account: Annotated[
            list[str] | None,
            typer.Option(
                "--account",
                metavar="LOGIN[:REFRESH_TOKEN[:AGREEMENTS]]",
                help="Add an account (repeatable).",
            ),
        ] = None,
        max_connections: Annotated[
            int, typer.Option("--max-connections", help="Connections per account.")
        ] = 10,
        max_subscriptions: Annotated[
            int, typer.Option("--max-subscriptions", help="Subscriptions per connection.")
        ] = 5000,
        max_unread: Annotated[
            int, typer.Option("--max-unread", help="Unread messages before a connection is cut.")
        ] = 5000,
        token_lifetime: Annotated[
            float, typer.Option("--token-lifetime", help="Access JWT lifetime, seconds.")
        ] = 1800.0,
        http_rate: Annotated[
            int, typer.Option("--http-rate", help="HTTP requests/s per account.")
        ] = 100,
        send_buffer: Annotated[
            int | None,
            typer.Option("--send-buffer", help="Kernel send buffer per connection, bytes."),
        ] = None,
        admin: Annotated[
            bool, typer.Option("--admin", help="Serve the /sim/* fault endpoints (listed below).")
        ] = False,
        admin_token: Annotated[
            str | None,
            typer.Option(
                "--admin-token",
                metavar="TOKEN",
                help="Require it on /sim/*; generated and printed when --admin listens beyond "
                "loopback without one.",
            ),
        ] = None,
        refresh_token: Annotated[
            str | None,
            typer.Option(
                "--refresh-token",
                metavar="TOKEN",
                help="The demo account's refresh token (default: random).",
            ),
        ] = None,
        tls: Annotated[
            bool, typer.Option("--tls", help="https/wss with a self-signed certificate.")
        ] = False,
        drop_every: Annotated[
            float, typer.Option("--drop-every", help="Drop a connection every ~N s (0: never).")
        ] = 0.0,
        drop_codes: Annotated[
            str, typer.Option("--drop-codes", help="Close codes for --drop-every.")
        ] = "1000,1006,1011,1012",
        reply_delay: Annotated[
            float, typer.Option("--reply-delay", help="Delay every reply, seconds.")
        ] = 0.0,
        cws_idle: Annotated[
            float | None,
            typer.Option(
                "--cws-idle",
                metavar="SECONDS",
                help="A /cws connection idle this long goes stale until it authorizes again "
                "(ALOR: about 1800).",
            ),
        ] = None,
        daily_restart: Annotated[
            str | None,
            typer.Option(
                "--daily-restart",
                metavar="HH:MM-HH:MM",
                help="Every day in this window (Moscow time) refuse connections and HTTP with 503 "
                "and drop the open ones.",
            ),
        ] = None,
        restart_accept: Annotated[
            float,
            typer.Option(
                "--restart-accept",
                metavar="SHARE",
                help="Share (0..1) of attempts let through a restart window.",
            ),
        ] = 0.0,
        restart_linger: Annotated[
            float,
            typer.Option(
                "--restart-linger",
                metavar="SECONDS",
                help="Longest life of a connection let through a restart window.",
            ),
        ] = 1.0,
        schedule: Annotated[
            bool,
            typer.Option(
                "--schedule",
                help="Follow the MOEX trading day: orders refused while their market is closed, "
                "tradingStatus following each market's window.",
            ),
        ] = False,
        ground_truth: Annotated[
            str | None,
            typer.Option("--ground-truth", metavar="PATH", help="Append the ground truth (JSONL)."),
        ] = None,
        state_file: Annotated[
            Path | None,
            typer.Option(
                "--state-file",
                metavar="PATH",
                dir_okay=False,
                help="Where to write the url and demo token that --sim reads (default: "
                "$ALORWS_SIM_STATE, else $XDG_RUNTIME_DIR/alorws/sim.json, else "
                "~/.cache/alorws/sim.json).",
            ),
        ] = None,
        no_state_file: Annotated[
            bool, typer.Option("--no-state-file", help="Write no state file.")
        ] = False,
    ) -> None:
        """Run the simulator: a local ALOR-compatible server (HTTP, /ws, /cws, /refresh) with a
        synthetic market, ALOR's limits and injectable faults, until Ctrl-C.

        It prints 'url:', 'refresh_token:' and 'portfolios:' lines, and writes them to its state
        file so that 'alorws COMMAND --sim' uses this simulator.
        """
        options = dict(locals())
        options.pop("run", None)  # the closure's own variable, not an option
        options["account"] = list(account or [])
        raise typer.Exit(run(SimpleNamespace(**options)))

    return sim


def usage_error(exc: Exception, prog: str) -> int:
    """Print a usage error as ``alorws: error: …`` plus the usage line; returns 2."""
    import sys

    format_message = getattr(exc, "format_message", None)
    message = format_message() if callable(format_message) else str(exc)
    ctx = getattr(exc, "ctx", None)
    command_path = getattr(ctx, "command_path", None) or prog
    usage = ctx.get_usage().strip() if ctx is not None else f"Usage: {prog} [OPTIONS]"
    sys.stderr.write(f"alorws: error: {' '.join(message.split())}\n")
    sys.stderr.write(f"{usage.replace('Usage:', 'usage:', 1)}\n")
    sys.stderr.write(f"hint: `{command_path} -h` for help\n")
    sys.stderr.flush()
    return int(getattr(exc, "exit_code", 2) or 2)


def run_standalone(argv: list[str], run: Runner) -> int:
    """``python -m alorws.sim ARGS``: the ``alorws sim`` command on its own, served by ``run``.

    A usage error prints one line and the usage and raises ``SystemExit(2)``."""
    from typer._click.exceptions import ClickException

    app = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.command(epilog=ADMIN_HELP)(sim_command(run))
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="alorws sim", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except ClickException as exc:
        raise SystemExit(usage_error(exc, "alorws sim")) from None
    return result if isinstance(result, int) else 0
