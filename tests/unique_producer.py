"""One producer process of test_unique_processes.py: concurrent submits of one job id.

``python unique_producer.py BROKER RESULTS QUEUE JOB_ID MODE COUNT`` connects, prints
``ready``, reads a wall-clock start time from stdin and waits for it (the test sends it
once every producer is ready, so all submit at once however slow their start), submits
COUNT calls of the task under JOB_ID at the same time (MODE: ``job_id`` alone,
``unique_for`` 30 s, or ``debounce`` 0.5 s), waits for every Future, and prints one JSON
line: how many of its submits created the job, the values they got, the job ids, and how
late after the start time it submitted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import upnext

TASK = "unique_processes.work"


async def produce(
    broker: str, results: str, queue: str, job_id: str, mode: str, count: int
) -> None:
    worker = upnext.Worker(queue, broker, results=results or None, load_plugins=False)

    @worker.task(name=TASK)
    async def work(n: int) -> str:  # runs in the test's worker, never here
        return f"ran {n}"

    job = work.options(job_id=job_id)
    if mode == "unique_for":
        job = job.options(unique_for=30.0)
    elif mode == "debounce":
        job = job.options(debounce=0.5)
    try:
        await worker.client()  # connected before the start line
        print("ready", flush=True)
        start_at = float(await asyncio.to_thread(sys.stdin.readline))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        late = time.time() - start_at
        base = os.getpid() * 1000
        futures = await asyncio.gather(*(job.submit(n=base + i) for i in range(count)))
        values = await asyncio.gather(*(f.value(30.0) for f in futures))
        report = {
            "created": sum(not f.duplicate for f in futures),
            "values": values,
            "ids": sorted({f.job_id for f in futures}),
            "late": round(late, 3),
        }
        print(json.dumps(report), flush=True)
    finally:
        await worker.aclose()


if __name__ == "__main__":
    broker, results, queue, job_id, mode, count = sys.argv[1:7]
    asyncio.run(produce(broker, results, queue, job_id, mode, int(count)))
