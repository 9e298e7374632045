"""The rules of the ``/cws`` command connection, without sockets: exactly once across drops."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from alorws.errors import (
    AuthError,
    ConnectError,
    InvalidArgumentError,
    InvalidState,
    OrderRejected,
    OrderStatusUnknown,
    TokenRejected,
    TransportTimeout,
)
from alorws.protocol.command_connection import (
    AUTH_RETRIES,
    AuthPlan,
    CommandAcked,
    CommandConnection,
    CommandFailed,
    CommandState,
    ConnectNeeded,
    PendingCommand,
    ReauthorizeNeeded,
    TokenChoice,
)
from alorws.protocol.commands import (
    CreateLimit,
    DeleteLimit,
    InstrumentRef,
    User,
    encode_command,
)
from alorws.protocol.enums import Exchange, Side
from alorws.protocol.reconnect import Retry


_guids = itertools.count(1)


def _order(guid: str | None = None, *, check_duplicates: bool = True) -> CreateLimit:
    return CreateLimit(
        guid=guid or f"c{next(_guids)}",
        user=User(portfolio="D1"),
        side=Side.BUY,
        quantity=1,
        price=100.0,
        instrument=InstrumentRef(symbol="SBER", exchange=Exchange.MOEX),
        check_duplicates=check_duplicates,
    )


class Cws:
    """A command connection and the steps a driver takes."""

    def __init__(self, **options: Any) -> None:
        self.conn = CommandConnection(**options)

    def open(self, token: str = "t1", now: float = 0.0) -> AuthPlan:
        """Connect and authorize with ``token`` (as the plan asks)."""
        self.conn.connecting()
        plan = self.conn.authorize_plan()
        self.conn.authorizing()
        self.conn.opened(token, plan, now)
        return plan

    def submit(self, command: CreateLimit, now: float = 0.0) -> PendingCommand:
        return self.conn.submit(command, encode_command(command), now)

    def reply(self, guid: str, code: int = 200, now: float = 0.0, number: str | None = "1") -> None:
        self.conn.receive_reply(guid, code, "text", number if code == 200 else None, now)

    def sent(self) -> list[bytes]:
        return self.conn.data_to_send()

    def events(self) -> list[Any]:
        return self.conn.events_received()

    def lose(self) -> None:
        self.conn.connection_lost(self.conn.generation)


# -- authorize first, then in order ---------------------------------------------------------------


def test_commands_wait_for_authorize_and_go_out_in_submission_order() -> None:
    """Commands submitted before the connection is authorized wait, then go out in order."""
    cws = Cws()
    commands = [_order() for _ in range(3)]
    for command in commands:
        cws.submit(command)
    assert cws.sent() == [] and cws.events() == [ConnectNeeded()] * 3
    assert cws.conn.queued() == 3
    plan = cws.open()
    assert plan == AuthPlan(TokenChoice.CURRENT)
    assert cws.sent() == [encode_command(c) for c in commands]
    assert cws.conn.queued() == 0 and cws.conn.state is CommandState.OPEN


def test_an_ack_carries_the_order_number() -> None:
    """200 acknowledges the command; a delete without orderNumber names its order anyway."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command)
    cws.reply(command.guid, number="42")
    assert cws.events() == [CommandAcked(command.guid, "42", "text")]
    delete = DeleteLimit(
        guid="del-1", user=User(portfolio="D1"), order_id="77", exchange=Exchange.MOEX
    )
    cws.conn.submit(delete, encode_command(delete), 0.0)
    cws.reply("del-1", number=None)
    assert cws.events() == [CommandAcked("del-1", "77", "text")]
    assert cws.conn.acks == 2 and cws.conn.pending() == 0


def test_a_refusal_is_order_rejected() -> None:
    """A refusal of a command never caught in a drop is OrderRejected."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command)
    cws.reply(command.guid, 400)
    (event,) = cws.events()
    assert isinstance(event, CommandFailed) and isinstance(event.error, OrderRejected)
    assert event.error.http_code == 400 and cws.conn.rejections == 1


def test_a_guid_in_flight_is_refused() -> None:
    """A second command with a guid still waiting is refused before anything changes."""
    cws = Cws()
    cws.submit(_order("same"))
    with pytest.raises(InvalidArgumentError) as caught:
        cws.submit(_order("same"))
    assert caught.value.field == "guid" and cws.conn.commands == 1


def test_a_reply_for_nothing_waiting_is_late() -> None:
    """A reply for a command nobody waits for is counted and dropped."""
    cws = Cws()
    cws.open()
    cws.reply("nobody")
    assert cws.events() == [] and cws.conn.late_replies == 1


# -- exactly once across drops --------------------------------------------------------------------


def test_a_command_in_flight_at_a_drop_is_resent_with_the_same_guid_and_marked_ambiguous() -> None:
    """The next connection re-sends the very same frame; the caller still gets its ack."""
    cws = Cws()
    cws.open()
    command = _order()
    pending = cws.submit(command)
    (frame,) = cws.sent()
    cws.lose()
    assert pending.ambiguous and pending.maybe_executed
    assert cws.events() == [] and cws.conn.state is CommandState.BACKOFF
    assert cws.conn.reconnects == 1
    cws.open("t2")
    assert cws.sent() == [frame]
    assert pending.sends == 2 and cws.conn.resends == 1
    cws.reply(command.guid)
    assert cws.events() == [CommandAcked(command.guid, "1", "text")]


def test_a_refusal_of_a_resent_command_is_unknown_not_rejected() -> None:
    """After a drop, a 400 to the re-send may mean "duplicate: already executed"."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command)
    cws.lose()
    cws.open("t2")
    cws.reply(command.guid, 400)
    (event,) = cws.events()
    assert isinstance(event, CommandFailed) and isinstance(event.error, OrderStatusUnknown)
    assert "400" in str(event.error)
    assert cws.conn.unknown == 1 and cws.conn.rejections == 0


def test_check_duplicates_off_in_flight_at_a_drop_is_unknown_and_not_resent() -> None:
    """Without the server's guid check a re-send could execute twice: it is not re-sent."""
    cws = Cws()
    cws.open()
    command = _order(check_duplicates=False)
    cws.submit(command)
    cws.sent()
    cws.lose()
    (event,) = cws.events()
    assert isinstance(event, CommandFailed) and isinstance(event.error, OrderStatusUnknown)
    assert "checkDuplicates" in str(event.error)
    cws.open("t2")
    assert cws.sent() == [] and cws.conn.pending() == 0


def test_check_duplicates_off_but_queued_at_a_drop_still_goes_out() -> None:
    """A command never sent is not ambiguous: it simply goes out on the next connection."""
    cws = Cws()
    command = _order(check_duplicates=False)
    cws.submit(command)
    cws.conn.connecting()
    cws.lose()  # the connect attempt failed
    assert cws.events() == [ConnectNeeded()]
    cws.open()
    assert cws.sent() == [encode_command(command)]


def test_a_frame_never_written_is_not_ambiguous_at_the_drop() -> None:
    """The driver found the socket closed before writing: the command was surely not
    executed, so the drop neither fails it as unknown nor asks for a fresh token; it goes out
    on the next connection."""
    cws = Cws()
    cws.open()
    command = _order(check_duplicates=False)
    cws.submit(command)
    frames = cws.sent()
    cws.conn.not_written(frames)
    cws.lose()
    assert cws.events() == []
    assert cws.conn.unknown == 0 and cws.conn.frames_sent == 0
    plan = cws.open("t2")
    assert not plan.fresh
    assert cws.sent() == frames
    cws.reply(command.guid)
    (ack,) = cws.events()
    assert isinstance(ack, CommandAcked)


def test_a_resend_never_written_stays_ambiguous() -> None:
    """A command already ambiguous from an earlier drop stays so when its re-send was not
    written: a refusal of the next re-send is still "unknown", never a plain rejection."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command)
    cws.sent()
    cws.lose()
    cws.open("t2")
    cws.conn.not_written(cws.sent())
    cws.lose()
    cws.open("t3")
    assert cws.sent() == [encode_command(command)]
    cws.reply(command.guid, code=400)
    (event,) = cws.events()
    assert isinstance(event, CommandFailed) and isinstance(event.error, OrderStatusUnknown)


def test_a_reset_under_a_command_asks_for_a_fresh_token_next_time() -> None:
    """After a connection reset with a command in flight, the next authorize needs a token
    issued now (the old one may reset again); once used, the demand is met."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command)
    cws.lose()
    plan = cws.open("fresh")
    assert plan == AuthPlan(TokenChoice.FRESH, fresh=True)
    assert cws.conn.fresh_authorizations == 1
    cws.reply(command.guid)
    cws.events()
    cws.lose()  # nothing in flight this time
    assert cws.conn.authorize_plan() == AuthPlan(TokenChoice.CURRENT)


def test_giving_up_says_unknown_for_what_may_have_executed() -> None:
    """When the reconnects run out, sent commands are unknown and queued ones get the error."""
    cws = Cws()
    cws.open()
    sent = _order()
    cws.submit(sent)
    cws.lose()
    queued = _order()
    cws.submit(queued)
    cws.events()
    error = ConnectError("could not connect")
    cws.conn.give_up(error)
    events = {e.guid: e.error for e in cws.events()}
    assert isinstance(events[sent.guid], OrderStatusUnknown)
    assert events[queued.guid] is error
    assert cws.conn.state is CommandState.IDLE


def test_closing_fails_everything_waiting() -> None:
    """Close: sent commands are unknown, never-sent ones InvalidState; new ones are refused."""
    cws = Cws()
    cws.open()
    sent = _order()
    cws.submit(sent)
    cws.lose()
    cws.conn.connecting()
    queued = _order()
    cws.submit(queued)
    cws.events()
    cws.conn.start_closing()
    cws.lose()
    assert cws.conn.reconnects == 1  # a loss while closing is not a reconnect
    cws.conn.close()
    events = {e.guid: e.error for e in cws.events()}
    assert isinstance(events[sent.guid], OrderStatusUnknown)
    assert isinstance(events[queued.guid], InvalidState)
    assert cws.conn.state is CommandState.CLOSED
    with pytest.raises(InvalidState):
        cws.submit(_order())


# -- timeouts -------------------------------------------------------------------------------------


def test_a_command_never_sent_times_out_as_not_executed() -> None:
    """No authorized connection in time: TransportTimeout, counted as not sent."""
    cws = Cws()
    pending = cws.submit(_order())
    error = cws.conn.expire(pending, 5.0, "connect failed")
    assert isinstance(error, TransportTimeout) and "was not executed" in str(error)
    assert "connect failed" in str(error)
    assert cws.conn.not_sent == 1 and cws.conn.pending() == 0


def test_a_command_sent_without_a_reply_times_out_as_unknown() -> None:
    """Sent but unanswered: OrderStatusUnknown; its late reply is then counted, not delivered."""
    cws = Cws()
    cws.open()
    command = _order()
    pending = cws.submit(command)
    error = cws.conn.expire(pending, 5.0, "")
    assert isinstance(error, OrderStatusUnknown) and cws.conn.unknown == 1
    cws.reply(command.guid)
    assert cws.events() == [] and cws.conn.late_replies == 1


def test_discard_forgets_only_its_own_command() -> None:
    """A caller that goes away forgets its command, never a later one with the same guid."""
    cws = Cws()
    cws.open()
    first = cws.submit(_order("g"))
    cws.reply("g")
    cws.events()
    second = cws.submit(_order("g"))
    cws.conn.discard(first)
    assert cws.conn.pending() == 1
    cws.conn.discard(second)
    assert cws.conn.pending() == 0


# -- 401 and tokens -------------------------------------------------------------------------------


def test_a_401_to_a_command_reauthorizes_and_resends_then_token_rejected() -> None:
    """A 401 holds new commands, re-authorizes with a refreshed token (the refused one is
    current) and re-sends the same frame, AUTH_RETRIES times; then TokenRejected."""
    cws = Cws()
    cws.open("t1")
    command = _order()
    pending = cws.submit(command)
    (frame,) = cws.sent()
    for attempt in range(1, AUTH_RETRIES + 1):
        cws.reply(command.guid, 401)
        assert cws.events() == [ReauthorizeNeeded()]
        assert pending.needs_auth and not pending.maybe_executed
        later = _order()
        cws.submit(later)  # held until the connection is authorized again
        assert cws.sent() == []
        plan = cws.conn.reauthorization(f"t{attempt}")
        assert plan == AuthPlan(TokenChoice.REFRESH, hold=True)
        cws.conn.reauthorized(f"t{attempt + 1}", plan, 1.0)
        assert cws.sent() == [frame, encode_command(later)]
        assert cws.conn.reauthorization(f"t{attempt + 1}") is None  # up to date
        cws.reply(later.guid)
        cws.events()
    cws.reply(command.guid, 401)
    (event,) = cws.events()
    assert isinstance(event, CommandFailed) and isinstance(event.error, TokenRejected)
    assert cws.conn.reauthorizations == AUTH_RETRIES and cws.conn.resends == AUTH_RETRIES


def test_a_command_refused_with_401_is_not_executed_when_the_connection_drops() -> None:
    """A 401 means not executed: a drop while it waits for authorize does not make it ambiguous."""
    cws = Cws()
    cws.open()
    command = _order()
    pending = cws.submit(command)
    cws.reply(command.guid, 401)
    cws.lose()
    assert not pending.ambiguous
    assert cws.conn.authorize_plan().choice is TokenChoice.CURRENT
    error = AuthError("no token")
    cws.conn.give_up(error)
    assert cws.events()[-1] == CommandFailed(command.guid, error)


def test_a_new_token_reauthorizes_the_open_connection() -> None:
    """Only a token other than the connection's own asks for authorize; commands keep flowing."""
    cws = Cws()
    cws.conn.token_rotated("t1")
    assert cws.events() == []  # not open
    cws.open("t1")
    cws.conn.token_rotated("t1")
    assert cws.events() == []
    cws.conn.token_rotated("t2")
    assert cws.events() == [ReauthorizeNeeded()]
    plan = cws.conn.reauthorization("t2")
    assert plan == AuthPlan(TokenChoice.CURRENT)
    command = _order()
    cws.submit(command)  # not held: a rotation is no reason to wait
    assert cws.sent() == [encode_command(command)]
    cws.conn.reauthorized("t2", plan, 1.0)
    assert cws.conn.reauthorization("t2") is None


def test_the_idle_threshold_triggers_a_fresh_reauthorization_first() -> None:
    """A command after reauth_after_idle seconds without one waits for authorize with a token
    issued now; below the threshold it goes straight out."""
    cws = Cws(reauth_after_idle=600.0)
    cws.open(now=0.0)
    early = _order()
    cws.submit(early, now=599.0)
    assert cws.sent() == [encode_command(early)]
    late = _order()
    cws.submit(late, now=1199.5)
    assert cws.sent() == [] and cws.events() == [ReauthorizeNeeded()]
    assert cws.conn.idle_reauthorizations == 1
    plan = cws.conn.reauthorization("t1")
    assert plan == AuthPlan(TokenChoice.FRESH, fresh=True, hold=True)
    cws.conn.reauthorized("fresh", plan, 1200.0)
    assert cws.sent() == [encode_command(late)]
    assert cws.conn.fresh_authorizations == 1
    assert cws.conn.reauthorization("fresh") is None


def test_the_idle_rule_can_be_turned_off() -> None:
    """reauth_after_idle=None: a command after any pause goes straight out."""
    cws = Cws(reauth_after_idle=None)
    cws.open(now=0.0)
    command = _order()
    cws.submit(command, now=1e9)
    assert cws.sent() == [encode_command(command)]


def test_a_refused_authorize_is_retried_once_with_a_refreshed_token() -> None:
    """401 to authorize: retry at once with a forced refresh; a second 401 is final."""
    cws = Cws()
    cws.conn.connecting()
    assert cws.conn.open_failed(TokenRejected(401, "expired")) is Retry.NOW
    cws.lose()
    cws.conn.connecting()
    assert cws.conn.authorize_plan().choice is TokenChoice.REFRESH
    assert cws.conn.open_failed(TokenRejected(401, "expired")) is Retry.NEVER


def test_an_accepted_authorize_resets_the_refusals() -> None:
    """After a refusal then a success, a later refusal is retried again."""
    cws = Cws()
    cws.conn.connecting()
    cws.conn.open_failed(TokenRejected(401, "expired"))
    assert cws.open().choice is TokenChoice.REFRESH
    cws.lose()
    cws.conn.connecting()
    assert cws.conn.open_failed(TokenRejected(401, "expired")) is Retry.NOW


def test_open_failures_are_classified() -> None:
    """No token at all is final; a network failure waits for the backoff and is counted."""
    cws = Cws()
    assert cws.conn.open_failed(AuthError("refresh token refused")) is Retry.NEVER
    assert cws.conn.open_failed(InvalidState("closed")) is Retry.NEVER
    assert cws.conn.open_failed(ConnectError("refused")) is Retry.LATER
    assert cws.conn.open_failed(OSError("reset")) is Retry.LATER
    assert cws.conn.connect_failures == 2


def test_latency_is_measured_from_the_last_send() -> None:
    """A round trip is the time from the (last) send to the reply, in microseconds."""
    cws = Cws()
    cws.open()
    command = _order()
    cws.submit(command, now=10.0)
    cws.reply(command.guid, now=10.0025)
    assert list(cws.conn.latencies) == [2500]


# -- a state machine: a fake server behind random drops -------------------------------------------


class CwsMachine(RuleBasedStateMachine):
    """Commands, replies and drops in any order against a server that executes a guid once
    (checkDuplicates) and may execute a command and then lose the connection before its reply:
    nothing executes twice, every caller learns its outcome once and truthfully."""

    def __init__(self) -> None:
        super().__init__()
        self.cws = Cws(reauth_after_idle=None)
        self.now = 0.0
        self.n = 0
        self.token = "t"  # the token source's current token
        self.commands: dict[bytes, CreateLimit] = {}
        self.executed: dict[str, int] = {}  # guid -> executions on the server
        self.unread: list[str] = []  # guids sent on the open connection, not processed yet
        self.outcomes: dict[str, Any] = {}
        self.open = False

    def _pump(self) -> None:
        while True:
            frames, events = self.cws.sent(), self.cws.events()
            if not frames and not events:
                return
            for frame in frames:
                assert self.open and self.cws.conn.is_ready
                self.unread.append(self.commands[frame].guid)
            for event in events:
                if isinstance(event, CommandAcked | CommandFailed):
                    assert event.guid not in self.outcomes, "an outcome given twice"
                    self.outcomes[event.guid] = event
                elif isinstance(event, ReauthorizeNeeded) and self.open:
                    plan = self.cws.conn.reauthorization(self.token)
                    while plan is not None:
                        if plan.choice is not TokenChoice.CURRENT:
                            self.token += "+"
                        self.cws.conn.reauthorized(self.token, plan, self.now)
                        plan = self.cws.conn.reauthorization(self.token)

    def _execute(self, guid: str) -> None:
        command = next(c for c in self.commands.values() if c.guid == guid)
        if command.check_duplicates and self.executed.get(guid):
            return  # docs/protocol.md §6.1: a guid is executed once
        self.executed[guid] = self.executed.get(guid, 0) + 1

    @rule(check=st.booleans())
    def submit(self, check: bool) -> None:
        self.n += 1
        command = _order(f"m{self.n}", check_duplicates=check)
        self.commands[encode_command(command)] = command
        self.cws.submit(command, self.now)
        self._pump()

    @rule()
    def connect(self) -> None:
        if not self.open:
            self.now += 1
            self.open = True
            self.cws.open(self.token, self.now)
            self._pump()

    @rule(data=st.data(), code=st.sampled_from([200, 200, 401, 400]))
    def answer(self, data: st.DataObject, code: int) -> None:
        if not self.open or not self.unread:
            return
        guid = data.draw(st.sampled_from(self.unread))
        self.unread.remove(guid)
        if code == 200:
            self._execute(guid)
        # 401: authorization is checked first, nothing runs; 400: refused (a fresh guid is not
        # executed; a duplicate stays executed once).
        self.cws.reply(guid, code, self.now)
        self._pump()

    @rule(data=st.data())
    def execute_then_drop(self, data: st.DataObject) -> None:
        if not self.open or not self.unread:
            return
        self._execute(data.draw(st.sampled_from(self.unread)))
        self.drop()

    @rule()
    def drop(self) -> None:
        if self.open:
            self.open = False
            self.unread.clear()
            self.cws.lose()
            self._pump()

    @invariant()
    def nothing_executes_twice(self) -> None:
        assert all(n <= 1 for n in self.executed.values()), self.executed

    @invariant()
    def outcomes_are_true(self) -> None:
        for guid, event in self.outcomes.items():
            done = self.executed.get(guid, 0)
            if isinstance(event, CommandAcked):
                assert done == 1
            elif isinstance(event.error, OrderRejected | TokenRejected):
                assert done == 0, "told 'rejected' about a command that executed"

    @invariant()
    def a_ready_connection_has_nothing_queued(self) -> None:
        if self.cws.conn.is_ready:
            assert self.cws.conn.queued() == 0


def test_command_state_machine() -> None:
    """Submits, replies (200/401/400) and drops in any order: exactly once, one true outcome
    per command."""
    run_state_machine_as_test(CwsMachine, settings=settings(max_examples=200, deadline=None))
