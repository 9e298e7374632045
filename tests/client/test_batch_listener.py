"""BatchListener without sockets: the messages of one read in one call, in arrival order.

picows flags the last complete frame of each socket read (``last_in_buffer``); the frames here
stand in for its ``WSFrame`` (the listener only reads the attributes below), so every case is
exact: which frames arrive in one read, and where a control or short frame falls between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import picows

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


class Transport:
    def send_close(self, code: Any = None) -> None:
        pass

    def disconnect(self, graceful: bool = True) -> None:
        pass


def _listener() -> tuple[BatchListener, list[Any]]:
    calls: list[Any] = []
    listener = BatchListener(
        calls.append,
        lambda: calls.append("disconnected"),
        on_pong=lambda: calls.append("pong"),
        on_close=lambda code, reason: calls.append(("close", code)),
    )
    return listener, calls


def _msg(n: int) -> bytes:
    return LONG.replace(b'"x"', b'"x%d"' % n)


def _read(listener: BatchListener, frames: list[Frame]) -> None:
    """Feed ``frames`` as picows does for one read: the last complete one is flagged."""
    frames[-1].last_in_buffer = True
    transport: Any = Transport()
    for frame in frames:
        listener.on_ws_frame(transport, frame)  # type: ignore[arg-type]


def test_the_messages_of_one_read_come_in_one_call() -> None:
    listener, calls = _listener()
    _read(listener, [Frame(_msg(i)) for i in range(5)])
    _read(listener, [Frame(_msg(5))])
    assert calls == [[_msg(i) for i in range(5)], [_msg(5)]]


def test_other_frames_hand_over_what_came_before_them_first() -> None:
    listener, calls = _listener()
    short = b'{"data":{},"guid":"g"}'
    _read(
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


def test_a_close_frame_and_the_disconnect_flush_first() -> None:
    listener, calls = _listener()
    transport: Any = Transport()
    listener.on_ws_frame(transport, Frame(_msg(0)))  # type: ignore[arg-type]
    listener.on_ws_frame(transport, Frame(b"", msg_type=picows.WSMsgType.CLOSE))  # type: ignore[arg-type]
    listener.on_ws_frame(transport, Frame(_msg(1)))  # type: ignore[arg-type]
    listener.on_ws_disconnected(transport)
    assert calls == [[_msg(0)], ("close", 1000), [_msg(1)], "disconnected"]


def test_a_detached_listener_hands_over_nothing() -> None:
    listener, calls = _listener()
    transport: Any = Transport()
    listener.on_ws_frame(transport, Frame(_msg(0)))  # type: ignore[arg-type]
    listener.detach()
    _read(listener, [Frame(_msg(1)), Frame(b'{"short":1}')])
    listener.on_ws_disconnected(transport)
    assert calls == []
