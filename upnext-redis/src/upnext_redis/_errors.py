"""Map redis-py errors to upnext's at the boundary, never leaking a password.

redis ConnectionError, TimeoutError, OSError  ->  BrokerUnavailable
"OOM ..." reply (maxmemory under noeviction)  ->  BrokerError (nothing written)
any other RedisError                          ->  BrokerError
"""

from __future__ import annotations

from types import TracebackType

from redis import exceptions as rx
from upnext.broker.redact import redact, redact_url
from upnext.errors import BrokerError, BrokerUnavailable

__all__ = ["ErrorMapper"]


class ErrorMapper:
    """Turns driver errors into BrokerUnavailable/BrokerError with a safe message."""

    def __init__(self, url: str) -> None:
        self.safe_url = redact_url(url)
        self._url = url

    def scrub(self, text: str) -> str:
        """`text` with the URL's passwords, and any URL's, replaced by ``***``."""
        return redact(text, self._url)

    def unavailable(self, exc: BaseException) -> BrokerUnavailable:
        """The BrokerUnavailable for a connection-level failure."""
        detail = self.scrub(str(exc)) or type(exc).__name__
        return BrokerUnavailable(f"Redis at {self.safe_url} is unreachable: {detail}")

    def error(self, exc: BaseException) -> BrokerError:
        """The BrokerError for a refused command."""
        detail = self.scrub(str(exc)) or type(exc).__name__
        if isinstance(exc, rx.OutOfMemoryError) or detail.startswith("OOM"):
            return BrokerError(
                f"Redis at {self.safe_url} is out of memory (maxmemory reached); "
                f"nothing was written: {detail}"
            )
        return BrokerError(f"Redis at {self.safe_url} refused the operation: {detail}")

    def boundary(self) -> ErrorMapper:
        """Re-raise driver errors inside the ``with`` block as upnext errors.

        The driver's exception is not chained: its text and arguments may
        carry connection details, and ours already says what happened. (A
        plain context manager: entered on every call, it must cost nothing.)
        """
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
            raise self.unavailable(exc) from None
        if isinstance(exc, rx.RedisError):
            raise self.error(exc) from None
