"""The rules of a ``/ws`` lane, without sockets: restore, the 401 budget, ping probing, silence."""

from __future__ import annotations

import itertools
import math
from typing import Any

import msgspec
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from alorws.errors import (
    AuthError,
    ConnectError,
    InvalidArgumentError,
    ServerRejected,
    TokenRejected,
)
from alorws.protocol.data_connection import (
    AUTH_RETRIES,
    Close,
    Confirmed,
    DataConnection,
    Disconnected,
    Failed,
    Restored,
    Resubscribed,
    SendPing,
    Silent,
    Unsubscribed,
)
from alorws.protocol.registry import SubscriptionRegistry, SubscriptionState
from alorws.protocol.requests import QuotesRequest, SubscriptionRequest


LANE = 1
Registry = SubscriptionRegistry[SubscriptionRequest, int]


def _registry() -> Registry:
    counter = itertools.count(1)
    return SubscriptionRegistry(guid_factory=lambda: f"g{next(counter)}")


def _request(i: int) -> QuotesRequest:
    return QuotesRequest(code="SBER", frequency=1000 + i)


def _decode(frames: list[bytes]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(f) for f in frames]


class Lane:
    """A lane's rules with its registry, and the bookkeeping a test needs."""

    def __init__(self, **options: Any) -> None:
        self.registry = _registry()
        self.conn = DataConnection(LANE, self.registry, **options)
        self.received: dict[str, int] = {}

    def subscribe(self, i: int) -> str:
        result = self.registry.subscribe(_request(i), LANE)
        assert result.send
        self.conn.subscribe(result.subscription)
        self.received[result.subscription.guid] = 0
        return result.subscription.guid

    def sent(self, token: str = "t1", *, refreshed: bool = False) -> list[dict[str, Any]]:
        return _decode(self.conn.data_to_send(token, refreshed=refreshed))

    def reply(self, guid: str, code: int = 200, now: float = 0.0) -> None:
        self.conn.receive_status(guid, code, "ok" if code == 200 else "refused", now)

    def tick(self, now: float, messages: int = 0) -> None:
        self.conn.tick(now, messages, self.received.get)

    def events(self) -> list[Any]:
        return self.conn.events_received()

    def state(self, guid: str) -> SubscriptionState | None:
        sub = self.registry.get(guid)
        return None if sub is None else sub.state


def _open_with(lane: Lane, n: int, now: float = 0.0) -> list[str]:
    """Open the lane and confirm ``n`` subscriptions on it."""
    lane.conn.connection_opened(now)
    guids = [lane.subscribe(i) for i in range(n)]
    assert [f["guid"] for f in lane.sent()] == guids
    for guid in guids:
        lane.reply(guid)
    assert lane.events() == [Confirmed(g) for g in guids]
    return guids


# -- restore --------------------------------------------------------------------------------------


def test_restore_resends_every_subscription_with_its_original_guid_in_order() -> None:
    """After a loss, the next connection re-sends each subscription with its guid, in subscribe
    order, then those requested while down, in one burst with the new token."""
    lane = Lane()
    guids = _open_with(lane, 3)
    lane.conn.connection_lost(10.0, "closed (code=1006)")
    assert lane.events() == [Disconnected("closed (code=1006)")]
    assert {lane.state(g) for g in guids} == {SubscriptionState.RESTORING}
    assert not lane.conn.has_data_to_send()
    late = lane.subscribe(7)  # requested while the lane is down: waits for the restore
    assert not lane.conn.has_data_to_send()

    lane.conn.connection_opened(12.5)
    frames = lane.sent("t2")
    assert [f["guid"] for f in frames] == [*guids, late]
    assert {f["token"] for f in frames} == {"t2"}
    assert [f["frequency"] for f in frames] == [1000, 1001, 1002, 1007]
    assert lane.events() == [Restored(2.5)]
    assert {lane.state(g) for g in [*guids, late]} == {SubscriptionState.PENDING}
    assert lane.conn.reconnects == 1
    for guid in [*guids, late]:
        lane.reply(guid)
    assert {lane.state(g) for g in [*guids, late]} == {SubscriptionState.ACTIVE}


def test_the_first_connection_is_not_a_restore() -> None:
    """Opening the first connection sends what was requested, and no Restored event."""
    lane = Lane()
    guid = lane.subscribe(0)
    lane.conn.connection_opened(1.0)
    assert [f["guid"] for f in lane.sent()] == [guid]
    assert lane.events() == [] and lane.conn.reconnects == 0


def test_a_token_the_encoder_refuses_leaves_the_queue_intact() -> None:
    """data_to_send checks the token once, before taking anything off the queue: a bad one
    raises InvalidArgumentError and the burst goes out whole with the next token."""
    lane = Lane()
    guids = [lane.subscribe(i) for i in range(3)]
    lane.conn.connection_opened(1.0)
    with pytest.raises(InvalidArgumentError, match="token"):
        lane.conn.data_to_send("")
    assert lane.conn.has_data_to_send()
    assert [f["guid"] for f in lane.sent("t2")] == guids


def _register(lane: Lane, numbers: range) -> list[Any]:
    """New subscriptions of the registry on the lane, not yet handed to the connection."""
    subs = [lane.registry.subscribe(_request(i), LANE).subscription for i in numbers]
    assert all(sub.state is SubscriptionState.PENDING for sub in subs)
    return subs


def test_a_batch_on_an_open_connection_goes_out_in_one_burst_in_order() -> None:
    """subscribe_many queues a whole batch at once: one data_to_send writes every frame, in
    batch order, after what was queued before; each reply confirms its own subscription and a
    refusal fails only its own."""
    lane = Lane()
    (first,) = _open_with(lane, 1)
    single = lane.subscribe(1)  # queued before the batch
    subs = _register(lane, range(2, 6))
    assert lane.conn.subscribe_many(subs) is True
    frames = lane.sent("t2")
    assert [f["guid"] for f in frames] == [single] + [s.guid for s in subs]
    assert [f["frequency"] for f in frames] == [1001, 1002, 1003, 1004, 1005]
    assert {f["token"] for f in frames} == {"t2"} and lane.sent() == []
    lane.reply(subs[2].guid, 400)
    for sub in (subs[0], subs[1], subs[3]):
        lane.reply(sub.guid)
    events = lane.events()
    assert [type(e) for e in events] == [Failed, Confirmed, Confirmed, Confirmed]
    assert events[0].guid == subs[2].guid
    assert [lane.state(s.guid) for s in subs] == [
        SubscriptionState.ACTIVE,
        SubscriptionState.ACTIVE,
        SubscriptionState.FAILED,
        SubscriptionState.ACTIVE,
    ]
    assert lane.state(first) is SubscriptionState.ACTIVE


def test_a_batch_while_the_connection_is_down_goes_out_after_the_restore() -> None:
    """A batch for a lane that is not open waits (nothing to send) and goes out with the next
    connection, after the subscriptions it restores; a member released meanwhile is dropped."""
    lane = Lane()
    guids = _open_with(lane, 2)
    lane.conn.connection_lost(1.0, "lost")
    lane.events()
    subs = _register(lane, range(2, 5))
    assert lane.conn.subscribe_many(subs) is False
    assert not lane.conn.has_data_to_send()
    assert lane.registry.unsubscribe(subs[1].guid)  # its last holder left before it was sent
    lane.conn.release(subs[1].guid)
    lane.conn.connection_opened(2.0)
    assert [f["guid"] for f in lane.sent()] == [*guids, subs[0].guid, subs[2].guid]


def test_an_empty_batch_sends_nothing() -> None:
    """subscribe_many of nothing queues nothing."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    assert lane.conn.subscribe_many([]) is True
    assert not lane.conn.has_data_to_send()


# -- the window of subscribes in flight -----------------------------------------------------------


def test_subscribes_beyond_the_window_go_out_in_order_as_replies_come() -> None:
    """At most ``max_in_flight`` subscribes wait for replies; each reply lets the next one out,
    in subscribe order, and only then does has_data_to_send say so."""
    lane = Lane(max_in_flight=2)
    lane.conn.connection_opened(0.0)
    guids = [lane.subscribe(i) for i in range(5)]
    assert [f["guid"] for f in lane.sent()] == guids[:2]
    assert not lane.conn.has_data_to_send() and lane.sent() == []
    lane.reply(guids[1])
    assert lane.conn.has_data_to_send()
    assert [f["guid"] for f in lane.sent()] == [guids[2]]
    lane.reply(guids[0], 400)  # a refusal frees its place too
    lane.reply(guids[2])
    assert [f["guid"] for f in lane.sent()] == guids[3:]
    for guid in guids[3:]:
        lane.reply(guid)
    assert [lane.state(g) for g in guids] == [
        SubscriptionState.FAILED,
        *[SubscriptionState.ACTIVE] * 4,
    ]


def test_a_restore_goes_through_the_window_and_a_loss_forgets_what_it_held() -> None:
    """A restore burst larger than the window goes out as replies come; a loss in the middle
    drops what was held, and the next restore sends everything not confirmed, once each."""
    lane = Lane(max_in_flight=2)
    guids = _open_with(lane, 2)
    more = [lane.subscribe(i) for i in range(2, 6)]
    assert [f["guid"] for f in lane.sent()] == more[:2]
    lane.conn.connection_lost(1.0, "lost")
    assert not lane.conn.has_data_to_send()
    lane.conn.connection_opened(2.0)
    assert [f["guid"] for f in lane.sent()] == guids
    lane.reply(guids[0])
    lane.reply(guids[1])
    assert [f["guid"] for f in lane.sent()] == more[:2]
    lane.reply(more[0])
    lane.reply(more[1])
    assert [f["guid"] for f in lane.sent()] == more[2:]


def test_a_subscription_released_while_held_is_never_sent() -> None:
    """The last holder leaving a subscribe the window still holds: it never goes out, and its
    unsubscribe does not wait behind the window (the reply completes the registry's entry)."""
    lane = Lane(max_in_flight=1)
    lane.conn.connection_opened(0.0)
    first, held, after = (lane.subscribe(i) for i in range(3))
    assert [f["guid"] for f in lane.sent()] == [first]
    assert lane.registry.unsubscribe(held)
    lane.conn.release(held)
    assert lane.conn.send_unsubscribe(held)
    frames = lane.sent()
    assert [(f["opcode"], f["guid"]) for f in frames] == [("unsubscribe", held)]
    lane.reply(held)
    assert lane.state(held) in (None, SubscriptionState.CLOSED)
    lane.reply(first)
    assert [f["guid"] for f in lane.sent()] == [after]


def test_a_401_resend_and_a_ping_never_wait_for_the_window() -> None:
    """A re-send after a 401 goes out with the next token even with the window full, and so
    does a probe of a quiet connection."""
    lane = Lane(max_in_flight=1, ping_interval=5.0)
    lane.conn.connection_opened(0.0)
    first, second = lane.subscribe(0), lane.subscribe(1)
    assert [f["guid"] for f in lane.sent()] == [first]
    lane.reply(first, 401)
    assert lane.conn.token_refused("t1")
    frames = lane.sent("t2", refreshed=True)
    assert [f["guid"] for f in frames] == [first]  # the re-send; the other still waits
    lane.tick(0.0)
    lane.tick(6.0)
    assert any(isinstance(e, SendPing) for e in lane.events())
    assert [f["opcode"] for f in lane.sent("t2")] == ["ping"]
    lane.reply(first)
    assert [f["guid"] for f in lane.sent("t2")] == [second]


def test_the_window_must_hold_one() -> None:
    with pytest.raises(InvalidArgumentError, match="max_in_flight"):
        DataConnection(LANE, _registry(), max_in_flight=0)


def test_nothing_queued_survives_a_loss() -> None:
    """Frames queued but not yet written when the connection is lost are not sent later; the
    restore covers them."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    assert lane.conn.has_data_to_send()
    lane.conn.connection_lost(1.0, "lost")
    assert lane.conn.data_to_send("t1") == []
    lane.conn.connection_opened(2.0)
    assert [f["guid"] for f in lane.sent()] == [guid]


def test_an_unsubscribe_in_flight_completes_with_the_connection() -> None:
    """An unsubscribe sent but unanswered is done when the connection goes (the server forgot
    it); one on a closed lane is not sent at all."""
    lane = Lane()
    guid, other = _open_with(lane, 2)
    assert lane.registry.unsubscribe(guid)
    lane.conn.release(guid)
    assert lane.conn.send_unsubscribe(guid)
    assert lane.sent() == [{"opcode": "unsubscribe", "guid": guid, "token": "t1"}]
    lane.conn.connection_lost(1.0, "lost")
    assert lane.state(guid) is None
    assert lane.registry.unsubscribe(other) is False  # RESTORING: nothing on the server
    lane.conn.release(other)
    assert lane.conn.send_unsubscribe(other) is False
    lane.conn.connection_opened(2.0)
    assert lane.sent() == []


def test_an_unsubscribe_reply_closes_the_subscription() -> None:
    """The unsubscribe's reply is reported as Unsubscribed."""
    lane = Lane()
    (guid,) = _open_with(lane, 1)
    assert lane.registry.unsubscribe(guid)
    lane.conn.release(guid)
    lane.conn.send_unsubscribe(guid)
    lane.sent()
    lane.reply(guid)
    assert lane.events() == [Unsubscribed(guid)]


def test_a_refusal_fails_the_subscription() -> None:
    """A non-200 non-401 reply to a subscribe fails it with the server's rejection."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    lane.sent()
    lane.reply(guid, 400)
    (event,) = lane.events()
    assert isinstance(event, Failed) and event.guid == guid
    assert isinstance(event.error, ServerRejected) and event.error.http_code == 400
    assert lane.state(guid) is SubscriptionState.FAILED


# -- the 401 budget -------------------------------------------------------------------------------


def test_a_401_is_resent_with_another_token_within_the_budget_then_fails() -> None:
    """A subscribe refused with 401 is re-sent with the same guid, never with the refused token,
    AUTH_RETRIES times; the next 401 fails it with TokenRejected."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    assert [f["token"] for f in lane.sent("t0")] == ["t0"]
    for attempt in range(1, AUTH_RETRIES + 1):
        refused = f"t{attempt - 1}"
        lane.reply(guid, 401)
        assert lane.events() == [] and lane.state(guid) is SubscriptionState.PENDING
        assert lane.conn.token_refused(refused)
        assert lane.conn.data_to_send(refused) == []  # kept: never the refused token
        assert not lane.conn.token_refused(f"t{attempt}")
        frames = lane.sent(f"t{attempt}")
        assert [(f["guid"], f["token"]) for f in frames] == [(guid, f"t{attempt}")]
    lane.reply(guid, 401)
    (event,) = lane.events()
    assert isinstance(event, Failed) and isinstance(event.error, TokenRejected)
    assert lane.state(guid) is SubscriptionState.FAILED
    assert not lane.conn.has_data_to_send()


def test_a_refreshed_token_goes_out_even_if_it_is_the_refused_one() -> None:
    """When the refresh gives back the refused token, the re-send goes out with it (the budget
    then decides)."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    lane.sent("same")
    lane.reply(guid, 401)
    assert [f["guid"] for f in lane.sent("same", refreshed=True)] == [guid]


def test_a_burst_of_401s_needs_one_refresh() -> None:
    """Every subscription of a restore refused with 401: one token refresh re-sends them all."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guids = [lane.subscribe(i) for i in range(5)]
    lane.sent("old")
    for guid in guids:
        lane.reply(guid, 401)
    assert lane.conn.token_refused("old")
    frames = lane.sent("new")
    assert [(f["guid"], f["token"]) for f in frames] == [(g, "new") for g in guids]
    assert not lane.conn.has_data_to_send()


def test_a_401_with_no_token_to_be_had_fails_the_subscription() -> None:
    """When no token can be obtained for the re-send, the subscription fails with TokenRejected."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    lane.sent()
    lane.reply(guid, 401)
    lane.conn.token_failed(AuthError("the refresh token was refused"))
    (event,) = lane.events()
    assert isinstance(event, Failed) and isinstance(event.error, TokenRejected)
    assert "refresh token was refused" in str(event.error)
    assert lane.state(guid) is SubscriptionState.FAILED


def _restoring(lane: Lane) -> str:
    """A subscription confirmed once, its connection lost and reopened: re-sent, PENDING."""
    (guid,) = _open_with(lane, 1)
    lane.conn.connection_lost(1.0, "closed (code=1006)")
    lane.conn.connection_opened(2.0)
    assert [f["guid"] for f in lane.sent("t0")] == [guid]
    lane.events()
    return guid


def test_a_restoring_subscription_refused_past_the_budget_closes_the_connection() -> None:
    """A subscription being restored is live to its consumers: 401s past the budget (a token
    that expired under the restore) close the connection for the next one to restore it; the
    subscription is not failed."""
    lane = Lane()
    guid = _restoring(lane)
    for attempt in range(1, AUTH_RETRIES + 1):
        lane.reply(guid, 401)
        assert lane.events() == []
        lane.sent(f"t{attempt}")
    lane.reply(guid, 401)
    (event,) = lane.events()
    assert isinstance(event, Close) and "reconnecting" in event.reason
    assert lane.state(guid) is SubscriptionState.PENDING
    lane.conn.connection_lost(3.0, event.reason)
    assert lane.state(guid) is SubscriptionState.RESTORING
    lane.conn.connection_opened(4.0)
    assert [(f["guid"], f["token"]) for f in lane.sent("t9")] == [(guid, "t9")]
    lane.reply(guid)  # and the budget starts over
    assert lane.state(guid) is SubscriptionState.ACTIVE


def test_a_restoring_subscription_with_no_token_for_now_closes_the_connection() -> None:
    """No token can be had because the auth server is unreachable (a transport error, e.g. a
    restart of ALOR's servers): the restoring subscription is kept and the connection closes."""
    lane = Lane()
    guid = _restoring(lane)
    lane.reply(guid, 401)
    lane.conn.token_failed(ConnectError("could not refresh the access token: HTTP 503"))
    events = lane.events()
    assert [type(e) for e in events] == [Close]
    assert lane.state(guid) is SubscriptionState.PENDING


def test_a_restoring_subscription_fails_when_the_refresh_token_is_refused() -> None:
    """The refresh token itself refused (an AuthError) is final, restoring or not."""
    lane = Lane()
    guid = _restoring(lane)
    lane.reply(guid, 401)
    lane.conn.token_failed(AuthError("the refresh token was refused"))
    (event,) = lane.events()
    assert isinstance(event, Failed) and isinstance(event.error, TokenRejected)
    assert lane.state(guid) is SubscriptionState.FAILED


def test_a_401_to_an_active_subscription_is_not_a_resend() -> None:
    """A 401 for a subscription already confirmed changes nothing and sends nothing."""
    lane = Lane()
    (guid,) = _open_with(lane, 1)
    lane.reply(guid, 401)
    assert lane.events() == [] and not lane.conn.has_data_to_send()
    assert lane.state(guid) is SubscriptionState.ACTIVE


def test_the_budget_is_per_subscription_and_a_confirmation_resets_it() -> None:
    """A subscription confirmed after a 401 starts its budget over after a later restore."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    lane.sent()
    for _ in range(AUTH_RETRIES):
        lane.reply(guid, 401)
        lane.sent("fresh", refreshed=True)
    lane.reply(guid)
    lane.conn.connection_lost(1.0, "lost")
    lane.conn.connection_opened(2.0)
    lane.sent()
    lane.events()
    lane.reply(guid, 401)
    assert lane.conn.has_data_to_send()  # re-sent again, not failed


# -- ping probing ---------------------------------------------------------------------------------


def _probe(lane: Lane, now: float = 5.0, messages: int = 0) -> str | None:
    """Tick until the lane is probed at ``now``; return the app ping's guid (None if not sent)."""
    lane.tick(0.0, messages)  # the first look at the counter
    assert lane.conn.next_tick() == 5.0
    lane.tick(now - 0.01, messages)
    assert lane.events() == []
    lane.tick(now, messages)
    assert lane.events() == [SendPing()]
    frames = lane.sent()
    assert lane.conn.next_tick() == now + 5.0
    if not frames:
        return None
    (frame,) = frames
    assert frame["opcode"] == "ping"
    return str(frame["guid"])


def test_a_quiet_connection_is_probed_and_kept_when_the_app_ping_is_answered() -> None:
    """No frame for ping_interval: an app ping and a WebSocket ping; the app ping's reply keeps
    the connection and teaches that the server answers it."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = _probe(lane)
    assert guid is not None
    lane.reply(guid, now=5.1)
    assert lane.conn.app_ping_works is True
    assert lane.conn.timer_moved  # the driver must ask next_tick() again
    assert lane.conn.next_tick() == -math.inf  # look at the counter again at once
    assert not lane.conn.timer_moved
    lane.tick(5.1, messages=1)
    assert lane.events() == [] and lane.conn.next_tick() == pytest.approx(10.1)
    assert lane.registry.get(guid) is None  # the ping guid is not a subscription


def test_a_connection_that_never_answers_is_closed_after_the_timeout() -> None:
    """No answer of any kind within ping_timeout, and no frame read: Close."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    _probe(lane)
    lane.tick(9.99)
    assert lane.events() == []
    lane.tick(10.0)
    assert lane.events() == [Close("no answer to ping within 5.0 s")]
    assert lane.conn.next_tick() == math.inf  # no more probes on this connection


def test_frames_read_during_the_probe_keep_the_connection() -> None:
    """Data read while the probe waits is as good as an answer."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    _probe(lane)
    lane.tick(10.0, messages=3)
    assert lane.events() == []


def test_frames_between_looks_mean_no_probe() -> None:
    """A connection that read frames since the last look is not probed."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    lane.tick(0.0, 0)
    lane.tick(5.0, 4)
    assert lane.events() == [] and not lane.conn.has_data_to_send()
    assert lane.conn.next_tick() == 10.0


def test_a_server_that_ignores_the_app_ping_is_probed_with_websocket_pings() -> None:
    """A WebSocket pong but no reply to the app ping: the lane stops sending the app ping and
    relies on WebSocket pongs; without one it closes the connection."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    assert _probe(lane) is not None
    lane.conn.receive_pong(5.2)
    lane.tick(10.0)
    assert lane.events() == [] and lane.conn.app_ping_works is False
    assert _probe_again(lane, 15.0) is None  # WebSocket ping only
    lane.conn.receive_pong(15.1)
    lane.tick(20.0)
    assert lane.events() == []
    assert _probe_again(lane, 25.0) is None
    lane.tick(30.0)
    assert lane.events() == [Close("no answer to ping within 5.0 s")]


def _probe_again(lane: Lane, now: float) -> str | None:
    lane.tick(now)
    assert lane.events() == [SendPing()]
    frames = lane.sent()
    return str(frames[0]["guid"]) if frames else None


def test_a_late_app_pong_is_swallowed() -> None:
    """The reply to a ping judged already changes nothing (and is not a subscription)."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = _probe(lane)
    assert guid is not None
    lane.conn.receive_pong(5.5)
    lane.tick(10.0)
    lane.reply(guid, now=10.5)
    assert lane.events() == [] and lane.conn.app_ping_works is False


def test_a_closed_lane_has_no_timer() -> None:
    """Nothing to tick while no connection is open; a tick then does nothing."""
    lane = Lane()
    assert lane.conn.next_tick() is None
    lane.tick(100.0)
    assert lane.events() == [] and not lane.conn.has_data_to_send()


# -- silent subscriptions -------------------------------------------------------------------------


def _silent_lane(timeout: float = 1.0) -> tuple[Lane, str, str]:
    lane = Lane()
    watched, other = _open_with(lane, 2)
    lane.conn.watch(watched, timeout, 0.0)
    lane.conn.watch(other, 10.0, 0.0)
    return lane, watched, other


def _look(lane: Lane, now: float) -> list[Any]:
    lane.tick(now, messages=int(now * 100))  # frames keep coming: no probe
    return lane.events()


def test_silence_fires_only_after_the_timeout_with_an_unchanged_counter() -> None:
    """A watched subscription whose counter does not move for longer than its timeout gets
    Silent (and only then); the other subscription is left alone."""
    lane, watched, other = _silent_lane()
    assert lane.conn.next_tick() == -math.inf
    lane.tick(0.0)
    assert lane.conn.next_tick() == 0.25  # a few looks per timeout
    assert _look(lane, 0.25) == []  # the first look starts the clock
    events: list[Any] = []
    while not events:
        now = lane.conn.next_tick()
        assert now is not None and now <= 1.5
        events = _look(lane, now)
        if not events:
            assert now <= 1.25 and not lane.conn.has_data_to_send()
    # The first look after 0.25 + 1.0 (strictly later) fires, for that subscription only.
    assert now == 1.5
    assert events == [Silent(watched, pytest.approx(1.25))]
    assert lane.sent() == [{"opcode": "unsubscribe", "guid": watched, "token": "t1"}]
    assert lane.conn.resubscribes == 1
    assert lane.state(watched) is SubscriptionState.ACTIVE  # it stays live for its consumers


def test_data_restarts_the_silence_clock() -> None:
    """A counter that moves between looks never lets the timeout pass."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    for i in range(1, 40):
        lane.received[watched] = i
        assert _look(lane, i * 0.25) == []
    assert not lane.conn.has_data_to_send()


def test_a_silent_subscription_is_subscribed_again_with_the_same_guid() -> None:
    """Unsubscribe, its reply, the subscribe with the same guid, its reply: Resubscribed, with
    the time since the last data."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.sent()
    lane.reply(watched, now=1.6)  # the unsubscribe's reply
    assert lane.events() == []
    (frame,) = lane.sent("t2")
    assert (frame["opcode"], frame["guid"], frame["token"]) == ("QuotesSubscribe", watched, "t2")
    lane.reply(watched, now=1.7)
    assert lane.events() == [Resubscribed(watched, pytest.approx(1.45))]
    assert lane.state(watched) is SubscriptionState.ACTIVE
    assert lane.conn.resubscribe_failures == 0
    assert _look(lane, 1.75) == []  # the clock starts over


def test_a_pending_subscription_is_never_silent() -> None:
    """Only an ACTIVE subscription on a live connection can be silent."""
    lane = Lane()
    lane.conn.connection_opened(0.0)
    guid = lane.subscribe(0)
    lane.sent()
    lane.conn.watch(guid, 0.1, 0.0)
    lane.tick(0.0)
    for i in range(1, 20):
        assert _look(lane, i * 0.05) == []


def test_a_refused_resubscribe_step_closes_the_connection() -> None:
    """A refused step (not 401) counts as a failure and closes the connection."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.sent()
    lane.reply(watched, 500)
    (event,) = lane.events()
    assert isinstance(event, Close) and watched in event.reason
    assert lane.conn.resubscribe_failures == 1


def test_an_unanswered_resubscribe_step_closes_the_connection() -> None:
    """A step without a reply within step_timeout closes the connection."""
    lane, watched, other = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.sent()
    assert lane.conn.next_tick() == pytest.approx(1.75)
    lane.received[other] = 1  # the other subscription is not silent
    assert _look(lane, 11.49) == []
    (event,) = _look(lane, 11.5)
    assert isinstance(event, Close) and "no reply within 10.0 s" in event.reason


def test_a_401_to_a_resubscribe_step_is_retried_once_with_another_token() -> None:
    """One 401 re-sends the step without the refused token; a second one fails it."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.sent("old")
    lane.reply(watched, 401)
    assert lane.conn.token_refused("old")
    assert lane.sent("new") == [{"opcode": "unsubscribe", "guid": watched, "token": "new"}]
    lane.reply(watched, 401)
    (event,) = lane.events()
    assert isinstance(event, Close)


def test_a_subscription_released_during_its_resubscribe_is_not_put_back() -> None:
    """Released after the unsubscribe step: its subscribe is not sent."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.sent()
    assert lane.registry.unsubscribe(watched)
    lane.conn.release(watched)
    lane.reply(watched)  # the resubscribe's unsubscribe reply closes the CLOSING entry
    assert lane.events() == [Unsubscribed(watched)]
    assert not lane.conn.has_data_to_send()
    assert lane.conn.watched == 1


def test_a_loss_ends_every_resubscribe_without_a_failure() -> None:
    """The connection goes during a re-subscription: the restore re-sends it; no failure."""
    lane, watched, _ = _silent_lane()
    lane.tick(0.0)
    _look(lane, 0.25)
    _look(lane, 1.5)
    lane.conn.connection_lost(1.6, "lost")
    assert lane.conn.resubscribe_failures == 0
    lane.conn.connection_opened(2.0)
    assert watched in [f["guid"] for f in lane.sent()]


def test_a_subscription_without_consumers_is_no_longer_watched() -> None:
    """Once no consumer counts for it, the watch goes."""
    lane, watched, _ = _silent_lane()
    del lane.received[watched]
    lane.tick(0.0)
    _look(lane, 0.25)
    assert lane.conn.watched == 1


def test_a_shared_subscription_keeps_the_shortest_timeout() -> None:
    """Watching twice keeps the shorter timeout; a bad timeout is refused."""
    lane, watched, _ = _silent_lane(timeout=2.0)
    lane.conn.watch(watched, 0.4, 0.0)
    lane.tick(0.0)
    assert lane.conn.next_tick() == pytest.approx(0.1)
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(InvalidArgumentError, match="silence_timeout"):
            lane.conn.watch(watched, bad, 0.0)


# -- a state machine: interleavings of subscribes, replies, drops ---------------------------------


class LaneMachine(RuleBasedStateMachine):
    """Random interleavings; what goes out is always consistent with the registry."""

    #: Subscribes in flight at most (None: the default, never reached here).
    window: int | None = None

    def __init__(self) -> None:
        super().__init__()
        options: dict[str, Any] = {} if self.window is None else {"max_in_flight": self.window}
        self.lane = Lane(auth_retries=1, **options)
        self.in_flight: dict[str, str] = {}  # guid -> the token its last frame carried
        self.now = 0.0
        self.n = 0
        self.tokens = itertools.count(1)
        self.token = "t0"
        self.failed: set[str] = set()

    def _drain(self, refreshed: bool = False) -> None:
        conn = self.lane.conn
        if conn.token_refused(self.token):
            self.token = f"t{next(self.tokens)}"
            refreshed = True
        for frame in self.lane.sent(self.token, refreshed=refreshed):
            assert conn.is_open
            if frame["opcode"] == "QuotesSubscribe":
                sub = self.lane.registry.get(frame["guid"])
                assert sub is not None and sub.state is SubscriptionState.PENDING
                self.in_flight[frame["guid"]] = self.token
        for event in self.lane.events():
            if isinstance(event, Failed):
                assert event.guid not in self.failed
                self.failed.add(event.guid)
                self.in_flight.pop(event.guid, None)
            elif isinstance(event, Confirmed):
                self.in_flight.pop(event.guid, None)

    @rule()
    def subscribe(self) -> None:
        self.n += 1
        self.lane.subscribe(self.n)
        self._drain()

    @rule(data=st.data(), code=st.sampled_from([200, 200, 401, 400]))
    def reply(self, data: st.DataObject, code: int) -> None:
        if not self.in_flight or not self.lane.conn.is_open:
            return
        guid = data.draw(st.sampled_from(sorted(self.in_flight)))
        del self.in_flight[guid]
        self.lane.reply(guid, code)
        self._drain()

    @rule()
    def lose(self) -> None:
        if self.lane.conn.is_open:
            self.now += 1
            self.lane.conn.connection_lost(self.now, "lost")
            self.in_flight.clear()
            self._drain()

    @rule()
    def open(self) -> None:
        if not self.lane.conn.is_open:
            self.now += 1
            expected = [
                s.guid
                for s in self.lane.registry.subscriptions()
                if s.connection_id == LANE
                and s.state in (SubscriptionState.RESTORING, SubscriptionState.PENDING)
            ]
            self.lane.conn.connection_opened(self.now)
            frames = self.lane.sent(self.token)
            # The restore burst: every live subscription not confirmed, each once, in order
            # (as much of it as the window lets out; replies let out the rest).
            assert [f["guid"] for f in frames] == expected[: self.window]
            for frame in frames:
                self.in_flight[frame["guid"]] = self.token
            self.lane.events()

    @rule()
    def token_expires(self) -> None:
        self.token = f"t{next(self.tokens)}"

    @invariant()
    def nothing_goes_out_on_a_closed_lane(self) -> None:
        if not self.lane.conn.is_open:
            assert not self.lane.conn.has_data_to_send()

    @invariant()
    def failed_subscriptions_are_failed_in_the_registry(self) -> None:
        for guid in self.failed:
            sub = self.lane.registry.get(guid)
            assert sub is not None and sub.state is SubscriptionState.FAILED

    @invariant()
    def the_window_holds(self) -> None:
        if self.window is not None:
            assert len(self.in_flight) <= self.window


class WindowedLaneMachine(LaneMachine):
    window = 2


def test_lane_state_machine() -> None:
    """Subscribes, replies (200/401/400), losses and restores in any order keep the rules."""
    run_state_machine_as_test(LaneMachine, settings=settings(max_examples=150, deadline=None))


def test_lane_state_machine_with_a_small_window() -> None:
    """The same with at most two subscribes in flight: nothing is lost or sent twice."""
    run_state_machine_as_test(
        WindowedLaneMachine, settings=settings(max_examples=150, deadline=None)
    )
