"""glibc's mmap threshold fixed in worker processes (the poison-input RSS bar is in tests/chaos)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

CODE = "from upnext._memory import return_large_frees; print(return_large_frees())"


def _has_glibc_mallopt() -> bool:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018  # the lookup is the check
    except (OSError, AttributeError):
        return False
    return True


def _run(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip()


@pytest.mark.skipif(not _has_glibc_mallopt(), reason="glibc only")
def test_threshold_is_set_unless_opted_out() -> None:
    """On glibc mallopt succeeds; UPNEXT_KEEP_MALLOC leaves malloc alone."""
    base = {k: v for k, v in os.environ.items() if k != "UPNEXT_KEEP_MALLOC"}
    assert _run(base) == "True"
    assert _run({**base, "UPNEXT_KEEP_MALLOC": "1"}) == "False"
