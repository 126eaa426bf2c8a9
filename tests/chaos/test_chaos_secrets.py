"""Scenario 12: a canary password in every broker URL form never shows in logs or exceptions."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import traceback

import aio_pika
import pytest
import upnext
from chaoskit.backends import base_url
from upnext.testing.loopback import free_port

pytestmark = pytest.mark.chaos

CANARY = "Canary5ecret7781"
ENCODED = "Can%40ary%2F5ecret"  # "Can@ary/5ecret" once decoded


def _urls() -> list[str]:
    port = free_port()
    amqp = base_url("rabbitmq").split("@", 1)[-1]
    return [
        f"redis://:{CANARY}@127.0.0.1:{port}/0",
        f"redis://default:{CANARY}@127.0.0.1:{port}/0",
        f"redis://default:{ENCODED}@127.0.0.1:{port}/0",
        f"rediss://:{CANARY}@127.0.0.1:{port}/0",
        f"amqp://guest:{CANARY}@{amqp}",  # the real server: refused credentials
        f"amqp://guest:{ENCODED}@127.0.0.1:{port}/",
        f"amqps://guest:{CANARY}@127.0.0.1:{port}/",
        f"postgresql://postgres:{CANARY}@127.0.0.1:{port}/test",
        f"postgres://postgres:{ENCODED}@127.0.0.1:{port}/test?schema=chaos_canary",
    ]


def _leaks(text: str) -> list[str]:
    return [s for s in (CANARY, ENCODED, "Can@ary/5ecret", "Can@ary") if s in text]


@pytest.mark.parametrize("url", _urls(), ids=lambda u: u.split(":", 1)[0])
async def test_canary_password_never_leaks(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Submit to an unreachable or refusing broker: the error and DEBUG logs hide the password."""
    caplog.set_level(logging.DEBUG)
    worker = upnext.Worker("canary", broker=url, load_plugins=False)

    @worker.task(name="canary.noop")
    async def noop() -> None: ...

    with pytest.raises(upnext.UpNextError) as caught:
        await asyncio.wait_for(noop.submit(), 30.0)
    await worker.aclose()
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert not _leaks(shown), f"password in the exception: {shown[-600:]}"
    assert not _leaks(caplog.text), "password in the logs"
    assert not _leaks(repr(worker))


def _mistyped() -> list[str]:
    return [
        f"amqp:/guest:{CANARY}@127.0.0.1/ux",  # one slash: was a silent hang, logging the URL
        f"amqps:guest:{CANARY}@127.0.0.1/",
        f"redis:/:{CANARY}@127.0.0.1:6379/0",
        f"rediss://:{CANARY}@/0",  # no host
        f"postgresql:/postgres:{CANARY}@127.0.0.1/test",
        f"postgres://postgres:{CANARY}@127.0.0.1:5432x/test",  # bad port
        f"redis://default:Can/{CANARY}@127.0.0.1:6379/0",  # a '/' in the password
        f"amqp://guest:{CANARY}@127.0.0.1/?prefetc=4",  # unknown option
        f"postgresql://postgres:{CANARY}@127.0.0.1/test?pool_sise=4",
        "memory:/canary",
        "sqlite:/canary.db",
    ]


@pytest.mark.parametrize("url", _mistyped())
def test_a_mistyped_url_fails_at_worker_in_one_line_with_the_password_hidden(url: str) -> None:
    started = time.perf_counter()
    with pytest.raises(upnext.ConfigurationError) as caught:
        upnext.Worker("canary", broker=url, load_plugins=False)
    assert time.perf_counter() - started < 2.0  # not a connect attempt
    message = str(caught.value)
    assert "\n" not in message
    assert not _leaks(message), message


async def test_a_drivers_own_log_hides_the_password_whatever_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aio-pika logs the URL it retries; upnext's filter on its loggers hides the password."""
    upnext.Worker("canary", broker=base_url("rabbitmq"), load_plugins=False)
    users_own = io.StringIO()
    handler = logging.StreamHandler(users_own)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.DEBUG)
    raw = f"amqp:/guest:{CANARY}@127.0.0.1/ux?reconnect_interval=0.1"  # past upnext's checks
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(aio_pika.connect_robust(raw), 0.5)
    finally:
        logging.getLogger().removeHandler(handler)
    assert "Reconnect attempt failed amqp:/guest:***@127.0.0.1/ux" in users_own.getvalue()
    assert not _leaks(users_own.getvalue())
    assert not _leaks(caplog.text)
