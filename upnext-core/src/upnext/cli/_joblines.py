"""Job lines in `upnext worker`'s writer thread: text made straight from a tuple, or a record.

The worker sends an INFO job line as a tuple (`upnext._joblog.set_line_sink`).
Once per batch the writer asks how such a line would travel if it were a
record of ``upnext.job``:

- it would reach the command's handler only, and meet no filter but the
  password filter: the handler's formatter writes the text straight from the
  tuple (`format_line`), passwords hidden; no record is made (~2 us instead
  of ~10 to ~20);
- it would reach the command's handler only, through other filters: the
  record is made, filtered as `Logger.handle` would, and formatted;
- another handler would see it: the record goes to the logger, which gives
  it to every handler (the command's queues it again, as a record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from upnext._joblog import JOB_LOG, JobLine
from upnext._logsafe import password_filter

__all__ = ["JobLines", "LineFormatter", "made"]


@runtime_checkable
class LineFormatter(Protocol):
    """A formatter that can also write a job line from its tuple, as `format` would."""

    def format_line(self, line: JobLine, scrub: Callable[[str], str]) -> str:
        """The text `format` gives the record of `line` once the password filter ran."""
        ...


def made(line: JobLine) -> logging.LogRecord:
    """The record `JOB_LOG` would have made for `line` when it was sent."""
    created, level, message, args, fields = line
    record = JOB_LOG.makeRecord(JOB_LOG.name, level, __file__, 0, message, args, None, None, fields)
    record.relativeCreated -= (record.created - created) * 1000
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    return record


def _reaches_only(handler: logging.Handler) -> bool:
    """True if a record of JOB_LOG would reach `handler` and no other one.

    As `Logger.callHandlers` walks: every logger's handlers up to the root,
    or to the first that does not propagate. (Filters of the loggers above
    JOB_LOG never see its records.)
    """
    logger: logging.Logger | None = JOB_LOG
    while logger is not None:
        expected = [handler] if logger.parent is None else []
        if logger.handlers != expected:
            return False
        if not logger.propagate:
            return logger.parent is None
        logger = logger.parent
    return True  # the root, reached: it holds `handler` alone


class JobLines:
    """Turns queued job lines into text or records for the handler `queued` (see the module)."""

    def __init__(self, queued: logging.Handler, formatter: logging.Formatter) -> None:
        self._queued = queued
        self._fast = formatter if isinstance(formatter, LineFormatter) else None
        self._mode: str | None = None  # "text", "record" or "logger": asked once per batch
        self._scrub = password_filter().scrub  # the process's one filter

    def begin(self) -> None:
        """A new batch: ask again how lines travel."""
        self._mode = None

    def render(self, line: JobLine) -> str | logging.LogRecord | None:
        """The line's text, or its record to format, or None (dropped, or given to the logger)."""
        if self._mode is None:
            self._mode = self._ask()
        if self._mode == "text":
            assert self._fast is not None
            return self._fast.format_line(line, self._scrub)
        record = made(line)
        if self._mode == "logger":
            JOB_LOG.handle(record)  # every handler; ours queues it again
            return None
        return self._filtered(record)

    def _ask(self) -> str:
        if not _reaches_only(self._queued):
            return "logger"
        plain = JOB_LOG.filters in ([], [password_filter()]) and not self._queued.filters
        return "text" if plain and self._fast is not None and not JOB_LOG.disabled else "record"

    def _filtered(self, record: logging.LogRecord) -> logging.LogRecord | None:
        """`record` as JOB_LOG's filters and the handler's leave it (None: dropped)."""
        if JOB_LOG.disabled:
            return None
        for filterer in (JOB_LOG, self._queued):
            passed: object = filterer.filter(record)
            if not passed:
                return None
            if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may replace it
                record = passed
        return record
