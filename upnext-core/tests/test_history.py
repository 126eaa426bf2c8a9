"""The recent-jobs history: what the fixed tail records, and the bounded segments a tick writes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

from upnext._history import HISTORY_SEGMENTS, SEGMENT_JOBS, HistorySegment, JobHistory
from upnext._serializer import JobBody
from upnext.broker.state import STATE_VALUE_MAX
from upnext.hooks import HookEvent


def _finish(
    history: JobHistory, n: int, status: str = "complete", error: str | None = None
) -> None:
    body = JobBody(id=f"job-{n}", fn="app.tasks.work", queue="q", enqueued_at=100.0 + n)
    job = SimpleNamespace(id=body.id, queue="q", function=body.fn, attempt=1, body=body)
    run = SimpleNamespace(started=200.0 + n, finished=200.5 + n)
    event = HookEvent(
        job_id=body.id, function=body.fn, queue="q", attempt=1, max_attempts=1,
        status=status, error=error,
    )  # fmt: skip
    settlement = SimpleNamespace(
        status=status, item=None, events=[(None, "x", event)] if error else []
    )
    history.record(cast(Any, job), cast(Any, run), cast(Any, settlement))


def _segments(history: JobHistory) -> dict[str, HistorySegment]:
    return {w.key: HistorySegment.model_validate_json(w.value or b"") for w in history.writes("w1")}


def test_a_tick_writes_only_the_jobs_finished_since_the_last() -> None:
    history = JobHistory()
    for n in range(3):
        _finish(history, n)
    first = _segments(history)
    assert [j.job_id for s in first.values() for j in s.jobs] == ["job-0", "job-1", "job-2"]
    assert history.writes("w1") == []  # nothing new: nothing written
    _finish(history, 3)
    again = _segments(history)  # the current segment again, with everything it holds
    assert [j.job_id for s in again.values() for j in s.jobs] == [f"job-{n}" for n in range(4)]
    assert list(again) == list(first)


def test_the_store_keeps_a_bounded_number_of_segments_and_entries() -> None:
    history = JobHistory()
    keys: dict[str, HistorySegment] = {}
    for tick in range(20):
        for n in range(100):
            _finish(history, tick * 100 + n)
        keys.update(_segments(history))
    assert len(keys) == HISTORY_SEGMENTS, "a worker writes to a fixed set of keys"
    kept = [j for s in keys.values() for j in s.jobs]
    assert len(kept) <= HISTORY_SEGMENTS * SEGMENT_JOBS
    assert "job-1999" in {j.job_id for j in kept}, "the newest job is kept"
    assert all(len(s.model_dump_json()) <= STATE_VALUE_MAX for s in keys.values())


def test_only_finished_jobs_are_recorded_with_one_scrubbed_error_line() -> None:
    history = JobHistory()
    _finish(history, 1, status="scheduled")  # a retry: not finished
    _finish(history, 2, status="failed", error="ValueError: at redis://u:hunter2pass@h/0\nmore")
    (segment,) = _segments(history).values()
    (job,) = segment.jobs
    assert job.status == "failed"
    assert job.error == "ValueError: at redis://u:***@h/0"
    assert job.duration_ms == 500.0
    assert job.worker_id == "w1"
    assert json.loads(segment.model_dump_json())["jobs"][0]["job_id"] == "job-2"
