"""Passwords never reach a log: a filter on upnext's loggers and its drivers' own.

Client libraries log connection URLs themselves (aiormq: "Reconnect attempt
failed amqp:/guest:secret@..." for a URL it cannot parse), and a user's
handlers print whatever reaches them. So upnext attaches one filter to the
loggers of every library it drives, not to handlers: it rewrites a record's
message (its traceback text, and its `error` and `reason` attributes) with
URL passwords, and every password a broker URL of this process carries,
replaced by ``***`` (`upnext.broker.redact`).

A logger filter sees only records logged on that very logger, not those
propagated from its children; so the filter goes on each existing logger
under those names, and is attached again whenever a broker is configured
(by then its driver's modules, and their loggers, exist).
"""

from __future__ import annotations

import logging
import threading

from upnext.broker.redact import redact, url_secrets

__all__ = ["LIBRARY_LOGGERS", "PasswordFilter", "protect_logs", "scrub"]

# The loggers of upnext, of every driver it uses, and of what serves its API.
LIBRARY_LOGGERS = (
    "upnext",
    "upnext_redis",
    "upnext_rabbitmq",
    "upnext_postgres",
    "aio_pika",
    "aiormq",
    "pamqp",
    "asyncpg",
    "redis",
    "uvicorn",
    "fastapi",
    "starlette",
    "asyncio",
)
# Free-text fields upnext's records carry as attributes (`upnext._joblog`): a structured
# formatter writes them beside the message, so they are scrubbed as it is.
_TEXT_FIELDS = ("error", "reason")
_SHORTEST_SECRET = 8  # shorter ones would blank out ordinary words (guest:guest)


class PasswordFilter(logging.Filter):
    """Rewrites each record with every password hidden; never drops a record."""

    def __init__(self) -> None:
        super().__init__("upnext-passwords")
        self._secrets: frozenset[str] = frozenset()
        # longest first (a password inside another), rebuilt on `remember`, not per record
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def remember(self, url: str) -> None:
        """Also hide the passwords of `url` (and their percent-decoded forms) wherever seen."""
        found = {s for s in url_secrets(url) if len(s) >= _SHORTEST_SECRET}
        with self._lock:
            self._secrets |= found
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        """`text` with URL passwords and remembered secrets replaced by ``***``."""
        text = redact(text)  # URL passwords
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return True
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        for field in _TEXT_FIELDS:
            value = getattr(record, field, None)
            if isinstance(value, str):
                setattr(record, field, self.scrub(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


_FILTER = PasswordFilter()  # one per process: the loggers it guards are per process too


def password_filter() -> PasswordFilter:
    """The process's one password filter (attached to loggers by `protect_logs`)."""
    return _FILTER


def protect_logs(*urls: str) -> PasswordFilter:
    """Attach the filter to the library loggers (again: new ones appear as drivers load).

    `urls` are remembered, so their passwords are hidden even outside a URL.
    """
    for url in urls:
        _FILTER.remember(url)
    names = [n for n in list(logging.root.manager.loggerDict) if _guarded(n)]
    for name in {*LIBRARY_LOGGERS, *names}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER


def _guarded(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARY_LOGGERS)


def scrub(text: str) -> str:
    """`text` as the log filter leaves it: URL passwords and remembered secrets hidden."""
    return _FILTER.scrub(text)
