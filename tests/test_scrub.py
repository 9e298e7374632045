"""Scrubbing network text of anything token-shaped, and logging bad frames without a flood."""

from __future__ import annotations

import logging

import pytest

from alorws import errors
from alorws.client import _badframes
from alorws.client._badframes import BadFrameLog
from alorws.errors import scrub

from ._hostile import JWT, REFRESH, SECRETS


@pytest.mark.parametrize(
    "text",
    [
        JWT,
        f"token {JWT} expired",
        f'{{"opcode":"QuotesSubscribe","token":"{JWT}","guid":"g"}}',
        f'{{"token": "{REFRESH}"}}',
        f'{{"refreshToken":"{REFRESH}","x":1}}',
        f'{{"AccessToken":"{REFRESH}"}}',
        f'{{"Authorization":"Bearer {REFRESH}"}}',
        f"Authorization: Bearer {REFRESH}",
        f'{{"token":{12345678901234567890}}}',
        f'{{\\"token\\":\\"{REFRESH}\\",\\"guid\\":\\"g\\"}}',  # JSON inside a JSON string
        f'{{"pad":"xx","token":"{REFRESH[:10]}',  # a string value cut short
    ],
)
def test_scrub_removes_every_token_shape(text: str) -> None:
    """JWTs, secret-holding keys' values (also escaped or cut short) and Bearer credentials."""
    out = scrub(text)
    for secret in (JWT, REFRESH, REFRESH[:10], JWT.split(".")[1], "12345678901234567890"):
        assert secret not in out
    assert "<token>" in out or "<redacted>" in out


@pytest.mark.parametrize("cut", [5, 20, 40, 60, 100, len(JWT) - 1])
def test_a_jwt_cut_short_is_still_removed(cut: int) -> None:
    """A frame excerpt ends wherever 200 characters end: inside a JWT's header, claims or
    signature, what is left of it goes too."""
    text = ("x" * 50 + JWT)[: 50 + cut]
    assert scrub(text) == "x" * 50 + "<token>"


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("nats://alice:s3cret@127.0.0.1:4222", "nats://<redacted>@127.0.0.1:4222"),
        ("no gateway answers on nats://s3cret@nats.example:4222?", "@nats.example:4222?"),
        ("cannot connect to tls://alice:s3cret@h9:4443/x: refused", "@h9:4443/x: refused"),
        ("nats://a:s3cret@h1:4222,nats://b:s3cret@h2:4222", "@h2:4222"),
        ("an @ in the password: nats://alice:s3c@s3cret@h3:4222", "@h3:4222"),
        ('{"url":"wss://alice:s3cret@h4/ws","x":"a@b"}', '@h4/ws","x":"a@b"}'),
    ],
)
def test_scrub_removes_the_credentials_of_a_url(text: str, host: str) -> None:
    """A URL's user, password or token (``scheme://userinfo@host``) goes; the host stays."""
    out = scrub(text)
    assert "s3cret" not in out and "alice" not in out
    assert "://<redacted>@" in out and out.endswith(host)


def test_scrub_leaves_frames_without_secrets_alone() -> None:
    """Ordinary frames, status replies and guids are unchanged."""
    for text in (
        '{"data":{"symbol":"SBER","last_price":272.5},"guid":"c328fcf1-e495"}',
        '{"requestGuid":"g-1","httpCode":200,"message":"Handled successfully"}',
        "tokens are refreshed ahead of exp",
        "lost the NATS connection to nats://127.0.0.1:4222 (mail ops@example.com)",
    ):
        assert scrub(text) == text


def test_exceptions_scrub_the_network_text_they_carry() -> None:
    """FrameError's excerpt (cut at 200 characters, the JWT inside the cut) and reason, a
    server's rejection message, a close reason, an unknown order's detail."""
    frame = ('{"data":{"pad":"' + "p" * 150 + '","token":"' + JWT + '"},"guid":"g"}').encode()
    shown = [
        errors.FrameError(f"bad enum value {JWT!r}", frame),
        errors.rejection_for(400, f"bad token {JWT}", "g"),
        errors.TokenRejected(401, f'{{"token":"{REFRESH}"}}'),
        errors.ConnectionClosed(1008, f"token {JWT}"),
        errors.OrderStatusUnknown("g", f"the server answered 400 'token {JWT}'"),
    ]
    frame_error = shown[0]
    assert isinstance(frame_error, errors.FrameError)
    assert len(frame_error.frame) <= 200
    assert frame_error.frame.endswith(("<token>", '"<redacted>"'))
    for exc in shown:
        text = str(exc) + repr(exc) + str(vars(exc))
        for secret in SECRETS:
            assert secret not in text


def test_bad_frames_are_logged_once_per_kind_then_at_most_once_an_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bad frame of each kind is logged; later ones of that kind only once the
    interval has passed (a clock under the test's control), saying how many were not."""
    now = [1000.0]
    monkeypatch.setattr(_badframes.time, "monotonic", lambda: now[0])
    log = BadFrameLog(logging.getLogger("alorws.test"), "quotes SBER", interval=60.0)
    with caplog.at_level(logging.WARNING, logger="alorws.test"):
        for _ in range(500):
            log.report(RecursionError("too deep"))
            log.report(ValueError(f"bad value {JWT}"))
        assert len(caplog.records) == 2
        now[0] += 59.0
        log.report(RecursionError("too deep"))
        assert len(caplog.records) == 2
        now[0] += 2.0
        log.report(RecursionError("too deep"))
    assert log.reported == 1002
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("quotes SBER: too deep [first RecursionError")
    assert "500 more not logged in the last 61 s" in lines[2]
    assert all(JWT not in line and JWT[:40] not in line for line in lines)
