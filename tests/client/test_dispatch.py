"""The reader's matching of frames to subscriptions (``TailTable.dispatch``), in Python and C.

Both implementations are held to the same rule, checked against a frame-by-frame reference
built on :meth:`TailTable.match`: a compact data frame of a guid of the table goes to that
guid's sink, consecutive ones in one ``push_many``; anything else goes to ``route``, in order,
and the frames after it are matched against the table as ``route`` left it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from alorws.client import _ws
from alorws.protocol.codec import TailTable


Dispatch = Callable[[TailTable[Any], list[bytes], Callable[[bytes], None]], None]

U1, U2, U3 = (str(uuid.UUID(int=i)) for i in (1, 2, 3))  # 36 characters each
SHORT, OTHER = "g7", "an-odd-guid-of-another-length"
GUIDS = [U1, U2, SHORT, OTHER]


@pytest.fixture(params=["python", "compiled"])
def dispatch(request: pytest.FixtureRequest) -> Dispatch:
    if request.param == "python":
        return TailTable.dispatch
    if not _ws.COMPILED:
        pytest.skip("the compiled reader is not in use (not built, or ALORWS_PURE_PYTHON=1)")
    from alorws.client import _speedups

    return _speedups.dispatch


class Sink:
    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log

    def push_many(self, items: list[bytes]) -> None:
        self.log.append(("push", self.name, list(items)))


def data(guid: str, n: int = 0) -> bytes:
    return b'{"data":{"n":%d,"pad":"%s"},"guid":"%s"}' % (n, b"x" * 150, guid.encode())


class Harness:
    """A table of ``guids``, a log of what reached the sinks and ``route``; ``route`` adds or
    removes a guid when it gets ``{"add":"<guid>"}`` or ``{"pop":"<guid>"}``."""

    def __init__(self, guids: list[str]) -> None:
        self.log: list[Any] = []
        self.sinks = {g: Sink(g, self.log) for g in GUIDS + [U3]}
        self.table: TailTable[Sink] = TailTable()
        for guid in guids:
            self.table[guid] = self.sinks[guid]

    def route(self, frame: bytes) -> None:
        self.log.append(("route", frame))
        if frame.startswith(b'{"add":"'):
            guid = frame[8:-2].decode()
            self.table[guid] = self.sinks[guid]
        elif frame.startswith(b'{"pop":"'):
            self.table.pop(frame[8:-2].decode())

    def reference(self, frames: list[bytes]) -> None:
        """What dispatch does, frame by frame with TailTable.match()."""
        run: list[bytes] = []
        run_sink: Sink | None = None
        for frame in frames:
            sink = self.table.match(frame)
            if sink is not None and sink is run_sink:
                run.append(frame)
                continue
            if run_sink is not None:
                run_sink.push_many(run)
                run_sink = None
            if sink is not None:
                run_sink, run = sink, [frame]
            else:
                self.route(frame)
        if run_sink is not None:
            run_sink.push_many(run)


def _check(dispatch: Dispatch, guids: list[str], frames: list[bytes]) -> list[Any]:
    expected = Harness(guids)
    expected.reference(frames)
    got = Harness(guids)
    given_frames = list(frames)
    dispatch(got.table, given_frames, got.route)
    assert given_frames == frames  # not modified
    assert got.log == expected.log
    return got.log


def test_one_subscription_in_one_push(dispatch: Dispatch) -> None:
    frames = [data(U1, i) for i in range(50)]
    assert _check(dispatch, [U1], frames) == [("push", U1, frames)]


def test_runs_of_subscriptions_in_order(dispatch: Dispatch) -> None:
    a, b = data(U1, 1), data(U2, 2)
    log = _check(dispatch, [U1, U2], [a, a, b, b, b, a])
    assert log == [("push", U1, [a, a]), ("push", U2, [b, b, b]), ("push", U1, [a])]


def test_other_frames_are_routed_between_runs(dispatch: Dispatch) -> None:
    a = data(U1)
    frames = [
        a,
        a.replace(b'{"data":', b'{"data": '),  # whitespace: route() decides
        b'{"guid":"%s","data":{}}' % U1.encode(),  # guid first
        data(U3),  # a guid the table does not hold
        b'{"data":{"x":{"guid":"%s"}}}' % U1.encode(),  # our guid, nested: not the top key
        a[:-1],  # truncated
        b'{"data":{',  # shorter than any tail
        b"",
        a,
    ]
    log = _check(dispatch, [U1], frames)
    assert log[0] == ("push", U1, [a])
    assert [entry[0] for entry in log[1:-1]] == ["route"] * 7
    assert log[-1] == ("push", U1, [a])


def test_guids_of_several_lengths(dispatch: Dispatch) -> None:
    frames = [data(SHORT), data(U1), data(U1), data(OTHER), data(SHORT), data(U2)]
    log = _check(dispatch, [SHORT, U1, OTHER, U2], frames)
    assert [entry[1] for entry in log] == [SHORT, U1, OTHER, SHORT, U2]


def test_route_changes_the_table_for_the_frames_after_it(dispatch: Dispatch) -> None:
    a, b = data(U1), data(U2)
    frames = [a, b'{"pop":"%s"}' % U1.encode(), a, b, b'{"add":"%s"}' % U1.encode(), a]
    log = _check(dispatch, [U1], frames)
    assert log == [
        ("push", U1, [a]),
        ("route", frames[1]),
        ("route", a),  # no longer ours
        ("route", b),  # not yet ours
        ("route", frames[4]),
        ("push", U1, [a]),
    ]


_FRAMES = st.sampled_from(
    [data(g, n) for g in (*GUIDS, U3) for n in (0, 1)]
    + [b'{"add":"%s"}' % g.encode() for g in (*GUIDS, U3)]
    + [b'{"pop":"%s"}' % g.encode() for g in GUIDS]
    + [b'{"guid":"%s","data":{}}' % U1.encode(), b'{"data":{', b"", b"x" * 200]
)


@settings(max_examples=300, deadline=None)
@given(
    guids=st.lists(st.sampled_from(GUIDS), unique=True),
    frames=st.lists(_FRAMES, max_size=40),
)
def test_dispatch_is_the_frame_by_frame_rule(guids: list[str], frames: list[bytes]) -> None:
    for dispatch in _implementations():
        _check(dispatch, guids, frames)


def _implementations() -> list[Dispatch]:
    found: list[Dispatch] = [TailTable.dispatch]
    if _ws.COMPILED:
        from alorws.client import _speedups

        found.append(_speedups.dispatch)
    return found
