"""Where a running ``alorws sim`` says how to reach it, so that ``alorws … --sim`` finds it.

``alorws sim`` writes a small JSON file (``url``, the demo ``refresh_token``, ``portfolios``,
``pid``) when it starts and removes it when it stops. The file is private (mode 0600, in a
0700 directory): the demo refresh token is a credential of that simulator. Its place:

1. ``$ALORWS_SIM_STATE`` when set (a file path);
2. else ``$XDG_RUNTIME_DIR/alorws/sim.json`` (a per-user tmpfs, emptied at logout);
3. else ``~/.cache/alorws/sim.json``.

A file whose ``pid`` is no longer running (a simulator killed with SIGKILL) is ignored.
Nothing here opens a socket: the command line checks that the URL answers before using it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


__all__ = ["STATE_ENV", "default_state_path", "read_state", "remove_state", "write_state"]

#: Overrides the state file's path (tests point it at a temporary directory).
STATE_ENV = "ALORWS_SIM_STATE"


def default_state_path() -> Path:
    """The state file's path (see the module docstring)."""
    given = os.environ.get(STATE_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    base = Path(runtime) if runtime else Path.home() / ".cache"
    return base / "alorws" / "sim.json"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    """The state of a running simulator, or None (no file, unreadable, or its process gone)."""
    path = path or default_state_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    if not isinstance(data.get("refresh_token"), str) or not _alive(data.get("pid")):
        return None
    return data


def write_state(state: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``state`` (readable by this user only) atomically; returns the path."""
    path = path or default_state_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out)
        os.chmod(tmp, 0o600)  # os.open's mode is masked by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_state(path: Path, pid: int) -> None:
    """Remove the file if it still describes process ``pid`` (another simulator may have
    taken it over since)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == pid:
        path.unlink(missing_ok=True)
