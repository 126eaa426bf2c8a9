"""`upnext worker --log-format json` as a process on PostgreSQL: parseable lines, no password.

The worker runs a job that fails twice and then succeeds; its stderr must be
one JSON object per line, with the three outcome lines carrying the job's
fields, and the canary password in the broker URL nowhere. PostgreSQL here
trusts local connections, so a canary password in the URL is accepted.
Unreachable servers fail the test when ``CI`` or ``UPNEXT_REQUIRE_SERVICES``
is set, and skip otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from upnext.broker.redact import redact_url
from upnext.testing import unavailable

POSTGRES = os.environ.get("UPNEXT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
FIELDS = {"job_id", "task", "queue", "attempt", "duration_ms", "outcome"}
RECORD = {"timestamp", "level", "logger", "message"}


def _with_canary(url: str, secret: str) -> str:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2).close()
    except OSError:
        unavailable(f"no server at {redact_url(url)}: start it (docker compose up -d)")
    netloc = f"{parts.username or 'postgres'}:{secret}@{parts.hostname}:{parts.port or 5432}"
    return parts._replace(netloc=netloc).geturl()


def _app(tmp_path: Path, url: str, queue: str) -> None:
    (tmp_path / "logjobs.py").write_text(
        "import upnext\n"
        f"worker = upnext.Worker({queue!r}, broker={url!r}, receive_wait=0.5)\n"
        "failures = {'left': 2}\n\n"
        "@worker.task(name='flaky', retries=3, retry_delay=0.05)\n"
        "async def flaky(n: int) -> int:\n"
        "    if failures['left']:\n"
        "        failures['left'] -= 1\n"
        "        raise ConnectionError('upstream refused')\n"
        "    return n\n"
    )


def test_worker_json_logs_are_parseable_lines_with_the_job_fields(tmp_path: Path) -> None:
    """Each stderr line is a JSON object; the job's 3 outcome lines carry its fields."""
    secret = f"canary{uuid.uuid4().hex[:8]}"
    url = _with_canary(POSTGRES, secret)
    queue = f"clilog-{uuid.uuid4().hex[:10]}"
    _app(tmp_path, url, queue)
    cli = [sys.executable, "-m", "upnext.cli"]
    worker = [*cli, "worker", "logjobs:worker", "--log-format", "json"]
    proc = subprocess.Popen(worker, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        done = subprocess.run(
            [*cli, "submit", "logjobs:flaky", "--kw", "n=7", "--wait", "30", "--json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    records = [json.loads(line) for line in err.splitlines()]  # every line parses
    assert all(set(r) >= RECORD for r in records)
    outcomes = [r for r in records if r.get("job_id") == job_id]
    assert [r["outcome"] for r in outcomes] == ["retrying", "retrying", "succeeded"]
    assert all(set(r) >= FIELDS and r["level"] == "INFO" for r in outcomes)
    assert [r["attempt"] for r in outcomes] == [1, 2, 3]
    assert all((r["task"], r["queue"]) == ("flaky", queue) for r in outcomes)
    banner = next(r["message"] for r in records if "started: id" in r["message"])
    assert "postgresql://postgres:***@" in banner
    assert secret not in err
