"""A worker process of no-op jobs: ``python _noop_worker.py <broker url> <queue> <concurrency>``.

The drain test runs the worker apart from its producer so that the worker's
own memory can be read from /proc/<pid>/status. Job numbers ending in 999
fail (no retries), so the run leaves dead letters as well as results.
"""

from __future__ import annotations

import sys

import upnext


def main() -> int:
    """Run the worker until SIGTERM (or until killed)."""
    url, queue, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    worker = upnext.Worker(queue, broker=url, concurrency=concurrency, receive_wait=0.5)

    @worker.task(name="noop", result_ttl=600)
    async def noop(n: int) -> None:
        """Do nothing (the test measures the framework), but fail one job in 1,000."""
        if n % 1000 == 999:
            raise ValueError("one job in 1,000 goes to the dead-letter queue")

    return upnext.run(worker)


if __name__ == "__main__":
    sys.exit(main())
