"""The password filter on library loggers: whatever handler prints a record, no password."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator

import pytest
from upnext._logsafe import protect_logs

SECRET = "Canary-" + uuid.uuid4().hex[:12]


@pytest.fixture
def users_handler() -> Iterator[io.StringIO]:
    """A handler the user configured on the root logger, with a formatter of their own."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield out
    root.removeHandler(handler)


@pytest.mark.parametrize(
    "logger", ["aiormq.connection", "aio_pika.robust_connection", "asyncpg.pool", "uvicorn.error"]
)
def test_a_drivers_record_loses_its_password(logger: str) -> None:
    """Even with the user's handler on the driver's own logger (uvicorn does not propagate)."""
    driver = logging.getLogger(logger)  # the driver's module made it at import
    protect_logs()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    driver.addHandler(handler)
    try:
        driver.error("Reconnect attempt failed %s", f"amqp:/guest:{SECRET}@h/ux")
    finally:
        driver.removeHandler(handler)
    assert "Reconnect attempt failed amqp:/guest:***@h/ux" in out.getvalue()
    assert SECRET not in out.getvalue()


def test_a_remembered_password_is_hidden_outside_a_url_and_in_tracebacks(
    users_handler: io.StringIO,
) -> None:
    protect_logs(f"redis://:{SECRET}@h/0")
    try:
        raise ValueError(f"AUTH {SECRET} refused")
    except ValueError:
        logging.getLogger("redis").exception("password %s did not work", SECRET)
    assert "password *** did not work" in users_handler.getvalue()
    assert "ValueError: AUTH *** refused" in users_handler.getvalue()
    assert SECRET not in users_handler.getvalue()


def test_short_passwords_are_not_blanked_out_of_ordinary_words(
    users_handler: io.StringIO,
) -> None:
    protect_logs("amqp://guest:guest@h/")
    logging.getLogger("upnext").warning("user guest connected")
    assert "user guest connected" in users_handler.getvalue()
