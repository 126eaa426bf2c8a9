"""`@worker.cron`'s schedules, its one-line errors and the missed-run choice.

Firing across workers and brokers is `upnext.testing.CronSemantics`'s; these
pin what it cannot see: how expressions are read (seconds first), interval
alignment, timezones, and bad input.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import upnext
from upnext._cronscheduler import choose_ticks
from upnext._cronspec import TICK_HEADER, CronSchedule
from upnext._cronstate import CronDef, tick_job_id
from upnext.middleware import Job, Middleware, Submission


def _at(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def test_a_sixth_field_is_seconds_first() -> None:
    schedule = CronSchedule("*/10 * * * * *", None, None, "t")
    start = _at(2026, 1, 1, 0, 0, 3)
    assert schedule.next_after(start) == _at(2026, 1, 1, 0, 0, 10)
    # Minutes field "*": every minute's 0, 10, 20 ... seconds, not every second of minute 10.
    assert schedule.recent(_at(2026, 1, 1, 0, 1, 0), start, 10) == [
        _at(2026, 1, 1, 0, 0, s) for s in (10, 20, 30, 40, 50)
    ] + [_at(2026, 1, 1, 0, 1, 0)]


def test_five_fields_are_minute_first() -> None:
    schedule = CronSchedule("*/5 * * * *", None, None, "t")
    assert schedule.next_after(_at(2026, 1, 1, 0, 1, 30)) == _at(2026, 1, 1, 0, 5, 0)


def test_recent_is_oldest_first_bounded_and_includes_a_tick_at_until() -> None:
    schedule = CronSchedule("* * * * * *", None, None, "t")
    until = _at(2026, 1, 1, 0, 0, 10)
    assert schedule.recent(until, _at(2026, 1, 1, 0, 0, 7), 10) == [until - 2, until - 1, until]
    assert schedule.recent(until, None, 2) == [until - 1, until]


def test_every_ticks_at_multiples_of_the_interval() -> None:
    schedule = CronSchedule(None, 0.25, None, "t")
    assert schedule.recent(100.3, 99.6, 10) == [99.75, 100.0, 100.25]
    assert schedule.next_after(100.25) == 100.5
    assert schedule.text == "every 0.25s"


def test_a_timezone_gives_ticks_in_local_time_across_dst() -> None:
    schedule = CronSchedule("0 12 * * *", None, "Europe/Paris", "t")
    winter = schedule.moment(schedule.next_after(_at(2026, 3, 27, 0, 0, 0)))
    next_day = schedule.moment(schedule.next_after(winter.timestamp()))
    assert (winter.hour, winter.utcoffset()) == (12, timedelta(hours=1))
    assert (next_day.hour, next_day.utcoffset()) == (12, timedelta(hours=1))  # 28 March: still CET
    after_switch = schedule.moment(schedule.next_after(_at(2026, 3, 30, 0, 0, 0)))
    assert (after_switch.hour, after_switch.utcoffset()) == (12, timedelta(hours=2))


@pytest.mark.parametrize(
    ("expression", "options", "message"),
    [
        ("* * * *", {}, "has 4 fields"),
        ("* * * * * * *", {}, "has 7 fields"),
        ("61 * * * *", {}, "not a valid cron expression"),
        ("* * * * *", {"timezone": "Mars/Olympus"}, "unknown timezone"),
        ("* * * * *", {"every": 1.0}, "not both"),
        (None, {}, "not both"),
        (None, {"every": -1.0}, "every"),
        (None, {"every": 1.0, "timezone": "UTC"}, "timezone= applies"),
        ("* * * * *", {"max_catch_up_seconds": 0.0}, "max_catch_up_seconds"),
    ],
)
def test_bad_input_is_a_one_line_configuration_error(
    expression: str | None, options: dict[str, object], message: str
) -> None:
    worker = upnext.Worker("cron-bad", "memory://")
    with pytest.raises(upnext.ConfigurationError, match=message) as caught:
        worker.cron(expression, **options)  # type: ignore[arg-type]  # bad on purpose
    assert "\n" not in str(caught.value)


def test_a_cron_function_takes_no_arguments() -> None:
    worker = upnext.Worker("cron-args", "memory://")
    with pytest.raises(upnext.ConfigurationError, match="takes no arguments"):

        @worker.cron("* * * * *")  # type: ignore[arg-type]  # what the test refuses
        async def needs(x: int) -> None: ...


def test_a_cron_is_a_task_with_its_name_and_timeout() -> None:
    worker = upnext.Worker("cron-task", "memory://")

    @worker.cron("* * * * *", name="beat", timeout=5.0)
    async def beat() -> None: ...

    assert worker.tasks["beat"] is beat
    assert beat.timeout == 5.0
    assert "beat" in worker.crons
    with pytest.raises(upnext.ConfigurationError, match="already has a task named 'beat'"):
        worker.cron(every=1.0, name="beat")(beat.fn)


def test_the_tick_job_id_is_the_same_for_the_same_tick() -> None:
    assert tick_job_id("beat", 100.0004) == tick_job_id("beat", 100.0) == "cron:beat:100000"
    assert tick_job_id("beat", 101.0) != tick_job_id("beat", 100.0)


def _cron(
    policy: upnext.MissedRunPolicy, catch_up: float | None = None, *, overlap: bool = True
) -> CronDef:
    worker = upnext.Worker("cron-choose", "memory://")
    task = worker.cron(every=1.0, missed_run_policy=policy)(lambda: None)
    return CronDef(task, CronSchedule(None, 1.0, None, "t"), policy, catch_up, overlap)


@pytest.mark.parametrize(
    ("policy", "catch_up", "fired"),
    [
        (upnext.MissedRunPolicy.LATEST_ONLY, None, [96.0, 101.0, 102.0]),
        (upnext.MissedRunPolicy.CATCH_UP, None, [93.0, 94.0, 95.0, 96.0, 101.0, 102.0]),
        (upnext.MissedRunPolicy.CATCH_UP, 7.0, [95.0, 96.0, 101.0, 102.0]),
        (upnext.MissedRunPolicy.SKIP, None, [101.0, 102.0]),
    ],
)
def test_ticks_before_the_scheduler_started_follow_the_policy_later_ones_all_fire(
    policy: upnext.MissedRunPolicy, catch_up: float | None, fired: list[float]
) -> None:
    due = [93.0, 94.0, 95.0, 96.0, 101.0, 102.0]
    assert choose_ticks(_cron(policy, catch_up), due, now=102.0, alive_since=100.0) == fired


def test_without_overlap_late_ticks_found_at_once_fire_as_the_latest() -> None:
    """A late check that finds ticks 101 and 102 due fires 102 only: together they'd overlap."""
    cron = _cron(upnext.MissedRunPolicy.SKIP, overlap=False)
    assert choose_ticks(cron, [101.0, 102.0], now=102.3, alive_since=100.0) == [102.0]
    assert choose_ticks(cron, [101.0], now=101.3, alive_since=100.0) == [101.0]


async def test_ticks_pass_before_enqueue_middleware_and_keep_their_tick() -> None:
    """A tick is submitted like any job: `before_enqueue` sees it and its headers travel."""
    seen: list[dict[str, str]] = []

    class Tag(Middleware):
        async def before_enqueue(self, submission: Submission) -> None:
            submission.headers["x-tag"] = submission.job_id

        async def before_run(self, job: Job) -> None:
            seen.append(dict(job.headers))

    worker = upnext.Worker("cron-mw", "memory://cron-mw", middleware=[Tag()])
    worker.cron(every=0.1, name="cron-mw.beat")(lambda: None)
    async with worker:
        await asyncio.sleep(0.35)
    assert seen
    for headers in seen:
        assert headers["x-tag"].startswith("cron:cron-mw.beat:")
        assert datetime.fromisoformat(headers[TICK_HEADER]).tzinfo is not None


def test_dst_as_croniter_handles_it_a_gap_moves_on_a_repeat_runs_twice() -> None:
    """docs/scheduling.md: a 02:30 that does not exist runs at 03:00; a repeated 01:30 twice."""
    spring = CronSchedule("30 2 * * *", None, "America/New_York", "t")
    gap = spring.moment(spring.next_after(_at(2026, 3, 8, 0, 0, 0)))
    assert (gap.hour, gap.minute, gap.utcoffset()) == (3, 0, timedelta(hours=-4))
    fall = CronSchedule("30 1 * * *", None, "America/New_York", "t")
    ticks = fall.recent(_at(2026, 11, 1, 12, 0, 0), _at(2026, 10, 31, 12, 0, 0), 10)
    assert [(fall.moment(t).hour, fall.moment(t).utcoffset()) for t in ticks] == [
        (1, timedelta(hours=-4)),
        (1, timedelta(hours=-5)),
    ]
