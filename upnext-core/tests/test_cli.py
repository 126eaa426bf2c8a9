"""The `upnext` command: exit codes, one-line errors, refusals, output helpers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import upnext
from upnext.cli import main
from upnext.cli._commands import _kwargs
from upnext.cli._output import Progress, table
from upnext.errors import ConfigurationError

SECRET = "cli-canary-pw"


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "upnext.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_backends_lists_schemes_and_usage_errors_exit_2() -> None:
    """`backends` exits 0 listing memory from upnext-core; a bad command exits 2."""
    done = _run("backends")
    assert done.returncode == 0
    assert any(line.split()[:2] == ["memory", "upnext-core"] for line in done.stdout.splitlines())
    assert _run("bogus").returncode == 2
    assert _run("dlq", "--broker", "redis://x", "list", "--limit", "0").returncode == 2


def test_cli_imports_without_the_server_extra() -> None:
    """Importing the CLI pulls in neither FastAPI nor uvicorn."""
    code = "import sys, upnext.cli; print(any(m in sys.modules for m in ('fastapi', 'uvicorn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unreachable_broker_is_one_line_without_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broker that refuses connections: exit 1, one `error:` line, the password hidden."""
    url = f"redis://:{SECRET}@127.0.0.1:1/0?socket_connect_timeout=1"
    assert main(["dlq", "--broker", url, "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert SECRET not in err


@pytest.mark.parametrize("command", ["worker", "submit"])
def test_memory_broker_is_refused(tmp_path: Path, command: str) -> None:
    """`worker` and `submit` refuse memory:// in one line (another process can't see it)."""
    (tmp_path / "memapp.py").write_text(
        textwrap.dedent(
            """
            import upnext
            worker = upnext.Worker("mem", broker="memory://")

            @worker.task
            async def job(n: int) -> int:
                return n
            """
        )
    )
    target = "memapp:worker" if command == "worker" else "memapp:job"
    done = _run(command, target, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "memory://" in done.stderr


def test_server_refusals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`server` refuses memory:// and a public bind without a token; names a missing extra."""
    monkeypatch.delenv("UPNEXT_API_TOKEN", raising=False)
    assert main(["server", "--broker", "memory://"]) == 1
    assert main(["server", "--broker", "redis://127.0.0.1:1/0", "--host", "0.0.0.0"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert "memory://" in errors[0]
    assert "--insecure" in errors[1]
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["server", "--broker", "redis://127.0.0.1:1/0"]) == 1
    assert "pip install 'upnext-core[server]'" in capsys.readouterr().err


def test_server_management_url_refusals(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--management-url` needs a backend with a management API and an http(s) URL; no password."""
    pytest.importorskip("fastapi")
    monkeypatch.delenv("UPNEXT_API_TOKEN", raising=False)
    management = f"http://guest:{SECRET}@127.0.0.1:15672"
    assert (
        main(["server", "--broker", "redis://127.0.0.1:1/0", "--management-url", management]) == 1
    )
    monkeypatch.setenv("UPNEXT_MANAGEMENT_URL", f"ftp://guest:{SECRET}@127.0.0.1:21")
    assert main(["server", "--broker", "amqp://127.0.0.1:1/"]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2
    assert "the redis:// backend offers no management API" in errors[0]
    assert "ftp://guest:***@127.0.0.1:21" in errors[1]
    assert SECRET not in "".join(errors)


def test_purge_without_yes_on_a_pipe_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A purge nobody confirmed does nothing and exits 2."""
    assert main(["dlq", "--broker", "redis://127.0.0.1:1/0", "purge"]) == 2
    assert "--yes" in capsys.readouterr().err


def test_kw_values_are_json_or_text() -> None:
    """--kw values parse as JSON when they can, else stay strings."""
    assert _kwargs(["n=3", "name=bob", "tags=[1,2]", "flag=true", "empty="]) == {
        "n": 3,
        "name": "bob",
        "tags": [1, 2],
        "flag": True,
        "empty": "",
    }
    with pytest.raises(ConfigurationError):
        _kwargs(["novalue"])


def test_table_aligns_and_cuts() -> None:
    """Columns line up; long cells are cut to one line."""
    text = table(["A", "LONG HEADER"], [["x" * 100, "multi\nline"]], max_width=10)
    header, row = text.splitlines()
    assert row.startswith("x" * 9 + "…")
    assert header.index("LONG") == row.index("multi")


def test_progress_draws_only_on_a_terminal(tmp_path: Path) -> None:
    """The bar is for people: nothing is written to a pipe or file."""
    with (tmp_path / "out").open("w") as stream:
        progress = Progress("replaying", 3, stream)
        progress.step()
        progress.close()
    assert (tmp_path / "out").read_text() == ""


def test_server_app_option_brings_broker_and_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`server --app mod:worker` serves that worker's broker and lists its queues; no password."""
    pytest.importorskip("uvicorn")
    import uvicorn

    (tmp_path / "appmod.py").write_text(
        textwrap.dedent(
            f"""
            import upnext
            worker = upnext.Worker("orders", broker="redis://:{SECRET}@127.0.0.1:1/0")

            @worker.task(queue="emails")
            async def send(n: int) -> int:
                return n
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the cwd; undo it after
    monkeypatch.delitem(sys.modules, "appmod", raising=False)
    monkeypatch.delenv("UPNEXT_API_TOKEN", raising=False)
    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert main(["server", "--app", "appmod:worker", "--queue", "extra", "--port", "9"]) == 0
    backend = served["app"].state.backend  # type: ignore[attr-defined]  # a FastAPI app
    assert backend.queues == ["extra", "orders", "emails"]
    assert (served["host"], served["port"]) == ("127.0.0.1", 9)
    out = capsys.readouterr().out
    assert "redis://:***@127.0.0.1:1/0" in out
    assert SECRET not in out


def test_schema_needs_a_backend_that_keeps_one() -> None:
    """`schema` without a URL exits 2; on a backend with no schema, 1 with one line."""
    assert _run("schema").returncode == 2
    done = _run("schema", "--broker", "memory://x")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: the memory:// backend keeps no schema: nothing to print"


def test_worker_metrics_flags_turn_metrics_on_before_the_worker_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from upnext.cli import _commands
    from upnext.metrics import JobMetrics

    (tmp_path / "metricsapp.py").write_text(
        "import upnext\nworker = upnext.Worker('m', broker='redis://127.0.0.1:6379/15')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ran: list[upnext.Worker] = []

    def run(worker: upnext.Worker) -> int:
        ran.append(worker)
        return 0

    monkeypatch.setattr(_commands, "run", run)
    args = ["worker", "metricsapp:worker", "--metrics-port", "0", "--metrics-host", "::1"]
    assert main(args) == 0
    (worker,) = ran
    assert isinstance(worker.metrics, JobMetrics)
    exporter = worker.metrics_exporter
    assert exporter is not None
    assert (exporter.host, exporter.requested_port) == ("::1", 0)
