"""URL helpers: the scheme, and a printable form with every password hidden."""

from __future__ import annotations

import pytest
from upnext._urls import redact_url, scheme_of


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://user:s3cret@localhost:6379/0", "redis://user:***@localhost:6379/0"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("amqps://guest:s3cret@rabbit.example:5671/vh", "amqps://guest:***@rabbit.example:5671/vh"),
        (
            "postgresql://app:s3cret@db:5432/jobs?sslmode=require&application_name=w",
            "postgresql://app:***@db:5432/jobs?sslmode=require&application_name=w",
        ),
        (
            "postgresql://db/jobs?user=app&password=s3cret&sslmode=require",
            "postgresql://db/jobs?user=app&password=***&sslmode=require",
        ),
        ("redis://h/0?PASSWORD=s3cret", "redis://h/0?PASSWORD=***"),
        ("amqp://h/?passwd=s3cret&pass=s3cret", "amqp://h/?passwd=***&pass=***"),
        ("redis://p%40ss:s3cret@h", "redis://p%40ss:***@h"),
    ],
)
def test_redact_url_hides_the_password(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert "s3cret" not in redacted


def test_redact_url_password_containing_at_sign() -> None:
    redacted = redact_url("redis://user:pa@ss@host:6379")
    assert "pa@ss" not in redacted
    assert "ss@host" not in redacted
    assert redacted.endswith("@host:6379")


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "memory://name",
        "memory://name/sub",
        "redis://localhost:6379/0",
        "amqp://user@h/",
        "x?flag",
    ],
)
def test_redact_url_keeps_urls_without_a_password(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_hides_the_ssl_key_password() -> None:
    assert "s3cret" not in redact_url("postgresql://h/db?sslmode=verify-full&sslpassword=s3cret")


def test_redact_url_of_an_unparseable_url() -> None:
    # An unbalanced IPv6 bracket makes urlsplit raise ValueError.
    assert redact_url("redis://user:s3cret@[::1:6379") == "<unparseable URL>"


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("Redis://h", "redis"), ("memory://", "memory"), ("localhost:6379", "localhost"), ("", "")],
)
def test_scheme_of(url: str, scheme: str) -> None:
    assert scheme_of(url) == scheme
