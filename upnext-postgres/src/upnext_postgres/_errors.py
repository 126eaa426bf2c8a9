"""Map asyncpg and socket errors to upnext's broker errors, at the boundary.

Connection trouble (refused, reset, timed out, closed, server shutting down)
becomes `BrokerUnavailable`; anything else the server refused becomes
`BrokerError`. Messages name the server by its redacted URL, never with a
password.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg
from upnext.broker.redact import redact
from upnext.errors import BrokerError, BrokerUnavailable, UpNextError

__all__ = ["bounded", "mapped"]

# SQLSTATE classes that mean "the server or the connection went away":
# 08 connection exception, 57P0x operator intervention (shutdown, crash recovery),
# 53300 too many connections.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")

_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(_UNAVAILABLE_STATES)
    return isinstance(exc, _UNAVAILABLE_TYPES)


@contextmanager
def mapped(where: str, what: str) -> Iterator[None]:
    """Re-raise driver errors inside the block as `BrokerUnavailable` / `BrokerError`.

    `where` is the redacted URL; `what` names the operation for the message.
    upnext's own errors and cancellation pass through untouched.
    """
    try:
        yield
    except UpNextError:
        raise
    except Exception as exc:
        raw = f"{type(exc).__name__}: {exc}".rstrip(": ")
        detail = redact(raw)
        cause = exc if detail == raw else None  # a chained driver error must not show a password
        if _is_unavailable(exc):
            message = f"PostgreSQL at {where} unavailable ({what}): {detail}"
            raise BrokerUnavailable(message) from cause
        if isinstance(exc, asyncpg.PostgresError):
            raise BrokerError(f"PostgreSQL at {where} refused {what}: {detail}") from cause
        raise


@asynccontextmanager
async def bounded(where: str, what: str, seconds: float) -> AsyncIterator[None]:
    """`mapped`, with the whole block (pool wait, connect, statement) ended within `seconds`.

    Each step has a timeout of its own, but callers queue for the pool: on a
    server that stopped answering, the n-th caller would wait for the n - 1
    before it. Past `seconds` the block raises `BrokerUnavailable`.
    """
    with mapped(where, what):
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                yield
        except TimeoutError:
            if not limit.expired():
                raise
            raise TimeoutError(f"no answer within {seconds:g} s") from None
