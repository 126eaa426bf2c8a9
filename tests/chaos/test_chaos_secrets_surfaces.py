"""Scenario 12, the other surfaces: the REST API, the dashboard and the CLI never show a password.

Brokers that accept a canary password for real: PostgreSQL (this server trusts
loopback connections, so any password is accepted) and a private
``redis-server --requirepass`` on a free port. RabbitMQ's shared server knows
only guest/guest, so there the canary meets refused credentials and the
surfaces are checked on their error paths. Every byte the server process
writes (at DEBUG) and every response body and header are searched for the
password, raw and percent-encoded.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx
import pytest
import upnext
from chaoskit.backends import base_url
from upnext.testing.loopback import free_port

pytestmark = pytest.mark.chaos

CANARY = "Surf4ceCanary@91/x"  # '@' and '/' force percent-encoding in the URL
FORMS = (CANARY, quote(CANARY, safe=""), "Surf4ceCanary")


def _leaks(text: str) -> list[str]:
    return [form for form in FORMS if form in text]


def _wait_port(port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def _private_redis() -> Iterator[str]:
    """A redis-server on a free loopback port requiring the canary password; its URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--requirepass", CANARY]
    proc = subprocess.Popen(
        [binary, *args, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://:{quote(CANARY, safe='')}@127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


@contextmanager
def _url(kind: str) -> Iterator[str]:
    if kind == "redis":
        with _private_redis() as url:
            yield url
    elif kind == "postgresql":
        schema = f"canary_{uuid.uuid4().hex[:8]}"
        yield f"postgresql://postgres:{quote(CANARY, safe='')}@127.0.0.1:5432/test?schema={schema}"
    else:
        host = base_url("rabbitmq").split("@", 1)[-1]
        yield f"amqp://guest:{quote(CANARY, safe='')}@{host}"


async def _dead_letter(url: str, queue: str) -> str:
    """Run a job that fails into the DLQ; its job id."""
    worker = upnext.Worker(queue, broker=url, load_plugins=False, receive_wait=0.2)

    @worker.task(retries=0, name="canary.fail")
    async def fail(order: int) -> None:
        raise RuntimeError(f"declined {order}")

    async with worker:
        future = await fail.submit(5)
        with pytest.raises(upnext.TaskExecutionError):
            await future.result(timeout=20)
    return future.job_id


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "upnext.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _responses(port: int, queue: str, job_id: str | None) -> list[str]:
    """Every route of the API and every dashboard asset, as text with headers."""
    base = f"http://127.0.0.1:{port}"
    seen: list[str] = []
    with httpx.Client(base_url=base, timeout=30) as http:

        def call(method: str, path: str, **kw: object) -> httpx.Response:
            response = http.request(method, path, **kw)  # type: ignore[arg-type]
            seen.append(
                f"{method} {path} {response.status_code}\n{response.headers}\n{response.text}"
            )
            return response

        page = call("GET", "/")
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
            call("GET", asset)
        for path in ("/api/v1/health", "/api/v1/queues", "/openapi.json", "/docs", "/nope"):
            call("GET", path)
        listing = call("GET", "/api/v1/dlq", params={"queue": queue})
        call("GET", "/api/v1/dlq", params={"limit": "0"})
        call("GET", "/api/v1/dlq", params={"cursor": "bogus"})
        items = listing.json().get("items", []) if listing.status_code == 200 else []
        for item in items:
            call("GET", f"/api/v1/dlq/{item['id']}")
            replayed = call("POST", f"/api/v1/dlq/{item['id']}/replay")
            if replayed.status_code == 200:
                call("GET", f"/api/v1/jobs/{replayed.json()['job_id']}")
        call("GET", f"/api/v1/jobs/{job_id or 'unknown-job'}")
        call("POST", "/api/v1/dlq/no-such-entry/replay")
        call("DELETE", "/api/v1/dlq", params={"queue": queue})
    return seen


@pytest.mark.parametrize("kind", ["postgresql", "redis", "amqp"])
def test_canary_never_in_api_dashboard_or_cli(kind: str) -> None:
    """Server at DEBUG, every route and asset, the CLI's dlq commands: no password anywhere."""
    queue = f"canary-{uuid.uuid4().hex[:8]}"
    with _url(kind) as url:
        job_id = asyncio.run(_dead_letter(url, queue)) if kind != "amqp" else None
        port = free_port()
        cmd = [sys.executable, "-m", "upnext.cli", "server", "--broker", url]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--queue", queue, "--log-level", "debug"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_port(port, 30)
            texts = _responses(port, queue, job_id)
        finally:
            proc.terminate()
            texts.append("server output\n" + proc.communicate(timeout=15)[0])
        texts += [
            _cli("dlq", "--broker", url, "list", "--json"),
            _cli("dlq", "--broker", url, "list", "--queue", queue),
            _cli("dlq", "--broker", url, "show", "no-such-entry"),
            _cli("dlq", "--broker", url, "purge", "--queue", queue, "--yes"),
        ]
    if kind != "amqp":  # the entry really was listed, shown and replayed
        assert any(t.startswith("POST /api/v1/dlq/") and " 200\n" in t for t in texts), texts
    assert "***" in texts[-5], texts[-5][-2000:]  # the server's banner names the URL redacted
    leaked = [t[:300] for t in texts if _leaks(t)]
    assert not leaked, leaked
