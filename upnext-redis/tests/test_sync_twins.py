"""The sync twins' background connection is closed by `aclose()` and at interpreter exit.

Seen from a proxy in front of the server: each connection the client opened
is closed by the client, while the process still runs.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import Callable

import upnext
from upnext.testing.proxy import FaultyProxy

# Submits from plain code (the background loop); at exit, after upnext's own atexit
# handler, says so and waits for the test to look at the proxy.
SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading
    import upnext

    def probe() -> None:  # registered first: runs last
        names = [t.name for t in threading.enumerate() if t.name.startswith("upnext-sync")]
        print("at exit, sync threads:", names, flush=True)
        sys.stdin.readline()

    atexit.register(probe)
    worker = upnext.Worker(sys.argv[2], broker=sys.argv[1])

    @worker.task
    def x(n: int) -> int:
        return n

    x.submit_sync(n=1)
    print("submitted", flush=True)
    """
)


async def _all_closed(proxy: FaultyProxy) -> bool:
    for _ in range(100):
        if proxy.links and all(link.closed_by_client for link in proxy.links):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_aclose_closes_the_sync_twins_connection(
    outage_proxy: FaultyProxy, prefixed_url: str, via_proxy: Callable[[str, int], str]
) -> None:
    worker = upnext.Worker(
        f"twins-{uuid.uuid4().hex}", broker=via_proxy(prefixed_url, outage_proxy.port)
    )

    @worker.task
    def x(n: int) -> int:
        return n

    await asyncio.to_thread(x.submit_sync, n=1)
    assert outage_proxy.links
    await worker.aclose()
    assert await _all_closed(outage_proxy)


async def test_the_sync_twins_connection_is_closed_at_exit_without_warnings(
    outage_proxy: FaultyProxy, prefixed_url: str, via_proxy: Callable[[str, int], str]
) -> None:
    url = via_proxy(prefixed_url, outage_proxy.port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "dev",
        "-W",
        "error",
        "-c",
        SCRIPT,
        url,
        f"twins-{uuid.uuid4().hex}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"submitted\n"
    at_exit = await asyncio.wait_for(proc.stdout.readline(), 30)
    closed = await _all_closed(outage_proxy)
    _, err = await proc.communicate(b"\n")
    assert at_exit == b"at exit, sync threads: []\n", err
    assert closed
    assert proc.returncode == 0
    assert err == b""
