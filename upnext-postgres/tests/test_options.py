"""URL options, password redaction, and errors when the server is unreachable."""

from __future__ import annotations

import traceback

import asyncpg
import pytest
from upnext.errors import BrokerError, BrokerUnavailable, ConfigurationError
from upnext_postgres import PostgresBroker, PostgresOptions
from upnext_postgres._errors import mapped

SECRET = "s3cr3t-pw-9f2"


def test_options_are_parsed_and_stripped_from_the_dsn() -> None:
    """upnext's options become typed fields; the rest of the query reaches asyncpg."""
    opts = PostgresOptions.from_url(
        "postgres://u@h:5433/db?schema=jobs&pool_size=3&connect_timeout=2.5"
        "&command_timeout=7&lease_recovery_interval=1&application_name=app"
    )
    assert (opts.schema, opts.pool_size, opts.connect_timeout) == ("jobs", 3, 2.5)
    assert opts.command_timeout == 7.0
    assert opts.lease_recovery_interval == 1.0
    assert opts.dsn == "postgresql://u@h:5433/db?application_name=app"


@pytest.mark.parametrize(
    "query",
    [
        "pool_size=0",
        "pool_size=x",
        "connect_timeout=-1",
        "command_timeout=0",
        "lease_recovery_interval=0",
        "schema=no-dashes",
    ],
)
def test_bad_options_are_configuration_errors(query: str) -> None:
    """A bad option value is refused, and the message hides the password."""
    with pytest.raises(ConfigurationError) as info:
        PostgresOptions.from_url(f"postgresql://u:{SECRET}@h/db?{query}")
    assert SECRET not in str(info.value)


async def test_unreachable_server_raises_unavailable_without_password() -> None:
    """connect() to a closed port raises BrokerUnavailable; no message shows the password."""
    broker = PostgresBroker.from_url(
        f"postgresql://someone:{SECRET}@127.0.0.1:1/test?connect_timeout=2"
    )
    assert SECRET not in repr(broker)
    with pytest.raises(BrokerUnavailable) as info:
        await broker.connect()
    assert SECRET not in str(info.value)
    assert "***" in str(info.value)
    await broker.enqueue_many([])  # nothing to send: no connection needed, no error
    with pytest.raises(BrokerUnavailable) as info:
        await broker.receive(["q"], limit=1, lease=1.0, wait=0.0)
    assert SECRET not in str(info.value)
    await broker.aclose()


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.PostgresError(f"bad dsn postgresql://someone:{SECRET}@h/test"),
        OSError(f"connect to postgres://u:{SECRET}@127.0.0.1:1/x refused"),
    ],
)
def test_a_driver_error_echoing_a_url_hides_its_password(driver_error: Exception) -> None:
    """Core's `redact` cleans the driver's words, and no chained error keeps them."""
    with pytest.raises(BrokerError) as info, mapped("postgresql://someone:***@h/test", "x"):
        raise driver_error
    shown = "".join(traceback.format_exception(info.value))
    assert SECRET not in shown
    assert "***" in str(info.value)
