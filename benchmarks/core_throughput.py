"""How fast one worker process drains no-op async jobs on memory:// (core overhead only).

    python benchmarks/core_throughput.py [--jobs 20000] [--concurrency 10] [--repeats 3]

Jobs are enqueued in batches first (not timed); the drain is timed inside
the worker from the first job's start to the last job's end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import upnext


async def drain_once(jobs: int, concurrency: int) -> float:
    """Jobs per second for one drain of `jobs` no-op jobs."""
    worker = upnext.Worker(
        "bench", broker=f"memory://bench-{uuid.uuid4().hex}", concurrency=concurrency
    )
    marks: list[float] = []
    done = asyncio.Event()

    @worker.task(name="noop", result_ttl=60)
    async def noop() -> None:
        if not marks:
            marks.append(time.perf_counter())
        marks.append(time.perf_counter())
        if len(marks) > jobs:
            done.set()

    for start in range(0, jobs, 5000):
        await noop.submit_many([{} for _ in range(min(5000, jobs - start))])
    async with worker:
        await done.wait()
        await worker.join()
    return jobs / (marks[-1] - marks[0])


def main() -> None:
    """Run the drains and print the median and range."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    rates = [asyncio.run(drain_once(args.jobs, args.concurrency)) for _ in range(args.repeats)]
    print(
        f"memory:// drain, {args.jobs} no-op jobs, concurrency {args.concurrency}, {loop_name}:"
        f" median {statistics.median(rates):,.0f} jobs/s"
        f" (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )


if __name__ == "__main__":
    main()
