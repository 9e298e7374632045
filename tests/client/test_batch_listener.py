"""BatchListener without sockets: the messages of one read in one call, in arrival order.

picows flags the last complete frame of each socket read (``last_in_buffer``); the frames here
stand in for its ``WSFrame`` (the pure listener only reads the attributes below; the compiled
reader gets real picows frames made from them), so every case is exact: which frames arrive in
one read, and where a control or short frame falls between them. Every case runs against both
readers: the pure-Python listener and the compiled one (``alorws.client._speedups``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import picows
import pytest
from hypothesis import given, settings, strategies as st

from alorws.client import _ws
from alorws.client._ws import BatchListener


LONG = b'{"data":{"x":"' + b"y" * 150 + b'"},"guid":"g"}'  # over 125 bytes: the hot path


@dataclass
class Frame:
    payload: bytes
    fin: bool = True
    last_in_buffer: bool = False
    msg_type: picows.WSMsgType = picows.WSMsgType.TEXT

    def get_payload_as_bytes(self) -> bytes:
        return self.payload

    def get_close_code(self) -> picows.WSCloseCode:
        return picows.WSCloseCode.OK

    def get_close_reason(self) -> str:
        return ""


class _Socket:
    def fileno(self) -> int:
        return -1


class _Underlying:
    """The asyncio transport under a real picows ``WSTransport``: records, sends nothing."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return _Socket() if name == "socket" else default


class Reader:
    """One implementation under test: makes the listener and feeds it frames."""

    def __init__(self, compiled: bool, transport: Any) -> None:
        self.compiled = compiled
        self.transport = transport
        self._make_frame: Callable[[Frame], Any] = lambda frame: frame
        if compiled:
            from alorws.client import _speedups

            self._make_frame = lambda f: _speedups._test_frame(
                f.msg_type, f.payload, f.fin, f.last_in_buffer
            )

    def listener(self) -> tuple[Any, list[Any]]:
        calls: list[Any] = []
        make = _ws._compiled_batch_listener if self.compiled else BatchListener
        listener = make(
            calls.append,
            lambda: calls.append("disconnected"),
            on_pong=lambda: calls.append("pong"),
            on_close=lambda code, reason: calls.append(("close", code)),
        )
        return listener, calls

    def frame(self, listener: Any, frame: Frame) -> None:
        listener.on_ws_frame(self.transport, self._make_frame(frame))


@pytest.fixture(params=["python", "compiled"])
def reader(request: pytest.FixtureRequest) -> Iterator[Reader]:
    compiled = request.param == "compiled"
    if compiled and not _ws.COMPILED:
        pytest.skip("the compiled reader is not in use (not built, or ALORWS_PURE_PYTHON=1)")
    loop = asyncio.new_event_loop()
    try:
        transport = picows.WSTransport(True, _Underlying(), logging.getLogger("test"), loop)
        yield Reader(compiled, transport)
    finally:
        loop.close()


def _msg(n: int) -> bytes:
    return LONG.replace(b'"x"', b'"x%d"' % n)


def _read(reader: Reader, listener: Any, frames: list[Frame]) -> None:
    """Feed ``frames`` as picows does for one read: the last complete one is flagged."""
    frames[-1].last_in_buffer = True
    for frame in frames:
        reader.frame(listener, frame)


def test_the_messages_of_one_read_come_in_one_call(reader: Reader) -> None:
    listener, calls = reader.listener()
    _read(reader, listener, [Frame(_msg(i)) for i in range(5)])
    _read(reader, listener, [Frame(_msg(5))])
    assert calls == [[_msg(i) for i in range(5)], [_msg(5)]]


def test_other_frames_hand_over_what_came_before_them_first(reader: Reader) -> None:
    listener, calls = reader.listener()
    short = b'{"data":{},"guid":"g"}'
    _read(
        reader,
        listener,
        [
            Frame(_msg(0)),
            Frame(_msg(1)),
            Frame(b"", msg_type=picows.WSMsgType.PONG),
            Frame(_msg(2)),
            Frame(short),  # a short message: the type is checked, then it is handed over alone
            Frame(_msg(3), fin=False),  # a fragmented message, finished by a continuation
            Frame(_msg(4), msg_type=picows.WSMsgType.CONTINUATION),
            Frame(_msg(5)),
        ],
    )
    assert calls == [
        [_msg(0), _msg(1)],
        "pong",
        [_msg(2)],
        [short],
        [_msg(3) + _msg(4)],
        [_msg(5)],
    ]


def test_a_close_frame_and_the_disconnect_flush_first(reader: Reader) -> None:
    listener, calls = reader.listener()
    reader.frame(listener, Frame(_msg(0)))
    reader.frame(listener, Frame(b"\x03\xe8", msg_type=picows.WSMsgType.CLOSE))  # code 1000
    reader.frame(listener, Frame(_msg(1)))
    listener.on_ws_disconnected(reader.transport)
    assert calls == [[_msg(0)], ("close", 1000), [_msg(1)], "disconnected"]
    underlying = reader.transport.underlying_transport
    assert underlying.closed  # the close was answered and the connection closed
    assert underlying.written[0][:1] == b"\x88"  # a close frame


def test_a_detached_listener_hands_over_nothing(reader: Reader) -> None:
    listener, calls = reader.listener()
    reader.frame(listener, Frame(_msg(0)))
    listener.detach()
    _read(reader, listener, [Frame(_msg(1)), Frame(b'{"short":1}')])
    listener.on_ws_disconnected(reader.transport)
    assert calls == []


def test_a_fragmented_message_is_joined_across_reads(reader: Reader) -> None:
    """Fragments (long ones too) are joined, whichever reads they come in, and the messages
    around them keep their order; a long final frame after the join takes the hot path."""
    listener, calls = reader.listener()
    text, cont = picows.WSMsgType.TEXT, picows.WSMsgType.CONTINUATION
    _read(reader, listener, [Frame(_msg(0)), Frame(_msg(1), fin=False)])
    _read(reader, listener, [Frame(_msg(2), fin=False, msg_type=cont)])
    _read(reader, listener, [Frame(b"end", msg_type=cont), Frame(_msg(3)), Frame(_msg(4))])
    _read(reader, listener, [Frame(b"short", msg_type=text), Frame(_msg(5))])
    assert calls == [
        [_msg(0)],
        [_msg(1) + _msg(2) + b"end"],
        [_msg(3), _msg(4)],
        [b"short"],
        [_msg(5)],
    ]


def test_pongs_and_binary_messages(reader: Reader) -> None:
    listener, calls = reader.listener()
    binary = picows.WSMsgType.BINARY
    _read(
        reader,
        listener,
        [
            Frame(b"\x00" * 200, msg_type=binary),
            Frame(b"", msg_type=picows.WSMsgType.PONG),
            Frame(b"\x01", msg_type=binary),
        ],
    )
    assert calls == [[b"\x00" * 200], "pong", [b"\x01"]]


_T = picows.WSMsgType
_FRAMES = st.lists(
    st.builds(
        Frame,
        payload=st.sampled_from([b"", b"ab", _msg(1), _msg(2), b"\x03\xe8"]),
        fin=st.booleans(),
        last_in_buffer=st.booleans(),
        msg_type=st.sampled_from([_T.TEXT, _T.BINARY, _T.CONTINUATION, _T.PONG, _T.PING, _T.CLOSE]),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(frames=_FRAMES, detach_at=st.integers(min_value=0, max_value=40))
def test_both_readers_hand_over_the_same(frames: list[Frame], detach_at: int) -> None:
    """Any sequence of frames (fragments, control frames, short and long messages, reads of
    any length), a detach anywhere, then the disconnect: the compiled reader makes the same
    calls as the pure-Python listener, given the same picows frames."""
    if not _ws.COMPILED:
        pytest.skip("the compiled reader is not in use (not built, or ALORWS_PURE_PYTHON=1)")
    from alorws.client import _speedups

    seen = []
    for compiled in (False, True):
        loop = asyncio.new_event_loop()
        try:
            transport = picows.WSTransport(True, _Underlying(), logging.getLogger("test"), loop)
            reader = Reader(compiled, transport)
            listener, calls = reader.listener()
            for i, f in enumerate(frames):
                if i == detach_at:
                    listener.detach()
                real = _speedups._test_frame(f.msg_type, f.payload, f.fin, f.last_in_buffer)
                listener.on_ws_frame(transport, real)
            listener.on_ws_disconnected(transport)
        finally:
            loop.close()
        seen.append(calls)
    assert seen[0] == seen[1]
