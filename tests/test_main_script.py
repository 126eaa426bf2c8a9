"""``python app.py`` serves jobs that another process submits as ``app.x`` (the ``__main__`` trap).

Worker and producer are separate processes sharing a SQLite file (the example
backend), as a user's ``python app.py`` and ``upnext submit app:x`` would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

APP = """
import upnext

worker = upnext.Worker("main-trap", broker="sqlite:///jobs.db")

@worker.task
async def x(n: int) -> int:
    return n * 2

if __name__ == "__main__":
    raise SystemExit(upnext.run(worker))
"""


def test_a_job_submitted_as_app_x_runs_on_python_app_py(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
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
