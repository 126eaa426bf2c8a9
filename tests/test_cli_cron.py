"""`upnext cron list|disable|enable` on Redis: a worker's cron seen and switched by the CLI.

memory:// lives inside one process, so the CLI is tried on a real broker (its
own Redis DB number, as other runs share the server). Unreachable servers fail
the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import upnext
from upnext.cli import main
from upnext.testing import needs_server

REDIS = os.environ.get("UPNEXT_TEST_REDIS_WORKERS_URL", "redis://127.0.0.1:6379/9")
AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
async def cron_name() -> AsyncIterator[str]:
    needs_server(REDIS, 6379)
    name = f"clic-{uuid.uuid4().hex[:10]}"
    worker = upnext.Worker(name, broker=REDIS, load_plugins=False)

    @worker.cron("*/30 * * * * *", name=f"{name}.beat", timezone="Europe/Paris")
    async def beat() -> None: ...

    async with worker:
        await asyncio.sleep(0.3)  # its scheduler records the cron
        yield f"{name}.beat"


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["cron", *args, "--broker", REDIS])
    return code, capsys.readouterr().out


def _listed(out: str, name: str) -> dict[str, object]:
    [cron] = [c for c in json.loads(out)["crons"] if c["name"] == name]
    return dict(cron)


async def test_list_shows_the_cron(capsys: pytest.CaptureFixture[str], cron_name: str) -> None:
    code, out = await _cli(capsys, "list", "--json")
    assert code == 0
    cron = _listed(out, cron_name)
    assert (cron["schedule"], cron["timezone"], cron["enabled"]) == (
        "*/30 * * * * *",
        "Europe/Paris",
        True,
    )
    code, out = await _cli(capsys, "list")
    [row] = [line for line in out.splitlines() if line.startswith(cron_name)]
    assert "(Europe/Paris)" in row
    assert " yes " in row


async def test_disable_then_enable(capsys: pytest.CaptureFixture[str], cron_name: str) -> None:
    code, out = await _cli(capsys, "disable", cron_name, "--json")
    assert code == 0
    assert _listed(out, cron_name)["enabled"] is False
    code, out = await _cli(capsys, "enable", cron_name, "--json")
    assert code == 0
    assert _listed(out, cron_name)["enabled"] is True


def test_an_unknown_cron_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    needs_server(REDIS, 6379)
    assert main(["cron", "disable", "no-such-cron", "--broker", REDIS]) == 1
    err = capsys.readouterr().err
    assert "no cron named 'no-such-cron'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_broker_without_state_names_results(capsys: pytest.CaptureFixture[str]) -> None:
    needs_server(AMQP, 5672)
    assert main(["cron", "list", "--broker", AMQP]) == 1
    err = capsys.readouterr().err
    assert "results=" in err
    assert "guest:guest" not in err
