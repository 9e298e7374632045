"""The exception tree: classes, attributes, messages that say what to do, no secrets."""

from __future__ import annotations

import pytest

from alorws import errors


def test_every_error_is_an_alor_error() -> None:
    """Every public exception class derives from AlorError."""
    classes = [getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert classes and all(issubclass(c, errors.AlorError) for c in classes)


@pytest.mark.parametrize(
    ("code", "cls", "also"),
    [
        (401, errors.TokenRejected, errors.AuthError),
        (429, errors.ServerLimitExceeded, errors.LimitError),
        (400, errors.ServerRejected, errors.ServerRejected),
        (500, errors.ServerRejected, errors.ServerRejected),
    ],
)
def test_rejection_for_picks_the_specific_class(code: int, cls: type, also: type) -> None:
    """A status code maps to the most specific rejection class, keeping code/message/guid."""
    err = errors.rejection_for(code, "why", "g-1")
    assert type(err) is cls and isinstance(err, also)
    assert (err.http_code, err.message, err.request_guid) == (code, "why", "g-1")
    assert "g-1" in str(err) and str(code) in str(err) and "(" in str(err)


def test_invalid_argument_is_a_value_error_naming_the_field() -> None:
    """InvalidArgumentError is a ValueError and carries the field name."""
    err = errors.InvalidArgumentError("depth", "must be 1..50, got 51")
    assert isinstance(err, ValueError) and err.field == "depth"
    assert str(err) == "depth: must be 1..50, got 51"


def test_frame_error_keeps_a_readable_excerpt() -> None:
    """FrameError shows the start of the frame, even for bytes that are not UTF-8."""
    err = errors.FrameError("bad", b"\xff" + b"x" * 500)
    assert len(err.frame) <= 200 and "skipped" in str(err)


def test_order_status_unknown_carries_the_guid() -> None:
    """OrderStatusUnknown names the guid and says what to do."""
    err = errors.OrderStatusUnknown("cmd-7", "timed out after 5 s")
    assert err.guid == "cmd-7" and "same guid" in str(err)


def test_connection_closed_keeps_code_and_reason() -> None:
    """ConnectionClosed exposes the close code and reason."""
    err = errors.ConnectionClosed(1008, "Buffer overflow")
    assert (err.code, err.reason) == (1008, "Buffer overflow") and isinstance(
        err, errors.TransportError
    )


def test_invalid_state_is_an_assertion_error() -> None:
    """Misuse errors are also AssertionErrors."""
    assert issubclass(errors.InvalidState, AssertionError)


@pytest.mark.parametrize(
    "token", ["eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA", "short", ""]
)
def test_redact_never_shows_the_token(token: str) -> None:
    """redact() shows at most the last 4 characters of a long token, never the token."""
    shown = errors.redact(token)
    assert token not in shown or token == ""
    assert "eyJ" not in shown
