"""`upnext.broker.redact`: the one helper that hides passwords in any message."""

from __future__ import annotations

import pytest
from upnext.broker.redact import redact, redact_url, url_secrets

CANARY = "Canary5ecret7781"


@pytest.mark.parametrize(
    "text",
    [
        f"cannot connect to redis://:{CANARY}@h:6379/0: refused",
        f"Reconnect attempt failed amqp:/guest:{CANARY}@h/ux",  # one slash
        f"'postgresql://u:{CANARY}@h/db' is invalid",
        f"dsn postgresql://u@h/db?sslpassword={CANARY}&x=1 rejected",
        f"see amqps://u:pa@ss{CANARY}@host and redis://:{CANARY}@other",
    ],
)
def test_passwords_in_any_url_in_the_text_are_hidden(text: str) -> None:
    """No URL needs to be given: a password in a URL of the text is hidden anyway."""
    clean = redact(text)
    assert CANARY not in clean
    assert "***" in clean


def test_passwords_of_given_urls_are_hidden_wherever_they_appear() -> None:
    """A driver may echo the password alone, or percent-decoded."""
    url = "redis://user:Can%40ary%2F5ecret@h/0"
    text = "AUTH Can%40ary%2F5ecret failed; tried Can@ary/5ecret"
    assert redact(text, url) == "AUTH *** failed; tried ***"
    assert url_secrets(url) == {"Can%40ary%2F5ecret", "Can@ary/5ecret"}


def test_a_password_inside_another_is_hidden_whole() -> None:
    text = "tried secret and secret-two"
    assert redact(text, secrets=["secret", "secret-two"]) == "tried *** and ***"


def test_text_without_secrets_is_left_alone() -> None:
    text = "Redis at redis://h:6379/0 refused the operation: WRONGTYPE (a: b@c)"
    assert redact(text, "redis://h:6379/0") == text


def test_a_url_without_a_password_carries_no_secret() -> None:
    assert url_secrets("amqp://guest@h/") == frozenset()
    assert url_secrets("http://[::1") == frozenset()  # unparseable: nothing found, no error


def test_redact_url_hides_the_password_and_secret_query_values() -> None:
    url = f"postgresql://u:{CANARY}@h:5432/db?sslpassword={CANARY}&schema=s"
    assert redact_url(url) == "postgresql://u:***@h:5432/db?sslpassword=***&schema=s"
