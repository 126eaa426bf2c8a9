"""The CLI's log writer thread: lines appear while the worker idles, none lost at a stop.

And the job fields a JSON line writes (`error`, `reason`) are scrubbed of
passwords like the message is.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import upnext
from upnext._joblog import JobLine, _info
from upnext._logsafe import password_filter
from upnext.cli._joblines import made
from upnext.cli._logging import JsonFormatter, _TextFormatter, worker_logging
from upnext.testing.semantics_base import wait_until

LIMIT = 5.0
SECRET = "writer-canary-" + uuid.uuid4().hex[:8]


def _worker(monkeypatch: pytest.MonkeyPatch) -> upnext.Worker:
    # pytest's capture handlers on the root (set per test phase) would make
    # `worker_logging` add none of its own
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    return upnext.Worker(
        f"writer-{uuid.uuid4().hex[:8]}", broker=f"memory://{uuid.uuid4().hex}", load_plugins=False
    )


def _job_lines(path: Path, job_ids: set[str]) -> list[str]:
    return [
        line
        for line in path.read_text().splitlines()
        if line.split()[4:5] == ["job"] and line.split()[5] in job_ids
    ]


async def test_a_line_written_while_the_worker_idles_is_in_the_file_within_half_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer flushes on its own schedule, not only at a stop."""
    worker = _worker(monkeypatch)

    @worker.task
    async def work() -> int:
        return 1

    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "text", stream=out):
        async with worker:
            job = await work.submit()
            await job.value(timeout=LIMIT)
            done = time.monotonic()
            await wait_until(
                lambda: len(_job_lines(path, {job.job_id})) == 1, within=LIMIT, what="the line"
            )
            assert time.monotonic() - done < 0.5
    assert "succeeded in" in _job_lines(path, {job.job_id})[0]


async def test_every_line_is_in_the_file_after_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 jobs drained, the worker stopped: 300 job lines, then the stop line last."""
    worker = _worker(monkeypatch)

    @worker.task
    async def work(n: int) -> int:
        return n

    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "text", stream=out):
        async with worker:
            jobs = await work.submit_many([{"n": n} for n in range(300)])
            for job in jobs:
                await job.value(timeout=LIMIT)
    lines = path.read_text().splitlines()
    assert len(_job_lines(path, {job.job_id for job in jobs})) == 300
    assert "upnext.worker: worker" in lines[-1]
    assert "stopped" in lines[-1]


def test_job_lines_queued_just_before_the_handler_goes_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines the writer has not taken yet when the command ends are written, not dropped.

    They left the event loop as tuples; once the command's handler is off the
    root they must not be handed to the logging module (no handler is left).
    """
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "text", stream=out):
        for n in range(50):
            _info("job %s succeeded", (f"last-{n}",), {"job_id": f"last-{n}"})
    written = [line for line in path.read_text().splitlines() if "job last-" in line]
    assert len(written) == 50


async def test_a_password_in_a_jobs_error_is_hidden_in_the_message_and_the_error_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead-letter line's JSON `error` field is scrubbed as its message is."""
    worker = _worker(monkeypatch)

    @worker.task(retries=0)
    async def connect() -> None:
        raise ConnectionError(f"redis://app:{SECRET}@cache:6379/0 refused")

    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "json", stream=out):
        async with worker:
            job = await connect.submit()
            with pytest.raises(Exception):  # noqa: B017, PT011  # the job's failure, any type
                await job.value(timeout=LIMIT)
            await worker.join(timeout=LIMIT)
    text = path.read_text()
    assert SECRET not in text
    records = [json.loads(line) for line in text.splitlines()]
    [line] = [r for r in records if r.get("job_id") == job.job_id]
    assert line["outcome"] == "dead_lettered"
    assert "redis://app:***@cache:6379/0 refused" in line["error"]
    assert "redis://app:***@cache:6379/0 refused" in line["message"]


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_job_line_is_stamped_when_the_job_settled_not_when_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread makes job records late (up to its flush interval): with the right time."""
    worker = _worker(monkeypatch)

    @worker.task
    async def work() -> int:
        return 1

    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "json", stream=out):
        async with worker:
            job = await work.submit()
            await job.value(timeout=LIMIT)
            settled = time.time()
    [line] = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("job_id")]
    stamped = datetime.fromisoformat(line["timestamp"]).timestamp()
    assert settled - 0.05 <= stamped <= settled + 0.002, (stamped, settled)
    assert (line["task"], line["outcome"], line["attempt"]) == (work.name, "succeeded", 1)


async def test_a_handler_or_filter_added_later_gets_or_drops_every_job_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Job lines skip the logging module only while the command's handler is the only one."""
    worker = _worker(monkeypatch)

    @worker.task
    async def work(n: int) -> int:
        return n

    kept = _Kept()
    path = tmp_path / "worker.log"
    job_log = logging.getLogger("upnext.job")
    with path.open("w") as out, worker_logging("info", "text", stream=out):
        async with worker:
            alone = await work.submit_many([{"n": n} for n in range(50)])
            for job in alone:
                await job.value(timeout=LIMIT)
            alone_ids = {j.job_id for j in alone}
            await wait_until(
                lambda: len(_job_lines(path, alone_ids)) == 50, within=LIMIT, what="written"
            )
            logging.getLogger("upnext").addHandler(kept)
            try:
                shared = await work.submit_many([{"n": n} for n in range(50)])
                for job in shared:
                    await job.value(timeout=LIMIT)
                await wait_until(lambda: len(kept.records) >= 50, within=LIMIT, what="lines")
            finally:
                logging.getLogger("upnext").removeHandler(kept)
            hidden_ids = {uuid.uuid4().hex for _ in range(20)}  # known before any line exists

            def dropped(record: logging.LogRecord) -> bool:
                return getattr(record, "job_id", None) not in hidden_ids

            job_log.addFilter(dropped)
            try:
                hidden = [await work.options(job_id=i).submit(n=0) for i in hidden_ids]
                for job in hidden:
                    await job.value(timeout=LIMIT)
                marker = await work.submit(n=-1)  # written after them: they were judged
                await marker.value(timeout=LIMIT)
                await wait_until(
                    lambda: len(_job_lines(path, {marker.job_id})) == 1, within=LIMIT, what="it"
                )
            finally:
                job_log.removeFilter(dropped)
    ids = {job.job_id for job in shared}
    assert {getattr(r, "job_id", None) for r in kept.records} == ids
    assert len(_job_lines(path, alone_ids)) == 50
    assert len(_job_lines(path, ids)) == 50  # once each, though the logger re-queued them
    assert _job_lines(path, hidden_ids) == []


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_job_line_written_straight_reads_as_its_filtered_record_would(fmt: str) -> None:
    """The writer's fast path (no record) gives the text the record path gives, passwords hid."""
    formatter = JsonFormatter() if fmt == "json" else _TextFormatter()
    url = f"redis://app:{SECRET}@cache:6379/0"
    now = time.time()
    fields = {"job_id": "j1", "task": "app.charge", "queue": "q", "attempt": 2}
    refused, gave_up = f"ConnectionError: {url} refused", f"gave up on {url}"
    succeeded = {**fields, "outcome": "succeeded", "duration_ms": 12.25}
    retrying = {**fields, "outcome": "retrying", "error": refused, "delay_s": 0.5}
    dead = {**fields, "outcome": "dead_lettered", "reason": gave_up, "duration_ms": None}
    lines: list[JobLine] = [
        (now, logging.INFO, "job %s %s %d/%d in %.1f ms", ("j1", "a.b", 1, 3, 12.25), succeeded),
        (now + 0.9994, logging.INFO, "job %s failed: %s; %.3g s", ("j1", refused, 0.5), retrying),
        (now + 61.5, logging.INFO, "job %s dead-lettered (%s)", ("j1", gave_up), dead),
    ]
    for line in lines:
        record = made(line)
        assert password_filter().filter(record)
        assert formatter.format_line(line, password_filter().scrub) == formatter.format(record)
        assert SECRET not in formatter.format(record)


def test_a_job_line_written_straight_names_its_level_as_logging_does_now() -> None:
    """Each level reads as the record path writes it, a level renamed later included."""
    formatter = _TextFormatter()
    now = time.time()
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, 25):
        line: JobLine = (now, level, "job %s", ("j1",), {"job_id": "j1"})
        assert formatter.format_line(line, password_filter().scrub) == formatter.format(made(line))
    line = (now, logging.INFO, "job %s", ("j1",), {"job_id": "j1"})
    logging.addLevelName(logging.INFO, "NOTE")
    try:
        text = formatter.format_line(line, password_filter().scrub)
        assert text == formatter.format(made(line))
        assert " NOTE    upnext.job: job j1" in text
    finally:
        logging.addLevelName(logging.INFO, "INFO")


async def test_job_lines_make_no_record_while_the_commands_handler_is_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path: 100 job lines written from their tuples, not one LogRecord made for them."""
    worker = _worker(monkeypatch)
    made_for: list[str] = []
    job_log = logging.getLogger("upnext.job")
    make = job_log.makeRecord

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made_for.append(args[0])
        return make(*args, **kwargs)

    monkeypatch.setattr(job_log, "makeRecord", counting)

    @worker.task
    async def work(n: int) -> int:
        return n

    path = tmp_path / "worker.log"
    with path.open("w") as out, worker_logging("info", "text", stream=out):
        async with worker:
            jobs = await work.submit_many([{"n": n} for n in range(100)])
            for job in jobs:
                await job.value(timeout=LIMIT)
    assert len(_job_lines(path, {job.job_id for job in jobs})) == 100
    assert made_for == []
