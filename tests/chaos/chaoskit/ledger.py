"""A record of every job execution kept outside the broker, and the verdict drawn from it.

Each execution appends one short line to a per-run file opened with O_APPEND:
one ``write`` of fewer than PIPE_BUF bytes to a local file is never interleaved
with another process's, so SIGKILLed writers leave whole lines or nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Entry", "Ledger", "Verdict", "report", "verdict"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line: what happened (S start, D done, F failed), to which job, where, when."""

    event: str
    index: int
    pid: int
    attempt: int
    at: float


class Ledger:
    """Append-only execution log at `path`, shared by every worker of a run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, event: str, index: int, attempt: int) -> None:
        """Append one line atomically (a single small O_APPEND write)."""
        line = f"{event} {index} {os.getpid()} {attempt} {time.time():.6f}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def entries(self, event: str | None = None) -> list[Entry]:
        """Every whole line so far (of one `event`, if given), in file order."""
        if not self.path.exists():
            return []
        out: list[Entry] = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 5 or (event is not None and parts[0] != event):
                continue
            out.append(
                Entry(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))
            )
        return out

    def count(self, event: str) -> int:
        """How many lines of `event` so far, duplicates included: cheap enough to poll at 50k."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        marker = f"{event} ".encode()
        return data.count(b"\n" + marker) + data.startswith(marker)

    def done(self) -> set[int]:
        """The indexes of jobs that completed at least once."""
        return {e.index for e in self.entries("D")}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The figures of one run: lost, unexpected and duplicated completions."""

    jobs: int
    completions: int
    lost: int
    unexpected: int
    duplicates: int
    duplicated: dict[int, int] = field(default_factory=dict)

    def check(self, max_duplicates: int) -> Verdict:
        """Assert lost = 0, unexpected = 0, duplicates <= `max_duplicates`; returns self."""
        assert self.lost == 0, f"{self.lost} of {self.jobs} jobs never completed: {self}"
        assert self.unexpected == 0, f"{self.unexpected} completions of unknown jobs: {self}"
        assert self.duplicates <= max_duplicates, (
            f"{self.duplicates} duplicate completions > bound {max_duplicates}: {self}"
        )
        return self


def verdict(ledger: Ledger, expected: range | set[int]) -> Verdict:
    """Compare the completions in `ledger` with the job indexes `expected`."""
    counts = Counter(e.index for e in ledger.entries("D"))
    wanted = set(expected)
    duplicated = {i: n - 1 for i, n in counts.items() if n > 1}
    return Verdict(
        jobs=len(wanted),
        completions=sum(counts.values()),
        lost=len(wanted - counts.keys()),
        unexpected=len(counts.keys() - wanted),
        duplicates=sum(duplicated.values()),
        duplicated=duplicated,
    )


def report(scenario: str, backend: str, **figures: object) -> None:
    """Print a run's figures on one line; also append them to $UPNEXT_CHAOS_REPORT if set."""
    line = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\nCHAOS {scenario} {backend}: {line}")
    target = os.environ.get("UPNEXT_CHAOS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"scenario": scenario, "backend": backend, **figures}) + "\n")
