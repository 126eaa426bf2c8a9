"""How `upnext worker` logs: a level, text or JSON lines, written off the event loop.

Only the command configures logging; upnext used as a library adds no
handler (its loggers, ``upnext`` and below, reach whatever the application
set up). The command's handler is a `QueueHandler` on the root logger: the
event loop only merges a record's message and puts it on a queue, and a
listener thread formats it and writes it to stderr.

Job lines skip even that: while this handler is the only one a job line
would reach, the worker hands the listener a bare tuple (`set_line_sink`)
and the listener makes the record (its time is when the job settled). If
another handler or filter appears meanwhile on the way from ``upnext.job``
to the root, the listener gives such records to the logger instead, so
every handler still gets each line.

The listener wakes every `FLUSH_INTERVAL` seconds, not once per record: a
thread woken on every put would contend for the GIL with the event loop for
each job line. Each wake-up writes what was queued as one write and one
flush; stopping writes the rest. A process killed outright loses the lines
of its last interval at most.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from logging.handlers import QueueHandler
from typing import Any, TextIO

from upnext._joblog import JOB_FIELDS, JOB_LOG, JobLine, set_line_sink
from upnext._logsafe import LIBRARY_LOGGERS
from upnext.cli._joblines import JobLines, made

__all__ = ["LEVELS", "TEXT_FORMAT", "JsonFormatter", "worker_logging"]

LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FLUSH_INTERVAL = 0.1  # seconds between the listener's wake-ups: how late a line may appear
_BATCH = 10_000  # records per write at most: a backlog is written in pieces, not held whole
_ENCODER = json.JSONEncoder(default=str)  # json.dumps(..., default=str) builds one per call
_SCRUBBED = ("error", "reason")  # the free-text job fields the password filter rewrites


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, and the job's fields.

    The job fields (`job_id`, `task`, `queue`, `attempt`, `duration_ms`,
    `outcome`, ...) are written when the record carries them; a traceback
    goes in `exception`.
    """

    _second = -1  # the second `_date_time` and `_zone` were computed for
    _date_time = ""
    _zone = ""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        data: dict[str, Any] = {
            "timestamp": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                data[field] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return _ENCODER.encode(data)

    def format_line(self, line: JobLine, scrub: Callable[[str], str]) -> str:
        """As `format` gives the record of a job line once the password filter ran."""
        created, level, message, args, fields = line
        data: dict[str, Any] = {
            "timestamp": self._timestamp(created),
            "level": logging.getLevelName(level),
            "logger": JOB_LOG.name,
            "message": scrub(message % args),
        }
        for field in JOB_FIELDS:
            value = fields.get(field)
            if value is not None:
                data[field] = (
                    scrub(value) if field in _SCRUBBED and isinstance(value, str) else value
                )
        return _ENCODER.encode(data)

    def _timestamp(self, created: float) -> str:
        """`created` as ISO 8601 UTC to the millisecond; the date and time part cached per second.

        Reads as ``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``
        (microseconds rounded half-even, then cut to milliseconds).
        """
        second = int(created)
        micro = round((created - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            self._second, self._date_time, self._zone = second, stamp[:19], stamp[19:]
        return f"{self._date_time}.{micro // 1000:03d}{self._zone}"


# What `TEXT_FORMAT` writes between the time and the message of a job line, per level name.
_HEADS: dict[str, str] = {}


class _TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, with the local date and time part of `asctime` cached per second."""

    _second = -1
    _date_time = ""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format_line(self, line: JobLine, scrub: Callable[[str], str]) -> str:
        """As `format` gives the record of a job line once the password filter ran."""
        created, level, message, args, _ = line
        second = int(created)
        if second != self._second:  # `_cache`, its test inline: one call less per line
            self._cache(created)
        msecs = int((created - second) * 1000)
        name = logging.getLevelName(level)  # asked each time: `addLevelName` may rename it
        head = _HEADS.get(name)
        if head is None:
            head = _HEADS[name] = f" {name:<7} {JOB_LOG.name}: "
        return f"{self._date_time},{msecs:03d}{head}{scrub(message % args)}"

    def _cache(self, created: float) -> None:
        second = int(created)
        if second != self._second:
            local = self.converter(created)
            self._second, self._date_time = second, time.strftime(self.default_time_format, local)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As `logging.Formatter.formatTime`, strftime run once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        self._cache(record.created)
        with_msecs = self.default_msec_format
        return with_msecs % (self._date_time, record.msecs) if with_msecs else self._date_time


class _MergingQueueHandler(QueueHandler):
    """Puts records on an in-process queue, leaving formatting to the listener's thread.

    The stdlib's `prepare` formats the whole record (for queues that pickle);
    this one only merges the message with its arguments (which may change
    once the call returns), in place: the merged record reads the same.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # In place, not on a copy: a merged record reads the same to any other handler.
        record.msg = record.message = record.getMessage()
        record.args = None
        return record

    def handle(self, record: logging.LogRecord) -> bool:
        """As `logging.Handler.handle`, without its lock: the queue is thread-safe already."""
        passed: object = self.filter(record)
        if isinstance(passed, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = passed
        if passed:
            self.emit(record)
        return bool(passed)


_Queued = logging.LogRecord | JobLine


class _BatchListener:
    """Writes queued records through `handler`'s formatter and stream, in batches, on a thread.

    A queued job line (a tuple) becomes text or a record here (`JobLines`).
    """

    def __init__(
        self,
        records: queue.SimpleQueue[_Queued],
        handler: logging.StreamHandler[TextIO],
        queued: logging.Handler,
    ) -> None:
        self._records = records
        self._handler = handler
        assert handler.formatter is not None
        self._jobs = JobLines(queued, handler.formatter)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upnext-log-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self) -> None:
        """Write every record queued so far, then end the thread."""
        self._stopping.set()
        self._thread.join()

    def write_rest(self) -> None:
        """Write what was queued since `stop`, in the calling thread."""
        while self._write_queued() == _BATCH:
            pass

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()  # read first: what is queued now gets written
            while self._write_queued() == _BATCH:  # a backlog: write on, no wait
                pass
            if stopping:
                return
            self._stopping.wait(FLUSH_INTERVAL)

    def _write_queued(self) -> int:
        """Write up to `_BATCH` queued records; how many were taken."""
        lines: list[str] = []
        last: logging.LogRecord | None = None
        taken = 0
        self._jobs.begin()
        while taken < _BATCH:
            try:
                item = self._records.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if isinstance(item, tuple):
                try:
                    rendered = self._jobs.render(item)
                except Exception:  # a broken line: reported the stdlib's way, the rest written
                    self._handler.handleError(made(item))
                    continue
                if rendered is None:
                    continue
                if isinstance(rendered, str):
                    lines.append(rendered + self._handler.terminator)
                    continue
                item = rendered
            last = item
            try:
                lines.append(self._handler.format(last) + self._handler.terminator)
            except Exception:  # a broken record: reported the stdlib's way, the rest written
                self._handler.handleError(last)
        if lines:
            try:
                stream = self._handler.stream
                stream.write("".join(lines))
                stream.flush()
            except Exception:
                self._handler.handleError(last or logging.makeLogRecord({"msg": "log write"}))
        return taken


@contextmanager
def worker_logging(level: str, fmt: str, stream: TextIO | None = None) -> Iterator[None]:
    """Log upnext's records at `level` and above as `fmt` ("text" or "json") lines.

    Other libraries' records are shown from WARNING (or `level`, if higher).
    When the application already gave the root logger a handler, only the
    levels are set: its handlers stay the only ones.
    """
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    loggers = [logging.getLogger(n) for n in LIBRARY_LOGGERS if n.startswith("upnext")] + [root]
    levels = [logger.level for logger in loggers]
    for logger in loggers[:-1]:
        logger.setLevel(threshold)
    root.setLevel(max(threshold, logging.WARNING))
    try:
        if root.handlers:
            yield
        else:
            with _queued_handler(root, fmt, stream):
                yield
    finally:
        for logger, saved in zip(loggers, levels, strict=True):
            logger.setLevel(saved)


@contextmanager
def _queued_handler(root: logging.Logger, fmt: str, stream: TextIO | None) -> Iterator[None]:
    """A stream handler fed through a queue and a listener thread, on `root` meanwhile."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else _TextFormatter()
    handler.setFormatter(formatter)
    records: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
    queued = _MergingQueueHandler(records)
    listener = _BatchListener(records, handler, queued)
    listener.start()
    root.addHandler(queued)
    set_line_sink(records.put)
    try:
        yield
    finally:
        set_line_sink(None)  # job lines from now on are records, through `queued`
        # Written while `queued` is still the root's: a job line still queued is
        # then written as text; with the handler gone it would go to the logger,
        # which has no handler left, and be lost.
        try:
            listener.stop()
        finally:  # the handler goes even if the stop was interrupted: nothing drains it now
            root.removeHandler(queued)
            listener.write_rest()  # records another thread logged meanwhile
