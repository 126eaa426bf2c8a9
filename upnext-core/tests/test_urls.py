"""URL helpers: the scheme, and a printable form with every password hidden."""

from __future__ import annotations

import pytest
from upnext._urls import check_url, did_you_mean, scheme_of
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp:/guest:s3cret@127.0.0.1/ux", "amqp:/guest:***@127.0.0.1/ux"),
        ("amqp:guest:s3cret@h/", "amqp:guest:***@h/"),
        ("redis:///:s3cret@h/0", "redis:///:***@h/0"),
        ("redis://u:s3/cret@h:6379/0?x=1", "redis://u:***@h:6379/0?x=1"),
    ],
)
def test_redact_url_hides_the_password_of_a_mistyped_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp:/guest:s3cret@h/vh", "two slashes after 'amqp:'"),
        ("redis://:s3cret@/0", "no host"),
        ("redis://:s3cret@h:99999/0", "bad port"),
        ("redis://u:s3cr/et@h/0", "percent-encode"),
        ("amqp://h:0/", "port 0"),
    ],
)
def test_check_url_names_the_typo_in_one_line_without_the_password(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_url(url)
    assert says in str(caught.value)
    assert "s3cr" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_check_url_takes_a_hostless_url_when_told_and_well_formed_ones() -> None:
    assert check_url("postgresql:///test", host=False).path == "/test"
    assert check_url("rediss://:pw@redis.example:6380/1").port == 6380


def test_did_you_mean_offers_only_a_close_option() -> None:
    assert did_you_mean("prefetc", {"prefetch", "strict"}) == " (did you mean 'prefetch'?)"
    assert did_you_mean("frobnicate", {"prefetch", "strict"}) == ""
