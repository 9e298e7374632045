"""A read-only tour of an account that checks every message decodes (``alorws check``).

:func:`run_check` takes a started :class:`~alorws.client.AlorClient` and, within a time budget,

* asks the server's time over HTTP and reads the account's portfolios from the token's claims;
* looks up a share (``SBER`` on MOEX) and a future (the nearest Si future, or one given);
* subscribes, over ``/ws`` in each of Simple, Slim and Heavy: quotes (share and future), order
  books, the tapes of all trades, the share's candles (an hour of history, then live), and the
  positions, summary, orders and stop orders of every portfolio, and listens until the budget
  ends;
* meanwhile calls the HTTP API in each format: reference data, quotes, an order book, a page of
  candles, the tape, and each portfolio's summary, positions, orders and stop orders.

It never places, changes or cancels an order and never opens ``/cws``.

Every frame any ``/ws`` connection receives is decoded again here, from a tap on the client
(:meth:`AlorClient.add_tap`), with the same decoders the streams use, so each stream x format
gets exact counts, and a frame that does not decode is kept with the model, the field and
the :class:`~alorws.errors.FrameError`'s reason. An HTTP answer that does not decode is split
into its items, each decoded on its own, so one bad item is named and the rest still count.
Frames are scrubbed of anything that looks like a token before they are shown or saved.

The :class:`CheckReport` renders as plain text and says how the run went in
:attr:`CheckReport.exit_code`: 0 every message decoded, 1 some did not, 2 the server could
not be reached or refused the token.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from .. import errors
from ..errors import (
    AlorError,
    AuthError,
    FrameError,
    ServerRejected,
    TransportError,
)
from ..protocol._model import Model, format_class, wire_keys
from ..protocol.account import Order, Position, StopOrder, Summary
from ..protocol.codec import DataMessage, decode_frame, frame_decoder_for, frame_guid, route
from ..protocol.enums import Format
from ..protocol.http_models import HistoryPage, Security
from ..protocol.market import Bar, OrderBook, Quote, Trade
from .http import HttpClient


if TYPE_CHECKING:
    from .client import AlorClient
    from .streams import Stream


__all__ = [
    "FORMATS",
    "CheckOptions",
    "CheckReport",
    "Result",
    "Undecodable",
    "describe_error",
    "pick_future",
    "run_check",
    "scrub",
    "split_items",
]

#: The wire formats every stream and call is checked in (docs/protocol.md §3.5).
FORMATS: Final = (Format.SIMPLE, Format.SLIM, Format.HEAVY)

#: Characters of a frame shown in the report (the saved file has all of it).
FRAME_CHARS: Final = 300
#: Kinds of undecodable message (same stream, format, field and reason) listed in the report,
#: and kept for ``--save``, each with its first example; every message is counted.
MAX_SHOWN: Final = 50
MAX_KEPT: Final = 200
#: Characters of a message kept for ``--save`` (a bigger one is cut, and marked ``cut``).
MAX_SAVED_CHARS: Final = 1_000_000
#: HTTP requests in flight at once (ALOR allows about 100 a second per user, docs/protocol.md §7.2).
HTTP_CONCURRENCY: Final = 4

# -- scrubbing ---------------------------------------------------------------------------------

_REDACTED: Final = "<redacted>"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """:func:`alorws.errors.scrub` of ``text``, and every literal of ``secrets`` (e.g. the
    refresh token, which is not token-shaped) replaced by ``<redacted>``."""
    for secret in secrets:
        if len(secret) >= 8:  # a short string would blank out innocent text
            text = text.replace(secret, _REDACTED)
    return errors.scrub(text)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- what a FrameError says ----------------------------------------------------------------------

_AT: Final = re.compile(r" - at `(?P<path>[^`]*)`$")
_MISSING: Final = re.compile(r"missing required field `(?P<key>[^`]+)`")
_TOP_KEY: Final = re.compile(r"^(?:\[\d+\]\.?)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)")


def describe_error(
    reason: str, model: type[Model] | None, fmt: Format, root: str = "$"
) -> tuple[str | None, str, str | None]:
    """Read a :class:`~alorws.errors.FrameError`'s reason: ``(field, detail, wire key)``.

    ``field`` is the wire path below ``root`` (``"$.data"`` for a ``/ws`` frame), followed by
    the model's field name when the top-level wire key differs from it, e.g. ``"lp
    (last_price)"``; None when the reason names no field (unreadable JSON). ``detail`` is the
    reason without its ``bad Model frame (Format):`` head and its path; ``wire key`` is the
    last key of the path, to find it in the frame.
    """
    detail = reason.split("): ", 1)[1] if "): " in reason else reason
    path: str | None = None
    at = _AT.search(detail)
    if at is not None:
        path = at["path"]
        detail = detail[: at.start()]
    missing = _MISSING.search(detail)
    if missing is not None:
        path = f"{path or root}.{missing['key']}"
    if path is None:
        return None, detail, None
    rel = path[len(root) :] if path.startswith(root) else path
    rel = rel.lstrip(".") or "(the whole message)"
    keys = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rel)
    last = keys[-1] if keys else None
    top = _TOP_KEY.match(rel)
    if top is not None and model is not None:
        try:
            names = {key: name for name, key in wire_keys(model, fmt).items()}
        except (AttributeError, KeyError, ValueError):
            names = {}
        name = names.get(top["key"])
        if name is not None and name != top["key"]:
            rel = f"{rel} ({name})"
    return rel, detail, last


def _excerpt(text: str, key: str | None, start: int = 0, limit: int = FRAME_CHARS) -> str:
    """At most ``limit`` characters of ``text``, around ``"key":`` when it is found."""
    if len(text) <= limit:
        return text
    at = text.find(f'"{key}":', start) if key else -1
    if at < 0:
        return text[:limit] + "..."
    lo = max(0, min(at - limit // 3, len(text) - limit))
    hi = min(len(text), lo + limit)
    return ("..." if lo else "") + text[lo:hi] + ("..." if hi < len(text) else "")


# -- HTTP answers, item by item ---------------------------------------------------------------

_RAW_LIST: Final = msgspec.json.Decoder(list[msgspec.Raw])


def split_items(
    body: bytes, model: type[Model], fmt: Format
) -> tuple[int, list[tuple[FrameError, bytes]]] | None:
    """Decode a JSON list answer item by item: ``(decoded, [(error, item), ...])``.

    None if ``body`` is not a JSON list (then only the whole answer can be blamed).
    """
    try:
        items = _RAW_LIST.decode(body)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    decoder = msgspec.json.Decoder(format_class(model, fmt))
    ok = 0
    bad: list[tuple[FrameError, bytes]] = []
    for item in items:
        raw = bytes(item)
        try:
            decoder.decode(raw)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            bad.append((FrameError(f"bad {model.__name__} answer ({fmt.value}): {exc}", raw), raw))
        else:
            ok += 1
    return ok, bad


#: The bodies the HTTP client decoded in the current task (see :class:`_RawHttp`).
_BODIES: contextvars.ContextVar[list[bytes] | None] = contextvars.ContextVar(
    "alorws_check_bodies", default=None
)


class _RawHttp(HttpClient):
    """The HTTP API as the client has it, keeping each answer's body: an answer that does not
    decode is then shown whole and split into its items (the client raises on the first)."""

    def _decode(self, tp: Any, fmt: Format, payload: bytes, what: str) -> Any:
        bodies = _BODIES.get()
        if bodies is not None:
            bodies.append(payload)
        return super()._decode(tp, fmt, payload, what)


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Undecodable:
    """A message that did not decode, and how many more failed the same way (``count``).

    Attributes:
        where: ``"/ws quotes SBER"`` or ``"HTTP quotes SBER,SiZ6"``.
        format: the wire format it was asked in (``Simple``, ``Slim``, ``Heavy``).
        model: the alorws model it should have decoded into.
        field: the offending wire field (and the model's name for it), None if unreadable.
        reason: what was wrong, from the :class:`~alorws.errors.FrameError`.
        frame: the message, scrubbed of tokens and cut to about ``FRAME_CHARS``.
        raw: the whole message, scrubbed, for ``--save`` (at most ``MAX_SAVED_CHARS``).
        cut: ``raw`` is only the start of a longer message.
        count: messages of the same stream and format that failed the same way.
    """

    where: str
    format: str
    model: str
    field: str | None
    reason: str
    frame: str
    raw: str = dataclasses.field(default="", repr=False)
    cut: bool = False
    count: int = 1


@dataclass
class Result:
    """The outcome of one stream x format (``kind="ws"``) or one HTTP call x format.

    ``decoded``: messages (list items, candles) that decoded; ``undecodable``: those that did
    not; ``error``: why the step failed (refused, no answer in time), None if it did not.
    """

    kind: Literal["ws", "http"]
    name: str
    format: str
    decoded: int = 0
    undecodable: int = 0
    error: str | None = None

    def cell(self) -> str:
        """The table cell: a count, ``N +M bad``, or what went wrong in a word or two."""
        if self.error is not None and not (self.decoded or self.undecodable):
            if self.error.startswith(("no answer", "no confirmation")):
                return "timeout"
            return self.error.split(":", 1)[0][:15]
        text = str(self.decoded)
        if self.undecodable:
            text += f" +{self.undecodable} bad"
        if self.error is not None:
            text += " (failed)"
        return text


@dataclass
class CheckReport:
    """What :func:`run_check` found; :meth:`lines` renders it, :attr:`exit_code` sums it up."""

    target: str
    seconds: float
    server_time: int | None = None
    clock_skew: float | None = None
    portfolios: tuple[str, ...] = ()
    instruments: list[str] = dataclasses.field(default_factory=list)
    results: list[Result] = dataclasses.field(default_factory=list)
    bad: list[Undecodable] = dataclasses.field(default_factory=list)
    bad_total: int = 0
    unrouted: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    fatal: str | None = None
    elapsed: float = 0.0
    secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    @property
    def decoded(self) -> int:
        """Messages that decoded, over every stream and call."""
        return sum(r.decoded for r in self.results)

    @property
    def failed_steps(self) -> list[Result]:
        """Streams and calls that failed for another reason than decoding."""
        return [r for r in self.results if r.error is not None]

    @property
    def exit_code(self) -> int:
        """2: could not connect or authenticate; 1: some message did not decode; else 0."""
        if self.fatal is not None:
            return 2
        return 1 if self.bad_total else 0

    def summary(self) -> str:
        """The one-line verdict."""
        if self.fatal is not None:
            return f"summary: could not check {self.target}: {self.fatal}"
        where = {(r.kind, r.name, r.format) for r in self.results if r.undecodable}
        failed = len(self.failed_steps)
        text = (
            f"summary: {self.decoded:,} messages decoded, {self.bad_total} did not decode "
            f"(in {len(where)} of {len(self.results)} streams and calls)"
        )
        if failed:
            text += f", {failed} steps failed (see above)"
        return text + f"; {self.elapsed:.1f} s"

    def lines(self) -> list[str]:
        """The whole report as plain text lines (scrubbed), the summary last."""
        out: list[str] = []
        rows: dict[tuple[str, str], dict[str, Result]] = {}
        for r in self.results:
            rows.setdefault((r.kind, r.name), {})[r.format] = r
        width = max([len(name) for _, name in rows] + [22]) + 2
        formats = [f.value for f in FORMATS]
        for kind, title in (("ws", "/ws streams"), ("http", "HTTP calls")):
            names = [name for k, name in rows if k == kind]
            if not names:
                continue
            out.append("")
            out.append(f"{title:<{width + 2}}" + "".join(f"{f:<16}" for f in formats).rstrip())
            for name in names:
                cells = rows[kind, name]
                if set(cells) == {""}:  # a call without formats (the server's time)
                    line = cells[""].cell()
                else:
                    line = "".join(f"{cells[f].cell() if f in cells else '-':<16}" for f in formats)
                out.append(f"  {name:<{width}}{line}".rstrip())
        failed = self.failed_steps
        if failed:
            out.append("")
            out.append(f"failed steps ({len(failed)}):")
            for r in failed:
                fmt = f" ({r.format})" if r.format else ""
                what = "/ws" if r.kind == "ws" else "HTTP"
                out.append(
                    f"  {what} {r.name}{fmt}: {_one_line(scrub(r.error or '', self.secrets))}"
                )
        if self.bad_total:
            out.append("")
            out.append(f"undecodable messages ({self.bad_total}):")
            for i, bad in enumerate(self.bad[:MAX_SHOWN], 1):
                fieldname = f" field {bad.field}" if bad.field else ""
                fmt = f" ({bad.format})" if bad.format else ""
                times = f" [x{bad.count}]" if bad.count > 1 else ""
                out.append(f"  {i}. {bad.where}{fmt}: {bad.model}{fieldname}: ")
                out[-1] += _one_line(bad.reason, 300) + times
                out.append(f"     message: {bad.frame}")
            shown = sum(bad.count for bad in self.bad[:MAX_SHOWN])
            if self.bad_total > shown:
                out.append(f"  ... and {self.bad_total - shown} more of other kinds")
        out += [f"note: {note}" for note in self.notes]
        out.append("")
        out.append(self.summary())
        return [scrub(line, self.secrets) for line in out]

    def save(self, directory: Path) -> list[Path]:
        """Write ``report.txt`` and one ``undecodable-NNN.json`` per kept message (scrubbed)
        into ``directory`` (created); returns the paths written."""
        directory.mkdir(parents=True, exist_ok=True)
        written = [directory / "report.txt"]
        head = [f"alorws check of {self.target}", *self.header()]
        if self.instruments:
            head.append(f"instruments: {', '.join(self.instruments)}")
        written[0].write_text("\n".join(head + self.lines()) + "\n", encoding="utf-8")
        for i, bad in enumerate(self.bad, 1):
            path = directory / f"undecodable-{i:03d}.json"
            doc = {
                "where": bad.where,
                "format": bad.format,
                "model": bad.model,
                "field": bad.field,
                "reason": bad.reason,
                "message": bad.raw,
                "cut": bad.cut,
                "count": bad.count,
            }
            path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            written.append(path)
        return written

    def header(self) -> list[str]:
        """The lines known before the streams run: the server's time, the portfolios."""
        out: list[str] = []
        if self.server_time is not None:
            moment = datetime.fromtimestamp(self.server_time, UTC).strftime("%Y-%m-%d %H:%M:%S")
            skew = "" if self.clock_skew is None else f" (this machine: {self.clock_skew:+.0f} s)"
            out.append(f"server time: {moment} UTC{skew}")
        if self.fatal is None:
            out.append(f"portfolios (from the token): {', '.join(self.portfolios) or 'none'}")
        return out


# -- the tour ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckOptions:
    """What :func:`run_check` looks at, and for how long.

    Attributes:
        seconds: the whole tour's budget; live streams are listened to until it ends.
        step_timeout: the most one step (a subscription, an HTTP call) may take.
        symbol: the share looked at (on MOEX).
        future: the future looked at; None: the nearest Si future a search finds.
        exchange: where ``symbol``, ``future`` and the portfolios are.
        formats: the wire formats to check.
        portfolios: the portfolios to check; None: every one in the token's claims.
    """

    seconds: float = 20.0
    step_timeout: float = 10.0
    symbol: str = "SBER"
    future: str | None = None
    exchange: str = "MOEX"
    formats: Sequence[Format] = FORMATS
    portfolios: Sequence[str] | None = None


def pick_future(found: Sequence[Security], now: float | None = None) -> Security | None:
    """The future among ``found`` that expires first without having expired (CFI ``FF…``);
    one whose expiry cannot be read counts as unexpired and comes after those that can."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).date().isoformat()
    futures = [s for s in found if (s.cfi_code or "").upper().startswith("FF")]

    def expiry(s: Security) -> str:
        return (s.cancellation or "")[:10]

    alive = [s for s in futures if not expiry(s) or expiry(s) >= today]
    alive.sort(key=lambda s: (not expiry(s), expiry(s)))
    return alive[0] if alive else None


@dataclass
class _Watched:
    """A subscribed stream and its row."""

    stream: Stream[Any]
    result: Result
    model: type[Model]
    fmt: Format


@dataclass(frozen=True)
class _Call:
    """One HTTP call, made once in each format (``fetch(format)``)."""

    name: str
    model: type[Model]
    many: bool
    fetch: Callable[[Format], Awaitable[Any]]
    count: Callable[[Any], int] | None = None


def _bars(page: HistoryPage) -> int:
    return len(page.bars)


class _Tour:
    """One run of the check (see the module docstring)."""

    def __init__(
        self,
        client: AlorClient,
        options: CheckOptions,
        secrets: Sequence[str],
        progress: Callable[[str], object],
    ) -> None:
        self.client = client
        self.options = options
        self.secrets = tuple(secrets)
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.deadline = self.started + options.seconds
        self.report = CheckReport(
            target=client.endpoints.http, seconds=options.seconds, secrets=self.secrets
        )
        # The client's own token source, TLS settings and proxy: the requests `client.http`
        # makes.
        self.http = client.http_client(_RawHttp, format=Format.SIMPLE, timeout=options.step_timeout)
        # The tap runs in the I/O thread and only appends; deque appends are thread-safe.
        self.frames: collections.deque[tuple[int, list[bytes]]] = collections.deque()
        self.routes: dict[tuple[int, str], _Watched] = {}
        self.watched: list[_Watched] = []
        self.http_semaphore = asyncio.Semaphore(HTTP_CONCURRENCY)
        self.junk: Result | None = None
        self.kinds: dict[tuple[str, Format | None, str | None, str], Undecodable] = {}

    def left(self) -> float:
        """Seconds left of the budget (never negative)."""
        return max(0.0, self.deadline - self.loop.time())

    # -- recording ---------------------------------------------------------------------------

    def _tap(self, recv_ns: int, connection: int, frames: list[bytes]) -> None:
        self.frames.append((connection, frames))

    def _keep(
        self,
        result: Result,
        where: str,
        model: type[Model] | None,
        fmt: Format | None,
        exc: FrameError,
        message: bytes | str,
        root: str,
    ) -> None:
        result.undecodable += 1
        self.report.bad_total += 1
        field_name, detail, key = describe_error(exc.reason, model, fmt or Format.SIMPLE, root)
        kind = (where, fmt, field_name, detail)
        seen = self.kinds.get(kind)
        if seen is not None:
            seen.count += 1
            return
        if len(self.report.bad) >= MAX_KEPT:
            return
        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
        text = scrub(text, self.secrets)
        start = text.find('"data"') if root == "$.data" else 0
        bad = Undecodable(
            where=where,
            format=fmt.value if fmt is not None else "",
            model=model.__name__ if model is not None else "envelope",
            field=field_name,
            reason=scrub(detail, self.secrets),
            frame=_excerpt(text, key, max(start, 0)),
            raw=text[:MAX_SAVED_CHARS],
            cut=len(text) > MAX_SAVED_CHARS,
        )
        self.kinds[kind] = bad
        self.report.bad.append(bad)

    def _drain_frames(self) -> None:
        """Decode every frame the tap queued so far, each against its stream's model."""
        frames = self.frames
        while frames:
            connection, batch = frames.popleft()
            for frame in batch:
                self._one_frame(connection, frame)

    def _one_frame(self, connection: int, frame: bytes) -> None:
        raw_guid = frame_guid(frame)
        if raw_guid is not None:
            guid = raw_guid.decode("utf-8", "replace")
        else:
            try:
                msg = route(frame)
            except FrameError as exc:
                # Junk no stream can take (the client logs and skips it): one row for all.
                if self.junk is None:
                    self.junk = Result("ws", "frames no stream can take", "")
                    self.report.results.append(self.junk)
                where = f"/ws connection {connection}"
                self._keep(self.junk, where, None, None, exc, frame, "$")
                return
            if type(msg) is not DataMessage:
                return  # a status reply
            guid = msg.guid
        watched = self.routes.get((connection, guid))
        if watched is None:
            self.report.unrouted += 1  # in flight after an unsubscribe, or not ours
            return
        try:
            frame_decoder_for(watched.model, watched.fmt).decode(frame)
        except (msgspec.DecodeError, ValueError, RecursionError):
            try:
                decode_frame(frame, watched.model, watched.fmt)
            except FrameError as exc:
                self._keep(watched.result, f"/ws {watched.result.name}", watched.model,
                           watched.fmt, exc, frame, "$.data")  # fmt: skip
                return
        watched.result.decoded += 1

    # -- steps -------------------------------------------------------------------------------

    async def run(self) -> CheckReport:
        try:
            await self._run()
        finally:
            await self.http.aclose()
            self.report.elapsed = self.loop.time() - self.started
        return self.report

    async def _run(self) -> None:
        report = self.report
        options = self.options
        time_row = Result("http", "server time", "")
        report.results.append(time_row)
        try:
            async with asyncio.timeout(options.step_timeout):
                server_time = await self.http.server_time()
        except (AuthError, TransportError, TimeoutError) as exc:
            report.fatal = f"the HTTP API did not answer: {_error_text(exc, self.options)}"
            return
        except (ServerRejected, FrameError) as exc:
            time_row.error = _error_text(exc, options)
        else:
            time_row.decoded = 1
            report.server_time = server_time
            report.clock_skew = time.time() - server_time
        portfolios = tuple(self.client.portfolios)
        if options.portfolios is not None:
            portfolios = tuple(options.portfolios)
        report.portfolios = portfolios
        for line in report.header():
            self.progress(line)
        future = await self._find_instruments()
        self.progress(f"instruments: {', '.join(report.instruments)}")
        remove = await self._add_tap()
        http_task = asyncio.create_task(self._http_calls(future, portfolios))
        try:
            await self._streams(future, portfolios)
        finally:
            drains = [asyncio.create_task(self._consume(w)) for w in self.watched]
            try:
                await self._listen()
            finally:
                for task in drains:
                    task.cancel()
                await asyncio.gather(*drains, return_exceptions=True)
                await self._remove_tap(remove)
                self._drain_frames()
                await self._close_streams()
                await http_task
        if report.unrouted:
            report.notes.append(
                f"{report.unrouted} data frames carried the guid of no stream of their "
                "connection; they were not checked"
            )

    def _lookups(self) -> list[_Call]:
        """Reference data: the share, then the future given or a search for Si futures."""
        http = self.http
        options = self.options
        sym, ex, fut = options.symbol, options.exchange, options.future

        async def share(f: Format) -> Security:
            return await http.security(sym, ex, format=f)

        async def future(f: Format) -> Security:
            return await http.security(fut or "", ex, format=f)

        async def search(f: Format) -> list[Security]:
            return await http.securities("Si", exchange=ex, sector="FORTS", limit=50, format=f)

        calls = [_Call(f"security {sym}", Security, False, share)]
        if fut is not None:
            calls.append(_Call(f"security {fut}", Security, False, future))
        else:
            calls.append(_Call("search Si (FORTS)", Security, True, search))
        return calls

    async def _find_instruments(self) -> str | None:
        """Look the instruments up in the first format; the future is picked from the answer."""
        options = self.options
        fmt = options.formats[0]
        report = self.report
        ex = options.exchange
        share_call, future_call = self._lookups()
        share = await self._call(share_call, fmt)
        board = share.board if isinstance(share, Security) else "not found"
        report.instruments.append(f"{options.symbol} ({ex} {board or '-'})")
        found = await self._call(future_call, fmt)
        if options.future is not None:
            board = found.board if isinstance(found, Security) else "not found"
            report.instruments.append(f"future {options.future} ({ex} {board or '-'})")
            return options.future
        picked = pick_future(found) if isinstance(found, list) else None
        if picked is None:
            report.notes.append("no Si future was found; pass --future CODE to check one")
            return None
        report.instruments.append(f"future {picked.symbol} ({ex} {picked.board or '-'})")
        return picked.symbol

    async def _add_tap(self) -> Callable[[], None]:
        holder: list[Callable[[], None]] = []

        async def add() -> None:  # in the I/O loop: taps every lane opened from now on
            holder.append(self.client.add_tap(self._tap))

        await self.client.call_in_io(add)
        return holder[0]

    async def _remove_tap(self, remove: Callable[[], None]) -> None:
        async def drop() -> None:  # in the I/O loop: the lanes hand over what they hold
            remove()

        try:
            await self.client.call_in_io(drop)
        except AlorError:
            pass  # the client is closed: nothing more will be tapped

    def _stream_plan(self, future: str | None, portfolios: Sequence[str]) -> list[_Watched]:
        client = self.client
        options = self.options
        sym, ex = options.symbol, options.exchange
        since = int(time.time()) - 3600
        plan: list[_Watched] = []
        for fmt in options.formats:
            streams: list[tuple[str, Stream[Any], type[Model]]] = [
                (f"quotes {sym}", client.quotes(sym, exchange=ex, format=fmt), Quote),
                (f"book {sym}", client.order_book(sym, depth=10, exchange=ex, format=fmt),
                 OrderBook),
                (f"trades {sym}", client.all_trades(sym, depth=20, exchange=ex, format=fmt),
                 Trade),
                (f"bars {sym} 60", client.bars(sym, 60, from_=since, exchange=ex, format=fmt),
                 Bar),
            ]  # fmt: skip
            if future is not None:
                streams += [
                    (f"quotes {future}", client.quotes(future, exchange=ex, format=fmt), Quote),
                    (f"book {future}",
                     client.order_book(future, depth=10, exchange=ex, format=fmt), OrderBook),
                    (f"trades {future}",
                     client.all_trades(future, depth=20, exchange=ex, format=fmt), Trade),
                ]  # fmt: skip
            for p in portfolios:
                streams += [
                    (f"positions {p}", client.positions(p, exchange=ex, format=fmt), Position),
                    (f"summary {p}", client.summaries(p, exchange=ex, format=fmt), Summary),
                    (f"orders {p}", client.orders(p, exchange=ex, format=fmt), Order),
                    (f"stop orders {p}", client.stop_orders(p, exchange=ex, format=fmt),
                     StopOrder),
                ]  # fmt: skip
            for name, stream, model in streams:
                plan.append(_Watched(stream, Result("ws", name, fmt.value), model, fmt))
        return plan

    async def _streams(self, future: str | None, portfolios: Sequence[str]) -> None:
        """Subscribe every stream (each bounded by the step timeout)."""
        plan = self._stream_plan(future, portfolios)
        self.report.results.extend(w.result for w in plan)
        self.progress(f"subscribing {len(plan)} streams over /ws ...")
        # The whole step timeout even when the budget is nearly spent: a subscription cut short
        # would read as a server that cannot be reached.
        budget = self.options.step_timeout
        unreachable = 0

        async def one(w: _Watched) -> None:
            nonlocal unreachable
            try:
                async with asyncio.timeout(budget):
                    await w.stream.subscribe()
            except TimeoutError:
                unreachable += 1
                w.result.error = f"no confirmation within {budget:g} s"
                return
            except AlorError as exc:
                if isinstance(exc, AuthError | TransportError):
                    unreachable += 1
                w.result.error = _error_text(exc, self.options)
                return
            guid = w.stream.guid
            info = self.client.describe(guid) if guid is not None else None
            if guid is None or info is None:
                w.result.error = "subscribed, but the client does not know the subscription"
                return
            self.routes[int(info["connection"]), guid] = w
            self.watched.append(w)

        await asyncio.gather(*(one(w) for w in plan))
        if plan and not self.watched and unreachable == len(plan):
            first = plan[0].result.error
            self.report.fatal = f"no /ws subscription was confirmed: {first}"
            return
        self.progress(
            f"listening for {self.left():.1f} s to {len(self.watched)} of {len(plan)} "
            "streams over /ws"
        )

    async def _listen(self) -> None:
        """Decode the tapped frames as they come, until the budget ends."""
        while True:
            self._drain_frames()
            left = self.left()
            if left <= 0 or not self.watched:
                return
            await asyncio.sleep(min(0.25, left))

    async def _consume(self, w: _Watched) -> None:
        """Read the stream as an application would (its own decoding and buffering)."""
        try:
            while True:
                await w.stream.get_batch()
        except asyncio.CancelledError:
            raise
        except AlorError as exc:
            w.result.error = _error_text(exc, self.options)

    async def _close_streams(self) -> None:
        try:
            async with asyncio.timeout(self.options.step_timeout):
                await asyncio.gather(
                    *(w.stream.aclose() for w in self.watched), return_exceptions=True
                )
        except TimeoutError:
            pass  # the client's close ends them anyway

    # -- HTTP --------------------------------------------------------------------------------

    def _http_plan(
        self, future: str | None, portfolios: Sequence[str]
    ) -> list[tuple[_Call, Format]]:
        http = self.http
        options = self.options
        sym, ex = options.symbol, options.exchange
        now = int(time.time())
        tickers = [f"{ex}:{sym}"] + ([f"{ex}:{future}"] if future else [])

        async def quotes(f: Format) -> list[Quote]:
            return await http.quotes(tickers, format=f)

        async def book(f: Format) -> OrderBook:
            return await http.order_book(sym, ex, depth=10, format=f)

        async def history(f: Format) -> HistoryPage:
            # countBack: a quiet hour still returns some candles (docs/protocol.md §8).
            return await http.history_page(
                sym, 60, now - 3600, now, exchange=ex, count_back=20, format=f
            )

        async def tape(f: Format) -> list[Trade]:
            return await http.all_trades(sym, ex, take=20, descending=True, format=f)

        calls = [
            _Call(f"quotes {','.join(t.split(':', 1)[1] for t in tickers)}", Quote, True, quotes),
            _Call(f"order book {sym}", OrderBook, False, book),
            _Call(f"history {sym} 60", HistoryPage, False, history, _bars),
            _Call(f"all trades {sym}", Trade, True, tape),
        ]
        for p in portfolios:
            calls += self._portfolio_calls(p)
        lookups = self._lookups()
        plan = [(call, f) for f in options.formats[1:] for call in lookups]
        return plan + [(call, f) for f in options.formats for call in calls]

    def _portfolio_calls(self, portfolio: str) -> list[_Call]:
        http = self.http
        ex = self.options.exchange

        async def summary(f: Format) -> Summary:
            return await http.summary(portfolio, ex, format=f)

        async def positions(f: Format) -> list[Position]:
            return await http.positions(portfolio, ex, format=f)

        async def orders(f: Format) -> list[Order]:
            return await http.orders(portfolio, ex, format=f)

        async def stop_orders(f: Format) -> list[StopOrder]:
            return await http.stop_orders(portfolio, ex, format=f)

        return [
            _Call(f"summary {portfolio}", Summary, False, summary),
            _Call(f"positions {portfolio}", Position, True, positions),
            _Call(f"orders {portfolio}", Order, True, orders),
            _Call(f"stop orders {portfolio}", StopOrder, True, stop_orders),
        ]

    async def _http_calls(self, future: str | None, portfolios: Sequence[str]) -> None:
        async def one(call: _Call, fmt: Format) -> None:
            async with self.http_semaphore:
                await self._call(call, fmt)

        await asyncio.gather(*(one(c, f) for c, f in self._http_plan(future, portfolios)))

    async def _call(self, call: _Call, fmt: Format) -> Any:
        """Make one HTTP call, record its row; returns its value, or None if it failed."""
        result = Result("http", call.name, fmt.value)
        self.report.results.append(result)
        if self.left() <= 0:
            result.error = "not run: the time was up (raise --seconds)"
            return None
        bodies: list[bytes] = []
        reset = _BODIES.set(bodies)
        try:
            async with asyncio.timeout(self.options.step_timeout):
                value = await call.fetch(fmt)
        except FrameError as exc:
            self._http_undecodable(call, fmt, result, exc, bodies[-1] if bodies else exc.frame)
            return None
        except TimeoutError:
            result.error = f"no answer within {self.options.step_timeout:g} s"
            return None
        except AlorError as exc:
            result.error = _error_text(exc, self.options)
            return None
        finally:
            _BODIES.reset(reset)
        if call.count is not None:
            result.decoded = call.count(value)
        else:
            result.decoded = len(value) if isinstance(value, list) else 1
        return value

    def _http_undecodable(
        self, call: _Call, fmt: Format, result: Result, exc: FrameError, body: bytes | str
    ) -> None:
        where = f"HTTP {call.name}"
        if call.many:
            raw = body if isinstance(body, bytes) else body.encode()
            split = split_items(raw, call.model, fmt)
            if split is not None and split[1]:
                ok, bad = split
                result.decoded = ok
                for item_exc, item in bad:
                    self._keep(result, where, call.model, fmt, item_exc, item, "$")
                return
        self._keep(result, where, call.model, fmt, exc, body, "$")


def _error_text(exc: BaseException, options: CheckOptions) -> str:
    if isinstance(exc, ServerRejected):
        return f"refused: {exc.http_code} {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {options.step_timeout:g} s"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


async def run_check(
    client: AlorClient,
    options: CheckOptions | None = None,
    *,
    secrets: Sequence[str] = (),
    progress: Callable[[str], object] | None = None,
) -> CheckReport:
    """Tour ``client``'s account read-only and report what decoded (see the module docstring).

    Args:
        client: a started client (``async with AlorClient(...)``).
        options: what to look at and for how long (:class:`CheckOptions`).
        secrets: strings to blank out of everything reported (the refresh token).
        progress: called with a line of text as each phase starts.

    Returns the :class:`CheckReport`; it never raises for what the server sends or refuses.
    """
    tour = _Tour(client, options or CheckOptions(), secrets, progress or (lambda line: None))
    return await tour.run()
