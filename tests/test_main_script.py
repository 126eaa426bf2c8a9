"""``python app.py`` serves jobs that another process submits as ``app.x`` (the ``__main__`` trap).

Worker and producer are separate processes sharing a Redis server (under a key
prefix of the test's own), as a user's ``python app.py`` and ``upnext submit
app:x`` would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from upnext.testing import unavailable

REDIS_URL = os.environ.get("UPNEXT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

APP = """
import upnext

worker = upnext.Worker("main-trap", broker="BROKER_URL")

@worker.task
async def x(n: int) -> int:
    return n * 2

if __name__ == "__main__":
    raise SystemExit(upnext.run(worker))
"""


@pytest.fixture
def broker_url() -> Iterator[str]:
    """The test server under a key prefix of this test's own, its keys removed afterwards."""
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError:
        unavailable(f"no Redis at {parts.hostname}:{parts.port}: start it (docker compose up -d)")
    prefix = f"upnext-test-main-{uuid.uuid4().hex[:10]}"
    yield REDIS_URL + ("&" if "?" in REDIS_URL else "?") + f"prefix={prefix}"
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


def test_a_job_submitted_as_app_x_runs_on_python_app_py(tmp_path: Path, broker_url: str) -> None:
    """`python app.py` names its task app.x, so `upnext submit app:x` finds it."""
    (tmp_path / "app.py").write_text(APP.replace("BROKER_URL", broker_url))
    env = {**os.environ, "PYTHONPATH": ""}
    worker = subprocess.Popen(
        [sys.executable, "app.py"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        upnext_cli = Path(sys.executable).with_name("upnext")
        submit = subprocess.run(
            [str(upnext_cli), "submit", "app:x", "--kw", "n=21", "--wait", "20"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert submit.returncode == 0, submit.stderr + err
    assert submit.stdout.strip().endswith("complete: 42"), submit.stdout
    assert "no task named" not in err
