"""Outcome classification: which attempts count against an upstream, and how."""

from __future__ import annotations

import email.utils

import pytest

from sluice.core import (
    BreakerPolicy,
    ErrorKind,
    OutcomeKind,
    classify_error,
    classify_status,
    parse_retry_after,
    parse_status_set,
)

DEFAULT = BreakerPolicy()
NOW = 1_800_000_000.0  # wall-clock seconds, for HTTP-dates


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, OutcomeKind.SUCCESS),
        (201, OutcomeKind.SUCCESS),
        (204, OutcomeKind.SUCCESS),
        (304, OutcomeKind.SUCCESS),
        (400, OutcomeKind.IGNORED),
        (401, OutcomeKind.IGNORED),
        (403, OutcomeKind.IGNORED),
        (404, OutcomeKind.IGNORED),
        (413, OutcomeKind.IGNORED),
        (422, OutcomeKind.IGNORED),
        (499, OutcomeKind.IGNORED),
        (408, OutcomeKind.FAILURE),
        (429, OutcomeKind.RATE_LIMITED),
        (500, OutcomeKind.FAILURE),
        (502, OutcomeKind.FAILURE),
        (503, OutcomeKind.FAILURE),
        (504, OutcomeKind.FAILURE),
        (529, OutcomeKind.FAILURE),  # Anthropic's "overloaded"
        (599, OutcomeKind.FAILURE),
        (100, OutcomeKind.FAILURE),  # an attempt cannot end on 1xx: the upstream is broken
        (0, OutcomeKind.FAILURE),
        (600, OutcomeKind.FAILURE),
    ],
)
def test_statuses_by_default_policy(status: int, kind: OutcomeKind) -> None:
    outcome = classify_status(status, DEFAULT)

    assert outcome.kind is kind
    assert outcome.status == status


def test_the_detail_names_the_status() -> None:
    assert classify_status(503, DEFAULT).detail == "HTTP 503"


def test_failure_statuses_are_configurable() -> None:
    only_gateway_errors = BreakerPolicy(failure_statuses=parse_status_set(["502", "503", 504]))

    assert classify_status(503, only_gateway_errors).kind is OutcomeKind.FAILURE
    # Left out on purpose: neither a failure nor a success that resets the count.
    assert classify_status(500, only_gateway_errors).kind is OutcomeKind.IGNORED
    assert classify_status(408, only_gateway_errors).kind is OutcomeKind.IGNORED


def test_rate_limit_statuses_are_configurable() -> None:
    custom = BreakerPolicy(rate_limit_statuses=frozenset({429, 420}))

    assert classify_status(420, custom).kind is OutcomeKind.RATE_LIMITED


NOT_THE_UPSTREAMS_FAULT = {ErrorKind.CLIENT_DISCONNECT, ErrorKind.LOCAL, ErrorKind.ANSWER_TOO_LARGE}


@pytest.mark.parametrize("error", [e for e in ErrorKind if e not in NOT_THE_UPSTREAMS_FAULT])
def test_every_transport_error_is_a_failure(error: ErrorKind) -> None:
    outcome = classify_error(error, "boom")

    assert outcome.kind is OutcomeKind.FAILURE
    assert outcome.error is error
    assert outcome.detail.endswith(": boom")


def test_a_client_disconnect_is_not_the_upstreams_fault() -> None:
    assert classify_error(ErrorKind.CLIENT_DISCONNECT).kind is OutcomeKind.IGNORED


def test_the_proxys_own_shortage_is_never_counted_against_an_upstream() -> None:
    outcome = classify_error(ErrorKind.LOCAL, "Too many open files")

    assert outcome.kind is OutcomeKind.IGNORED
    assert outcome.error is ErrorKind.LOCAL
    assert outcome.detail == (
        "the proxy's own fault: out of file descriptors or memory: Too many open files"
    )


def test_an_answer_over_the_size_limit_is_never_counted_against_an_upstream() -> None:
    """A client can ask for a huge embedding batch: that must not trip the breaker."""
    outcome = classify_error(ErrorKind.ANSWER_TOO_LARGE)

    assert outcome.kind is OutcomeKind.IGNORED
    assert outcome.error is ErrorKind.ANSWER_TOO_LARGE


def test_every_error_kind_reads_as_a_sentence() -> None:
    for error in ErrorKind:
        assert classify_error(error).detail


def test_error_details_read_as_a_person_would_say_them() -> None:
    assert classify_error(ErrorKind.CONNECT_REFUSED).detail == "connection refused"
    assert classify_error(ErrorKind.STREAM_CUT).detail == "stream cut after first byte"


def test_429_carries_retry_after_in_seconds() -> None:
    outcome = classify_status(429, DEFAULT, retry_after="7", now=NOW)

    assert outcome.kind is OutcomeKind.RATE_LIMITED
    assert outcome.retry_after == 7.0


def test_429_carries_retry_after_as_an_http_date() -> None:
    header = email.utils.formatdate(NOW + 120, usegmt=True)

    outcome = classify_status(429, DEFAULT, retry_after=header, now=NOW)

    assert outcome.retry_after == pytest.approx(120.0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        ("30", 30.0),
        (" 30 ", 30.0),
        ("1.5", 1.5),  # not RFC 9110, but some providers send it
        ("-5", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),  # a date in the past: now
        (email.utils.formatdate(NOW + 5, usegmt=True), 5.0),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    result = parse_retry_after(header, now=NOW)

    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
