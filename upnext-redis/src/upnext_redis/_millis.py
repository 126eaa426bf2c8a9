"""Seconds as the whole milliseconds Redis stores (expiries, due times, leases)."""

from __future__ import annotations

import math

from upnext.errors import BrokerError

__all__ = ["MAX_MS", "whole_ms"]

# Due times are sorted-set scores (doubles) and Lua numbers: exact up to 2**53.
MAX_MS = 2**53 - 1


def whole_ms(seconds: float, what: str) -> int:
    """`seconds` in whole milliseconds, rounded up (0 if not positive).

    BrokerError, before anything is sent, for NaN, Infinity or more than
    Redis can hold, so a bad value never reaches a script half-way through.
    """
    if not math.isfinite(seconds) or seconds * 1000 > MAX_MS:
        raise BrokerError(f"{what} of {seconds!r} s is not a duration Redis can store")
    if seconds <= 0:
        return 0
    whole = int(seconds * 1000)
    return whole if whole >= seconds * 1000 else whole + 1
