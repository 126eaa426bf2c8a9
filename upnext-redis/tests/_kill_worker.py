"""A worker process for the SIGKILL test: ``python _kill_worker.py <broker url> <ran key>``.

Each job appends its number to the Redis list <ran key>, so the test can see
every run, duplicates included, from outside this process.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
import upnext


def main() -> int:
    """Run the worker until SIGTERM (or until killed)."""
    url, ran_key = sys.argv[1], sys.argv[2]
    client = aioredis.Redis.from_url(url.partition("?")[0])
    worker = upnext.Worker("killme", broker=url, concurrency=20, lease=1.0, receive_wait=0.5)

    @worker.task(name="work", result_ttl=60)
    async def work(n: int) -> None:
        await asyncio.sleep(0.002)
        await client.rpush(ran_key, n)

    return upnext.run(worker)


if __name__ == "__main__":
    sys.exit(main())
