"""How fast one worker process drains no-op async jobs on memory:// (core overhead only).

    python benchmarks/core_throughput.py [--jobs 20000] [--concurrency 10] [--repeats 3]
    python benchmarks/core_throughput.py --compare-history --repeats 8

Jobs are enqueued in batches first (not timed); the drain is timed inside
the worker from the first job's start to the last job's end. CPU time is
the process's from the first job's start until the worker has stopped (its
last tick's writes included). `--compare-history` runs drains with the
recent-jobs history off and on, interleaved, and prints CPU per job of each.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import upnext


async def drain_once(jobs: int, concurrency: int, history: bool = True) -> tuple[float, float]:
    """Jobs per second for one drain of `jobs` no-op jobs, and CPU seconds per job."""
    worker = upnext.Worker(
        "bench",
        broker=f"memory://bench-{uuid.uuid4().hex}",
        concurrency=concurrency,
        job_history=history,
    )
    marks: list[float] = []
    cpu: list[float] = []
    done = asyncio.Event()

    @worker.task(name="noop", result_ttl=60)
    async def noop() -> None:
        if not marks:
            cpu.append(time.process_time())
            marks.append(time.perf_counter())
        marks.append(time.perf_counter())
        if len(marks) > jobs:
            done.set()

    for start in range(0, jobs, 5000):
        await noop.submit_many([{} for _ in range(min(5000, jobs - start))])
    async with worker:
        await done.wait()
        await worker.join()
    return jobs / (marks[-1] - marks[0]), (time.process_time() - cpu[0]) / jobs


def main() -> None:
    """Run the drains and print the median and range."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-history", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    if args.compare_history:
        compare_history(args.jobs, args.concurrency, args.repeats, loop_name)
        return
    rates = [asyncio.run(drain_once(args.jobs, args.concurrency))[0] for _ in range(args.repeats)]
    print(
        f"memory:// drain, {args.jobs} no-op jobs, concurrency {args.concurrency}, {loop_name}:"
        f" median {statistics.median(rates):,.0f} jobs/s"
        f" (min {min(rates):,.0f}, max {max(rates):,.0f})"
    )


def compare_history(jobs: int, concurrency: int, repeats: int, loop_name: str) -> None:
    """Drains with the recent-jobs history off and on, interleaved; CPU per job of each."""
    cpu: dict[bool, list[float]] = {False: [], True: []}
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for history in (False, True):
            rate, per_job = asyncio.run(drain_once(jobs, concurrency, history))
            rates[history].append(rate)
            cpu[history].append(per_job * 1e6)
    print(f"memory:// drain, {jobs} no-op jobs, concurrency {concurrency}, {loop_name}:")
    for history in (False, True):
        us, name = cpu[history], "on " if history else "off"
        print(
            f"  history {name}: CPU/job median {statistics.median(us):.2f} us"
            f" (min {min(us):.2f}, max {max(us):.2f});"
            f" median {statistics.median(rates[history]):,.0f} jobs/s"
        )
    ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    print(f"  on / off (medians): {ratio:.3f}")


if __name__ == "__main__":
    main()
