"""`upnext queue list|pause|resume` on Redis: a pause set, listed and cleared by the CLI.

memory:// lives inside one process, so the CLI is tried on a real broker (its
own Redis DB number, as other runs share the server). Unreachable servers fail
the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and skip otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from upnext.cli import main
from upnext.testing import needs_server

REDIS = os.environ.get("UPNEXT_TEST_REDIS_WORKERS_URL", "redis://127.0.0.1:6379/9")
AMQP = os.environ.get("UPNEXT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["queue", *args, "--broker", REDIS])
    return code, capsys.readouterr().out


async def test_pause_list_and_resume(capsys: pytest.CaptureFixture[str]) -> None:
    needs_server(REDIS, 6379)
    name = f"cliq-{uuid.uuid4().hex[:10]}"
    code, out = await _cli(capsys, "pause", name, "--reason", "incident 42", "--json")
    assert code == 0
    [pause] = json.loads(out)["paused"]
    assert (pause["queue"], pause["reason"]) == (name, "incident 42")
    code, out = await _cli(capsys, "list")
    [row] = [line for line in out.splitlines() if line.startswith(name)]
    assert "incident 42" in row
    code, out = await _cli(capsys, "resume", name)
    assert code == 0
    assert out.strip() == f"queue {name} resumed"
    code, out = await _cli(capsys, "list", "--json")
    assert name not in {p["queue"] for p in json.loads(out)["paused"]}


def test_a_broker_without_state_names_results(capsys: pytest.CaptureFixture[str]) -> None:
    needs_server(AMQP, 5672)
    assert main(["queue", "pause", "q", "--broker", AMQP]) == 1
    err = capsys.readouterr().err
    assert "results=" in err
    assert "guest:guest" not in err
