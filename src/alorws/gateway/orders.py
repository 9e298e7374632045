"""Orders through the gateway: idempotency keys, commands in flight, replies given."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

import msgspec
from nats.aio.msg import Msg

from ..bus import wire
from ..client.client import AlorClient
from ..client.orders import OrderAck
from ..errors import InvalidArgumentError, OrderRejected
from ..protocol.requests import validate_guid
from .responder import Handler, Responder


__all__ = ["OrderDesk", "guid_for_key"]

_ORDER_CACHE: Final = 10_000


def guid_for_key(key: str) -> str:
    """The ``/cws`` guid of an idempotency key: the key itself when it is a valid guid
    (1..50 printable ASCII), else a digest of it. Equal keys always give equal guids."""
    try:
        return validate_guid(key)
    except InvalidArgumentError:
        return "k" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class OrderDesk:
    """Answers ``<prefix>.orders.<op>``: executes each operation of ``wire.ORDER_OPS`` on the
    client's :class:`~alorws.client.OrderClient`, exactly once per idempotency key.

    The consumer's key becomes the ``/cws`` guid (:func:`guid_for_key`). A request whose key
    is in flight joins that command; one whose key has a definite outcome (an ack, or
    :class:`~alorws.errors.OrderRejected`) gets the cached reply (the last 10 000 are kept,
    per gateway). Unknown outcomes are not cached: a retry sends the same guid again, which
    ALOR executes once (``checkDuplicates``), so a new leader may execute a retry safely.

    Args:
        client: the ALOR session (raises on a standby).
        responder: where the commands run.
        touch: renews the consumer's lease (an order request is a sign of life).
        counters: the gateway's counters (``orders``, ``order_retries``).
    """

    def __init__(
        self,
        client: Callable[[], AlorClient],
        responder: Responder,
        touch: Callable[[str], object],
        counters: dict[str, int],
    ) -> None:
        self._client = client
        self._responder = responder
        self._touch = touch
        self._counters = counters
        self._inflight: dict[str, asyncio.Task[OrderAck]] = {}
        self._done: OrderedDict[str, bytes] = OrderedDict()

    @property
    def in_flight(self) -> int:
        """Commands sent and not answered yet."""
        return len(self._inflight)

    def handlers(self) -> dict[str, Handler]:
        """The order subjects (after the prefix) and their handler."""
        return {"orders.*": self._on_order}

    async def _on_order(self, msg: Msg) -> bytes:
        op = msg.subject.rsplit(".", 1)[-1]
        if op not in wire.ORDER_OPS:
            raise InvalidArgumentError("op", f"{op!r} is not one of {sorted(wire.ORDER_OPS)}")
        ctl = self._responder.decode(msg.data, wire.OrderCtl)
        self._touch(ctl.consumer)
        guid = guid_for_key(ctl.key)
        done = self._done.get(guid)
        if done is not None:
            self._counters["order_retries"] += 1
            return done
        task = self._inflight.get(guid)
        if task is None:
            self._counters["orders"] += 1
            task = self._responder.spawn(self._execute(op, dict(ctl.args), guid))
            self._inflight[guid] = task
            task.add_done_callback(lambda t: self._finished(guid, t))
        else:
            self._counters["order_retries"] += 1
        ack = await asyncio.shield(task)
        return _ack_reply(ack)

    async def _execute(self, op: str, args: dict[str, Any], guid: str) -> OrderAck:
        args.pop("guid", None)
        method = getattr(self._client().trading, op)
        # Arguments the operation does not take are refused before the call; an error from the
        # call itself may come after the command went out, so it keeps its own type.
        try:
            call = inspect.signature(method).bind(**args, guid=guid)
        except TypeError as exc:
            raise InvalidArgumentError("args", f"{op}: {exc}") from None
        result: OrderAck = await method(*call.args, **call.kwargs)
        return result

    def _finished(self, guid: str, task: asyncio.Task[OrderAck]) -> None:
        self._inflight.pop(guid, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            reply = _ack_reply(task.result())
        elif isinstance(exc, OrderRejected):  # definitive: the order was not executed
            reply = msgspec.json.encode(wire.OrderReply(error=wire.error_info(exc)))
        else:  # unknown outcome or not sent: a retry re-sends the same guid
            return
        self._done[guid] = reply
        while len(self._done) > _ORDER_CACHE:
            self._done.popitem(last=False)


def _ack_reply(ack: OrderAck) -> bytes:
    return msgspec.json.encode(
        wire.OrderReply(
            ack=wire.OrderAckWire(ack.order_number, ack.http_code, ack.message, ack.guid)
        )
    )
