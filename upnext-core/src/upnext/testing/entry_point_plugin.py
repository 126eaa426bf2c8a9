"""A plugin distribution for the conformance suite: middleware through an entry point.

`install(directory)` writes what pip would write for a distribution whose
``upnext.plugins`` entry point is this module: a ``.dist-info`` directory with
its METADATA and entry_points.txt. With `directory` on ``sys.path``,
``importlib.metadata`` (and so every ``Worker(load_plugins=True)``) finds it,
and the worker's pipeline gains `EntryPointMiddleware`:

- jobs of the task named `DELAYED_TASK` run no sooner than `DELAY` seconds
  after they were submitted (``before_run`` answers `Delay`, charging no
  attempt);
- the value of the task named `WRAPPED_TASK` is wrapped as ``"wrapped(...)"``
  (``around_run``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from upnext.hooks import hookimpl
from upnext.middleware import CallNext, Decision, Delay, Job, Middleware

__all__ = [
    "DELAY",
    "DELAYED_TASK",
    "DISTRIBUTION",
    "WRAPPED_TASK",
    "EntryPointMiddleware",
    "install",
    "upnext_middleware",
]

DISTRIBUTION = "upnext-testing-entry-point-plugin"
DELAYED_TASK = "upnext-testing.entry-point.delayed"
WRAPPED_TASK = "upnext-testing.entry-point.wrapped"
DELAY = 0.3  # seconds after submission before a delayed task's job may run


class EntryPointMiddleware(Middleware):
    """Delays `DELAYED_TASK`'s jobs and wraps `WRAPPED_TASK`'s value."""

    def applies_to(self, task: Any) -> bool:
        """Only the two tasks it knows by name."""
        return task is not None and task.name in (DELAYED_TASK, WRAPPED_TASK)

    async def before_run(self, job: Job) -> Decision | None:
        """A delayed task's job comes back until `DELAY` has passed since its submission."""
        if job.function != DELAYED_TASK or job.body is None:
            return None
        remaining = job.body.enqueued_at + DELAY - time.time()
        return Delay(remaining) if remaining > 0 else None

    async def around_run(self, job: Job, call_next: CallNext) -> Any:
        """Wrap the wrapped task's value."""
        value = await call_next()
        return f"wrapped({value})" if job.function == WRAPPED_TASK else value


@hookimpl
def upnext_middleware(worker: object) -> Sequence[Middleware]:
    """This plugin's middleware, for every worker that loads it."""
    return [EntryPointMiddleware()]


def install(directory: Path) -> Path:
    """Write this plugin's distribution metadata into `directory`; the .dist-info path."""
    dist_info = directory / f"{DISTRIBUTION.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[upnext.plugins]\n{DISTRIBUTION} = {__name__}\n", encoding="utf-8"
    )
    (dist_info / "RECORD").write_text("", encoding="utf-8")
    return dist_info
