"""The ``alorws`` command line (``python -m alorws`` works too)."""

from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``alorws <command> …``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="alorws", description="Toolkit for the ALOR Broker API.")
    parser.add_argument("command", choices=["demo", "sim"], help="what to run")
    if not args or args[0] in {"-h", "--help"}:
        parser.print_help()
        return 0 if args else 2
    ns, rest = parser.parse_known_args(args[:1])
    rest += args[1:]
    if ns.command == "demo":
        from . import _demo

        return _demo.run()
    # `alorws sim …` takes its own flags.
    try:
        app = importlib.import_module("alorws.sim.app")
    except ImportError as exc:  # pragma: no cover - only while the simulator is missing
        print(f"alorws: the simulator is not available ({exc})", file=sys.stderr)
        return 1
    code: int = app.main(rest)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
