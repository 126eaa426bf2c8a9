"""`gather`: wait for several jobs (or any awaitables) at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

__all__ = ["gather"]


async def gather(*awaitables: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    """Await all of `awaitables` concurrently; results in order.

    With `return_exceptions=True` a failed job's `TaskExecutionError` is
    returned in its place instead of raised, so every outcome is collected.
    """
    return list(await asyncio.gather(*awaitables, return_exceptions=return_exceptions))
