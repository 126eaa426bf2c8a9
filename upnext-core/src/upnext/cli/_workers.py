"""`upnext workers`: the live workers of a broker, their heartbeats and running jobs."""

from __future__ import annotations

import argparse
import time

from upnext._worker import Worker
from upnext.cli._output import print_json, table
from upnext.workers import WorkerInfo, live_workers

__all__ = ["run_workers"]


async def run_workers(args: argparse.Namespace, worker: Worker) -> int:
    """Print every live worker as a table or (--json) JSON; the exit code."""
    try:
        infos = await live_workers(worker)  # ConfigurationError without a state store
    finally:
        await worker.aclose()
    now = time.time()
    if args.json:
        print_json({"workers": [_as_json(info, now) for info in infos]})
        return 0
    if not infos:
        print("no live workers")
        return 0
    headers = ["ID", "NAME", "QUEUES", "CONCURRENCY", "HEARTBEAT", "RUNNING", "JOBS"]
    # No cut: the job ids are what the table is for, and concurrency bounds them.
    print(table(headers, [_row(info, now) for info in infos], max_width=10_000))
    return 0


def _age(info: WorkerInfo, now: float) -> float:
    """Seconds since the worker's last tick (never below 0: its host's clock may run ahead)."""
    return round(max(0.0, now - info.beat_at), 3)


def _as_json(info: WorkerInfo, now: float) -> dict[str, object]:
    return {**info.model_dump(mode="json"), "heartbeat_age": _age(info, now)}


def _row(info: WorkerInfo, now: float) -> list[str]:
    jobs = " ".join(run.job_id for run in info.running)
    if info.running_count > len(info.running):
        jobs += f" (+{info.running_count - len(info.running)} more)"
    return [
        info.worker_id,
        info.name,
        ",".join(info.queues),
        str(info.concurrency),
        f"{_age(info, now):.1f}s ago",
        str(info.running_count),
        jobs or "-",
    ]
