"""The subscription registry: transitions, de-duplication, limits, restore, invariants."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from alorws.errors import (
    InvalidArgumentError,
    InvalidState,
    ServerLimitExceeded,
    ServerRejected,
    SubscriptionLimitError,
    TokenRejected,
)
from alorws.protocol.registry import (
    _TRANSITIONS,
    MAX_GUID_LENGTH,
    GuidFactory,
    StatusKind,
    Subscription,
    SubscriptionRegistry,
    SubscriptionState as S,
)


class Req(NamedTuple):
    """A stand-in request: hashable, equal when the subscription is the same."""

    opcode: str
    symbol: str


Q1 = Req("QuotesSubscribe", "SBER")
Q2 = Req("QuotesSubscribe", "GAZP")
Q3 = Req("QuotesSubscribe", "LKOH")

Registry = SubscriptionRegistry[Req, int]


def make(**kwargs: object) -> Registry:
    counter = itertools.count(1)
    kwargs.setdefault("guid_factory", lambda: f"g{next(counter)}")
    return SubscriptionRegistry(**kwargs)  # type: ignore[arg-type]


def in_state(state: S, conn: int = 1) -> tuple[Registry, Subscription[Req, int]]:
    """A registry holding one subscription to Q1 on ``conn``, driven into ``state``."""
    reg = make()
    sub = reg.subscribe(Q1, conn).subscription
    if state is S.ACTIVE:
        reg.on_status(sub.guid, 200)
    elif state is S.RESTORING:
        reg.on_status(sub.guid, 200)
        reg.connection_lost(conn)
    elif state is S.CLOSING:
        reg.on_status(sub.guid, 200)
        assert reg.unsubscribe(sub.guid)
    elif state is S.FAILED:
        reg.on_status(sub.guid, 400, "bad")
    elif state is S.CLOSED:
        reg.on_status(sub.guid, 200)
        reg.unsubscribe(sub.guid)
        reg.on_status(sub.guid, 200)
    assert sub.state is state
    return reg, sub


def state_of(sub: Subscription[Req, int]) -> S:
    """``sub.state``, read afresh (keeps mypy from narrowing it across calls)."""
    return sub.state


# -- the table ---------------------------------------------------------------------------------


def test_table_lists_exactly_the_documented_transitions() -> None:
    """The transition table holds the documented moves and nothing else."""
    moves = {
        (old.name, ev.name, new.name)
        for old, evs in _TRANSITIONS.items()
        for ev, new in evs.items()
    }
    assert moves == {
        ("PENDING", "CONFIRM", "ACTIVE"),
        ("PENDING", "REJECT", "FAILED"),
        ("PENDING", "RELEASE", "CLOSING"),
        ("PENDING", "LOSE", "RESTORING"),
        ("ACTIVE", "RELEASE", "CLOSING"),
        ("ACTIVE", "LOSE", "RESTORING"),
        ("RESTORING", "RESEND", "PENDING"),
        ("RESTORING", "MOVE", "RESTORING"),
        ("RESTORING", "RELEASE", "CLOSED"),
        ("CLOSING", "CONFIRM", "CLOSED"),
        ("CLOSING", "REJECT", "CLOSED"),
        ("CLOSING", "LOSE", "CLOSED"),
        ("FAILED", "RELEASE", "CLOSED"),
    }
    assert set(_TRANSITIONS) == set(S)


# -- legal transitions -------------------------------------------------------------------------


def test_subscribe_creates_pending_and_asks_to_send() -> None:
    """A first subscribe creates a PENDING entry with a fresh guid and send=True."""
    reg = make()
    res = reg.subscribe(Q1, 1)
    assert res.send
    sub = res.subscription
    assert (sub.guid, sub.request, sub.connection_id, sub.state) == ("g1", Q1, 1, S.PENDING)
    assert (sub.refcount, sub.error, sub.restore_count) == (1, None, 0)
    assert reg.get("g1") is sub and reg.find(Q1) is sub
    assert reg.counts() == {1: 1} and reg.total() == 1


def test_pending_to_active_on_200() -> None:
    """A 200 reply confirms a PENDING subscription."""
    reg = make()
    sub = reg.subscribe(Q1, 1).subscription
    out = reg.on_status(sub.guid, 200, "Handled successfully")
    assert (out.kind, out.subscription, out.error) == (StatusKind.CONFIRMED, sub, None)
    assert sub.state is S.ACTIVE


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (400, ServerRejected),
        (401, TokenRejected),
        (429, ServerLimitExceeded),
        (500, ServerRejected),
    ],
)
def test_pending_to_failed_on_rejection(code: int, cls: type[ServerRejected]) -> None:
    """A non-200 reply fails a PENDING subscription with the most specific error class."""
    reg = make()
    sub = reg.subscribe(Q1, 1).subscription
    out = reg.on_status(sub.guid, code, "nope")
    assert out.kind is StatusKind.REJECTED and out.subscription is sub
    assert type(out.error) is cls and sub.error is out.error
    assert (out.error.http_code, out.error.message, out.error.request_guid) == (code, "nope", "g1")
    assert sub.state is S.FAILED


def test_failed_frees_the_slot_and_the_request() -> None:
    """A FAILED entry stops counting, leaves the de-dup index, stays readable, is not routable."""
    reg, sub = in_state(S.FAILED)
    assert reg.counts() == {} and reg.total() == 0
    assert reg.find(Q1) is None and reg.get(sub.guid) is sub
    assert not reg.is_routable(sub.guid)
    again = reg.subscribe(Q1, 1)
    assert again.send and again.subscription.guid != sub.guid


def test_failed_to_closed_on_last_unsubscribe() -> None:
    """Releasing a FAILED entry closes it at once with nothing to send."""
    reg, sub = in_state(S.FAILED)
    assert reg.unsubscribe(sub.guid) is False
    assert sub.state is S.CLOSED and reg.get(sub.guid) is None


def test_failed_with_two_holders_closes_after_both_release() -> None:
    """A FAILED entry shared by two holders closes only when both release it."""
    reg = make()
    sub = reg.subscribe(Q1, 1).subscription
    reg.subscribe(Q1, 1)
    reg.on_status(sub.guid, 401, "Invalid JWT token!")
    assert reg.unsubscribe(sub.guid) is False and sub.state is S.FAILED
    assert reg.unsubscribe(sub.guid) is False and state_of(sub) is S.CLOSED


def test_active_to_closing_to_closed() -> None:
    """Unsubscribing an ACTIVE entry asks to send; the reply closes and forgets it."""
    reg, sub = in_state(S.ACTIVE)
    assert reg.unsubscribe(sub.guid) is True
    assert sub.state is S.CLOSING and sub.refcount == 0
    assert reg.count(1) == 1, "the server holds it until it answers"
    assert not reg.is_routable(sub.guid) and reg.find(Q1) is None
    out = reg.on_status(sub.guid, 200)
    assert (out.kind, out.subscription, out.error) == (StatusKind.CLOSED, sub, None)
    assert state_of(sub) is S.CLOSED and reg.get(sub.guid) is None and reg.counts() == {}


def test_closing_to_closed_on_rejected_unsubscribe() -> None:
    """A non-200 reply to an unsubscribe still closes it and reports the error."""
    reg, sub = in_state(S.CLOSING)
    out = reg.on_status(sub.guid, 401, "Invalid JWT token!")
    assert out.kind is StatusKind.CLOSED and isinstance(out.error, TokenRejected)
    assert sub.state is S.CLOSED


def test_pending_to_closing_then_both_replies() -> None:
    """Unsubscribing before the confirmation: the first reply closes it, the second is unknown."""
    reg = make()
    sub = reg.subscribe(Q1, 1).subscription
    assert reg.unsubscribe(sub.guid) is True and sub.state is S.CLOSING
    assert reg.on_status(sub.guid, 200).kind is StatusKind.CLOSED
    assert reg.on_status(sub.guid, 200).kind is StatusKind.UNKNOWN


def test_connection_lost_moves_entries() -> None:
    """connection_lost: PENDING/ACTIVE -> RESTORING, CLOSING -> CLOSED, FAILED untouched."""
    reg = make()
    pending = reg.subscribe(Q1, 1).subscription
    active = reg.subscribe(Q2, 1).subscription
    reg.on_status(active.guid, 200)
    closing = reg.subscribe(Q3, 1).subscription
    reg.unsubscribe(closing.guid)
    failed = reg.subscribe(Req("Bars", "SBER"), 1).subscription
    reg.on_status(failed.guid, 400)
    other = reg.subscribe(Req("Bars", "GAZP"), 2).subscription

    lost = reg.connection_lost(1)

    assert lost == [pending, active]
    assert (pending.state, active.state) == (S.RESTORING, S.RESTORING)
    assert closing.state is S.CLOSED and reg.get(closing.guid) is None
    assert failed.state is S.FAILED and other.state is S.PENDING
    assert reg.counts() == {1: 2, 2: 1}
    assert reg.is_routable(pending.guid), "data read before the loss is still genuine"
    assert reg.connection_lost(1) == [], "a second call changes nothing"


def test_restore_plan_keeps_guids_and_order() -> None:
    """restore_plan lists the RESTORING entries of a connection with their guids, in order."""
    reg = make()
    subs = [reg.subscribe(Req("Q", str(i)), 1).subscription for i in range(5)]
    reg.subscribe(Req("Q", "x"), 2)
    for sub in subs[::2]:
        reg.on_status(sub.guid, 200)
    reg.connection_lost(1)
    plan = reg.restore_plan(1)
    assert [s.guid for s in plan] == ["g1", "g2", "g3", "g4", "g5"]
    assert reg.restore_plan(2) == []


def test_restoring_to_pending_to_active() -> None:
    """mark_resent makes a RESTORING entry PENDING; a 200 reply brings it back to ACTIVE."""
    reg, sub = in_state(S.RESTORING)
    reg.mark_resent(sub.guid)
    assert sub.state is S.PENDING and sub.restore_count == 1 and sub.guid == "g1"
    assert reg.restore_plan(1) == []
    assert reg.on_status(sub.guid, 200).kind is StatusKind.CONFIRMED
    assert state_of(sub) is S.ACTIVE


def test_resend_all_marks_the_whole_plan_resent_in_order() -> None:
    """resend_all is restore_plan with each entry marked resent: PENDING, restore_count bumped,
    original guids and order; other connections and other states are left alone."""
    reg = make()
    subs = [reg.subscribe(Req("Q", str(i)), 1).subscription for i in range(4)]
    other = reg.subscribe(Req("Q", "x"), 2).subscription
    reg.on_status(subs[1].guid, 200)
    reg.on_status(subs[3].guid, 400)  # FAILED: not restored
    reg.connection_lost(1)
    reg.connection_lost(2)
    plan = reg.resend_all(1)
    assert [s.guid for s in plan] == ["g1", "g2", "g3"]
    assert all(s.state is S.PENDING and s.restore_count == 1 for s in plan)
    assert subs[3].state is S.FAILED and other.state is S.RESTORING
    assert reg.resend_all(1) == [] and reg.restore_plan(1) == []
    assert reg.counts() == {1: 3, 2: 1}
    assert [s.guid for s in reg.resend_all(2)] == [other.guid]


def test_restore_rejected_fails() -> None:
    """A re-sent subscription rejected by the server (e.g. 401) becomes FAILED."""
    reg, sub = in_state(S.RESTORING)
    reg.mark_resent(sub.guid)
    out = reg.on_status(sub.guid, 401, "Invalid JWT token!")
    assert out.kind is StatusKind.REJECTED and isinstance(out.error, TokenRejected)


def test_restoring_to_restoring_on_move() -> None:
    """move re-shards a RESTORING entry and updates both connections' counts."""
    reg, sub = in_state(S.RESTORING)
    reg.move(sub.guid, 7)
    assert sub.state is S.RESTORING and sub.connection_id == 7
    assert reg.counts() == {7: 1}
    assert reg.restore_plan(1) == [] and reg.restore_plan(7) == [sub]
    reg.move(sub.guid, 7)
    assert reg.counts() == {7: 1}, "moving onto its own connection is a no-op"


def test_move_respects_the_limit() -> None:
    """move onto a full connection raises and moves nothing."""
    reg = make(max_per_connection=1)
    sub = reg.subscribe(Q1, 1).subscription
    reg.subscribe(Q2, 2)
    reg.connection_lost(1)
    with pytest.raises(SubscriptionLimitError, match="connection 2 already holds 1"):
        reg.move(sub.guid, 2)
    assert sub.connection_id == 1 and reg.counts() == {1: 1, 2: 1}


def test_unsubscribe_during_restoring_closes_directly() -> None:
    """Releasing a RESTORING entry closes it with nothing to send."""
    reg, sub = in_state(S.RESTORING)
    assert reg.unsubscribe(sub.guid) is False
    assert sub.state is S.CLOSED and reg.counts() == {} and reg.restore_plan(1) == []


def test_lost_twice_before_the_reply() -> None:
    """A re-sent entry lost again before its reply goes back to RESTORING."""
    reg, sub = in_state(S.RESTORING)
    reg.mark_resent(sub.guid)
    assert reg.connection_lost(1) == [sub]
    assert sub.state is S.RESTORING and reg.restore_plan(1) == [sub]


# -- illegal transitions -----------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE, S.CLOSING, S.FAILED])
def test_mark_resent_illegal_unless_restoring(state: S) -> None:
    """mark_resent outside RESTORING raises InvalidState and changes nothing."""
    reg, sub = in_state(state)
    before = (sub.state, reg.counts())
    with pytest.raises(InvalidState, match=f"cannot mark_resent .* in state {state.name}"):
        reg.mark_resent(sub.guid)
    assert (sub.state, reg.counts()) == before and sub.restore_count == 0


@pytest.mark.parametrize("state", [S.PENDING, S.ACTIVE, S.CLOSING, S.FAILED])
def test_move_illegal_unless_restoring(state: S) -> None:
    """move outside RESTORING raises InvalidState and changes nothing."""
    reg, sub = in_state(state)
    with pytest.raises(InvalidState, match="allowed only in RESTORING"):
        reg.move(sub.guid, 2)
    assert sub.connection_id == 1 and sub.state is state


def test_unsubscribe_closing_is_illegal() -> None:
    """Unsubscribing a CLOSING entry (no references left) raises InvalidState."""
    reg, sub = in_state(S.CLOSING)
    with pytest.raises(InvalidState, match="cannot unsubscribe .* in state CLOSING"):
        reg.unsubscribe(sub.guid)
    assert sub.state is S.CLOSING and sub.refcount == 0


@pytest.mark.parametrize("call", ["unsubscribe", "mark_resent", "move"])
def test_calls_on_closed_or_unknown_guids_are_illegal(call: str) -> None:
    """Caller events on a CLOSED or never-seen guid raise InvalidState."""
    reg, sub = in_state(S.CLOSED)
    for guid in (sub.guid, "nope"):
        with pytest.raises(InvalidState, match="no subscription with guid"):
            if call == "move":
                reg.move(guid, 2)
            else:
                getattr(reg, call)(guid)


def test_closed_is_terminal() -> None:
    """No event leaves CLOSED."""
    assert _TRANSITIONS[S.CLOSED] == {}


# -- status replies that change nothing ---------------------------------------------------------


@pytest.mark.parametrize("state", [S.ACTIVE, S.RESTORING, S.FAILED])
@pytest.mark.parametrize("code", [200, 400])
def test_unexpected_reply_is_ignored(state: S, code: int) -> None:
    """A reply an ACTIVE, RESTORING or FAILED entry does not expect changes nothing."""
    reg, sub = in_state(state)
    error = sub.error
    out = reg.on_status(sub.guid, code, "dup")
    assert out.kind is StatusKind.IGNORED and out.subscription is sub
    assert (out.error is None) == (code == 200)
    assert sub.state is state and sub.error is error


def test_unknown_guid_reply() -> None:
    """A reply for a guid the registry never issued, or a ping guid, is UNKNOWN."""
    reg = make()
    ping = reg.new_guid()
    for guid in ("stranger", ping):
        out = reg.on_status(guid, 200, "pong")
        assert (out.kind, out.subscription, out.error) == (StatusKind.UNKNOWN, None, None)


# -- de-duplication and refcounts --------------------------------------------------------------


def test_equal_requests_share_one_subscription() -> None:
    """Equal requests share one server subscription, whatever connection is asked for."""
    reg = make()
    first = reg.subscribe(Q1, 1)
    second = reg.subscribe(Req("QuotesSubscribe", "SBER"), 2)
    assert not second.send and second.subscription is first.subscription
    assert first.subscription.refcount == 2 and first.subscription.connection_id == 1
    assert reg.counts() == {1: 1}


@pytest.mark.parametrize("state", [S.ACTIVE, S.RESTORING])
def test_dedup_in_live_states(state: S) -> None:
    """A subscribe joins an ACTIVE or RESTORING entry without sending."""
    reg, sub = in_state(state)
    res = reg.subscribe(Q1, 1)
    assert not res.send and res.subscription is sub and sub.refcount == 2


def test_refcount_releases() -> None:
    """Only the last of n releases asks to send an unsubscribe."""
    reg = make()
    sub = reg.subscribe(Q1, 1).subscription
    for _ in range(2):
        reg.subscribe(Q1, 1)
    assert [reg.unsubscribe(sub.guid) for _ in range(3)] == [False, False, True]
    assert sub.state is S.CLOSING


def test_subscribe_while_closing_creates_a_new_subscription() -> None:
    """A subscribe for a request being cancelled creates a new entry with a new guid."""
    reg, old = in_state(S.CLOSING)
    res = reg.subscribe(Q1, 1)
    assert res.send and res.subscription.guid != old.guid
    assert reg.count(1) == 2


# -- limits ------------------------------------------------------------------------------------


def test_per_connection_limit_raises_before_creating() -> None:
    """The limit raises before anything is created; dedup and other connections still work."""
    reg = make(max_per_connection=2)
    reg.subscribe(Q1, 1)
    reg.subscribe(Q2, 1)
    before = (reg.counts(), reg.total(), reg.subscriptions())
    with pytest.raises(SubscriptionLimitError, match=r"connection 1 .* \(2, docs/protocol.md §7\)"):
        reg.subscribe(Q3, 1)
    assert (reg.counts(), reg.total(), reg.subscriptions()) == before
    assert reg.find(Q3) is None and reg.room(1) == 0
    assert not reg.subscribe(Q1, 1).send
    assert reg.subscribe(Q3, 2).send


def test_guid_not_consumed_by_a_refused_subscribe() -> None:
    """A refused subscribe does not draw a guid."""
    reg = make(max_per_connection=1)
    reg.subscribe(Q1, 1)
    with pytest.raises(SubscriptionLimitError):
        reg.subscribe(Q2, 1)
    assert reg.subscribe(Q2, 2).subscription.guid == "g2"


def test_closing_counts_and_failed_does_not() -> None:
    """CLOSING entries hold their slot until the reply; FAILED ones free it."""
    reg, _ = in_state(S.CLOSING)
    reg._max_per_connection = 1
    with pytest.raises(SubscriptionLimitError):
        reg.subscribe(Q2, 1)
    reg, _ = in_state(S.FAILED)
    reg._max_per_connection = 1
    assert reg.subscribe(Q2, 1).send


def test_total_limit() -> None:
    """max_total caps all connections together and says what to do."""
    reg = make(max_total=2)
    reg.subscribe(Q1, 1)
    reg.subscribe(Q2, 2)
    assert reg.room(3) == 0
    with pytest.raises(SubscriptionLimitError, match="most allowed in total .*unsubscribe first"):
        reg.subscribe(Q3, 3)
    assert reg.counts() == {1: 1, 2: 1}


def test_room_and_counts() -> None:
    """room() reflects both limits; counts() only lists connections holding something."""
    reg = make(max_per_connection=3, max_total=4)
    reg.subscribe(Q1, 1)
    reg.subscribe(Q2, 1)
    assert (reg.room(1), reg.room(2)) == (1, 2)
    assert reg.counts() == {1: 2}


@pytest.mark.parametrize("kwargs", [{"max_per_connection": 0}, {"max_total": 0}])
def test_bad_limits(kwargs: dict[str, int]) -> None:
    """Limits below 1 are refused."""
    with pytest.raises(InvalidArgumentError):
        SubscriptionRegistry(**kwargs)  # type: ignore[arg-type]


# -- guids, routing, repr ----------------------------------------------------------------------


def test_default_guids_are_short_and_unique() -> None:
    """The default factory gives short, unique, base-62 guids with a per-registry prefix."""
    reg: Registry = SubscriptionRegistry()
    guids = [reg.subscribe(Req("Q", str(i)), i % 3).subscription.guid for i in range(200)]
    guids += [reg.new_guid() for _ in range(100)]
    assert len(set(guids)) == len(guids)
    assert all(len(g) <= MAX_GUID_LENGTH for g in guids)
    assert len({g.split("-")[0] for g in guids}) == 1
    other: Registry = SubscriptionRegistry()
    assert other.new_guid().split("-")[0] != guids[0].split("-")[0]


def test_guid_factory_counter() -> None:
    """GuidFactory counts in base 62 after its prefix."""
    f = GuidFactory("ab")
    got = [f() for _ in range(63)]
    assert got[:3] == ["ab-1", "ab-2", "ab-3"]
    assert got[9:11] == ["ab-A", "ab-B"]
    assert got[59:62] == ["ab-y", "ab-z", "ab-10"]


@pytest.mark.parametrize("prefix", ["", "x" * 33, "bad prefix", "é"])
def test_guid_factory_bad_prefix(prefix: str) -> None:
    """GuidFactory refuses prefixes that are empty, long or have odd characters."""
    with pytest.raises(InvalidArgumentError, match="prefix"):
        GuidFactory(prefix)


@pytest.mark.parametrize("guid", ["", "x" * (MAX_GUID_LENGTH + 1), "g1", "a b\n", 'a"b', "é"])
def test_bad_guid_factory_output(guid: str) -> None:
    """A factory giving an empty, long, odd or reused guid is refused; nothing is created."""
    reg: Registry = SubscriptionRegistry(guid_factory=iter(["g1", guid]).__next__)
    reg.subscribe(Q1, 1)
    with pytest.raises(InvalidArgumentError, match="guid_factory"):
        reg.subscribe(Q2, 1)
    assert reg.counts() == {1: 1} and reg.find(Q2) is None


@pytest.mark.parametrize(
    ("state", "routable"),
    [(S.PENDING, True), (S.ACTIVE, True), (S.RESTORING, True), (S.CLOSING, False),
     (S.FAILED, False), (S.CLOSED, False)],
)  # fmt: skip
def test_is_routable(state: S, routable: bool) -> None:
    """Data is routable for live entries only."""
    reg, sub = in_state(state)
    assert reg.is_routable(sub.guid) is routable
    assert not reg.is_routable("unknown")


def test_repr_shows_no_request_content() -> None:
    """A subscription's repr names the request's type, not its fields (which could hold secrets)."""
    reg = make()
    sub = reg.subscribe(Req("QuotesSubscribe", "eyJhbGciOiJFUzI1NiJ9.secret"), 1).subscription
    text = repr(sub)
    assert "secret" not in text and "eyJ" not in text
    assert "g1" in text and "PENDING" in text and "Req" in text


# -- random operation sequences ----------------------------------------------------------------

REQUESTS = [Req("Q", s) for s in "ABCDEF"]
CONNS = [0, 1, 2]
PER_CONN, TOTAL = 3, 7


class RegistryMachine(RuleBasedStateMachine):
    """Drives random operations and checks the registry's invariants after each."""

    guids = Bundle("guids")

    def __init__(self) -> None:
        super().__init__()
        self.reg: Registry = SubscriptionRegistry(max_per_connection=PER_CONN, max_total=TOTAL)
        self.issued: set[str] = set()
        self.holders: dict[str, int] = {}  # guid -> references we hold

    def snapshot(self) -> object:
        subs = self.reg.subscriptions()
        return [(s.guid, s.state, s.connection_id, s.refcount) for s in subs], self.reg.counts()

    @rule(target=guids, request=st.sampled_from(REQUESTS), conn=st.sampled_from(CONNS))
    def subscribe(self, request: Req, conn: int) -> str | MultipleResults[str]:
        before = self.snapshot()
        live = self.reg.find(request)
        try:
            res = self.reg.subscribe(request, conn)
        except SubscriptionLimitError:
            assert live is None and self.snapshot() == before
            return multiple()
        sub = res.subscription
        assert res.send == (live is None)
        if res.send:
            assert sub.guid not in self.issued, "a guid was issued twice"
            self.issued.add(sub.guid)
        self.holders[sub.guid] = self.holders.get(sub.guid, 0) + 1
        return sub.guid

    @rule(guid=guids, code=st.sampled_from([200, 200, 400, 401, 429]))
    def status(self, guid: str, code: int) -> None:
        self.reg.on_status(guid, code, "m")

    @rule(guid=guids)
    def unsubscribe(self, guid: str) -> None:
        before = self.snapshot()
        sub = self.reg.get(guid)
        try:
            send = self.reg.unsubscribe(guid)
        except InvalidState:
            assert self.snapshot() == before
            assert sub is None or sub.state is S.CLOSING
            return
        assert sub is not None
        self.holders[guid] -= 1
        assert send == (sub.state is S.CLOSING)

    @rule(conn=st.sampled_from(CONNS))
    def lose(self, conn: int) -> None:
        for sub in self.reg.connection_lost(conn):
            assert sub.state is S.RESTORING and sub.connection_id == conn

    @rule(conn=st.sampled_from(CONNS), to=st.sampled_from(CONNS), data=st.data())
    def restore(self, conn: int, to: int, data: st.DataObject) -> None:
        plan = self.reg.restore_plan(conn)
        guids = [s.guid for s in plan]
        assert guids == [s.guid for s in self.reg.subscriptions() if s in plan]
        for sub in plan:
            if data.draw(st.booleans()):
                try:
                    self.reg.move(sub.guid, to)
                except SubscriptionLimitError:
                    assert self.reg.count(to) == PER_CONN and sub.connection_id == conn
            self.reg.mark_resent(sub.guid)
            assert sub.state is S.PENDING

    @rule(conn=st.sampled_from(CONNS))
    def resend_all(self, conn: int) -> None:
        expected = self.reg.restore_plan(conn)
        counts = self.reg.counts()
        assert self.reg.resend_all(conn) == expected
        assert all(sub.state is S.PENDING for sub in expected)
        assert self.reg.restore_plan(conn) == [] and self.reg.counts() == counts

    @rule(guid=guids)
    def mark_resent_anything(self, guid: str) -> None:
        sub = self.reg.get(guid)
        if sub is not None and sub.state is S.RESTORING:
            self.reg.mark_resent(guid)
            return
        before = self.snapshot()
        with pytest.raises(InvalidState):
            self.reg.mark_resent(guid)
        assert self.snapshot() == before

    @invariant()
    def counts_match_a_recount(self) -> None:
        recount: dict[int, int] = {}
        for sub in self.reg.subscriptions():
            if sub.state in (S.PENDING, S.ACTIVE, S.RESTORING, S.CLOSING):
                recount[sub.connection_id] = recount.get(sub.connection_id, 0) + 1
        assert self.reg.counts() == recount
        assert self.reg.total() == sum(recount.values()) <= TOTAL
        assert all(n <= PER_CONN for n in recount.values())

    @invariant()
    def entries_are_consistent(self) -> None:
        subs = self.reg.subscriptions()
        assert len({s.guid for s in subs}) == len(subs)
        live_requests = [s.request for s in subs if s.is_live]
        assert len(set(live_requests)) == len(live_requests), "one live entry per request"
        for sub in subs:
            assert sub.state is not S.CLOSED
            assert self.reg.get(sub.guid) is sub
            assert self.reg.is_routable(sub.guid) == sub.is_live
            if sub.is_live:
                assert sub.refcount >= 1 and self.reg.find(sub.request) is sub
            if sub.state is S.CLOSING:
                assert sub.refcount == 0
            if sub.state is not S.CLOSING:
                assert sub.refcount == self.holders[sub.guid]
            assert (sub.error is not None) == (sub.state is S.FAILED)


def test_random_operation_sequences_keep_invariants() -> None:
    """Random operation sequences keep counts, guids, refcounts and indexes consistent."""
    run_state_machine_as_test(
        RegistryMachine, settings=settings(max_examples=150, stateful_step_count=60, deadline=None)
    )
