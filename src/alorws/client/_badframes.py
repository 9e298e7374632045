"""Logging bad frames without flooding the log: once per kind, then at most once a minute.

A hostile or broken server can send thousands of bad frames a second. Each one is counted by its
owner (a stream's ``bad_payloads``, a lane's ``bad_frames``, …) and skipped; the log gets the
first frame of each kind (the type of the decode failure) at once, and after that one line per
kind per ``interval`` saying how many were not logged. Every message is scrubbed of anything
token-shaped (:func:`~alorws.errors.scrub`).
"""

from __future__ import annotations

import logging
import time
from typing import Final

from ..errors import FrameError, scrub


__all__ = ["BadFrameLog"]

#: Seconds between two log lines of one kind of bad frame from one source.
INTERVAL: Final = 60.0


class BadFrameLog:
    """Rate-limited warnings about the bad frames of one source (a stream, a connection).

    ``where`` prefixes every line (``"quotes SBER"``, ``"lane 2"``). Not thread-safe: one
    source is read by one thread (its reader or its consumer).
    """

    __slots__ = ("_interval", "_kinds", "_log", "_where", "reported")

    def __init__(self, logger: logging.Logger, where: str, interval: float = INTERVAL) -> None:
        self._log = logger
        self._where = where
        self._interval = interval
        # kind -> [when it was last logged (monotonic), frames of that kind not logged since]
        self._kinds: dict[str, list[float]] = {}
        #: Bad frames reported so far (the owner keeps its own public counter too).
        self.reported = 0

    def frame(self, exc: BaseException, raw: bytes | str | None) -> FrameError:
        """One frame that failed to decode with ``exc``: count and log it (see :meth:`report`)
        and return it as a :class:`~alorws.errors.FrameError` (``exc`` itself if it is one;
        anything else is the frame's fault too, wrapped with ``raw`` for its excerpt)."""
        error = (
            exc
            if isinstance(exc, FrameError)
            else FrameError(f"unreadable frame: {type(exc).__name__}: {exc}", raw)
        )
        self.report(error)
        return error

    def report(self, error: BaseException | str, kind: str | None = None) -> None:
        """One bad frame: log ``error`` now if it is the first of its ``kind`` (default: the
        exception's type name) or the last line of that kind is ``interval`` seconds old."""
        self.reported += 1
        if kind is None:
            kind = type(error).__name__ if isinstance(error, BaseException) else "bad frame"
        now = time.monotonic()
        state = self._kinds.get(kind)
        if state is None:
            self._kinds[kind] = [now, 0]
            self._log.warning(
                "%s: %s [first %s; more of this kind are counted and logged at most once "
                "every %.0f s]",
                self._where,
                scrub(str(error)),
                kind,
                self._interval,
            )
            return
        if now - state[0] < self._interval:
            state[1] += 1
            return
        skipped, since = int(state[1]), now - state[0]
        state[0], state[1] = now, 0
        self._log.warning(
            "%s: %s [%s; %d more not logged in the last %.0f s]",
            self._where,
            scrub(str(error)),
            kind,
            skipped,
            since,
        )
