"""Plain-text output for the CLI: aligned tables, a progress line, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["Progress", "fail", "format_time", "print_json", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 60) -> str:
    """Rows under their headers, columns aligned, each cell cut to `max_width`."""
    cells = [[_cut(str(c), max_width) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line per row
    return text if len(text) <= width else text[: width - 1] + "…"


def format_time(value: datetime | float | None) -> str:
    """A UTC timestamp to the second, or '-'."""
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout."""
    print(json.dumps(data, indent=2, default=str))


def fail(message: str, code: int = 1) -> int:
    """Print ``error: message`` on one line to stderr; return the exit code."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


class Progress:
    """A progress bar on stderr while a terminal watches; silent otherwise."""

    def __init__(self, verb: str, total: int | None, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()

    def step(self, count: int = 1) -> None:
        """Count `count` more items done and redraw."""
        self.done += count
        if not self.live:
            return
        if self.total:
            filled = int(30 * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (30 - filled)
            self.stream.write(f"\r{self.verb} [{bar}] {self.done}/{self.total}")
        else:
            self.stream.write(f"\r{self.verb} {self.done}")
        self.stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
