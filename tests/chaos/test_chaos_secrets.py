"""Scenario 12: a canary password in every broker URL form never shows in logs or exceptions."""

from __future__ import annotations

import asyncio
import logging
import traceback

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
