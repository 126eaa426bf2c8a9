"""Does a PostgreSQL receive stay fast when the queue is deep?

    python benchmarks/postgres_depth.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--depths 1000,1000000] [--batch 100] [--rounds 300]

Each depth gets a schema of its own, filled with that many due jobs (in
`enqueue_many` batches of 10,000, then VACUUM ANALYZE; not timed). Then the
depths take turns: one timed `receive` of `batch` jobs from each, round after
round, so a busy moment on the machine hits every depth alike. Each taken
batch is acked (deleted) and as many new jobs are enqueued, so the depth
stays put and the table carries the churn of a live queue. The first 30
rounds are not timed (plan cache, pool). Prints the median, p90 and p99
receive time per depth and each median as a multiple of the first depth's.
The schemas are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
from upnext.broker.protocol import Ack, Envelope
from upnext_postgres import PostgresBroker

FILL_BATCH = 10_000
WARMUP = 30


def _envelopes(count: int) -> list[Envelope]:
    return [Envelope(uuid.uuid4().hex, "deep", b'{"f":"noop"}') for _ in range(count)]


async def _fill(url: str, schema: str, depth: int) -> PostgresBroker:
    broker = PostgresBroker.from_url(f"{url}?schema={schema}")
    await broker.connect()
    for start in range(0, depth, FILL_BATCH):
        await broker.enqueue_many(_envelopes(min(FILL_BATCH, depth - start)))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'VACUUM ANALYZE "{schema}".jobs')
    finally:
        await conn.close()
    return broker


async def _round(broker: PostgresBroker, batch: int) -> float:
    began = time.perf_counter()
    got = await broker.receive(["deep"], limit=batch, lease=30.0, wait=0)
    took = time.perf_counter() - began
    assert len(got) == batch, f"took {len(got)} of {batch}"
    await broker.settle([Ack(d) for d in got])
    await broker.enqueue_many(_envelopes(batch))
    return took


async def measure(url: str, depths: list[int], batch: int, rounds: int) -> list[list[float]]:
    """Receive times (seconds) per depth, `rounds` each, the depths taking turns."""
    schemas = [f"upnext_depth_{uuid.uuid4().hex[:8]}" for _ in depths]
    brokers: list[PostgresBroker] = []
    try:
        for schema, depth in zip(schemas, depths, strict=True):
            brokers.append(await _fill(url, schema, depth))
        times: list[list[float]] = [[] for _ in depths]
        for round_ in range(WARMUP + rounds):
            for series, broker in zip(times, brokers, strict=True):
                took = await _round(broker, batch)
                if round_ >= WARMUP:
                    series.append(took)
        return times
    finally:
        for broker in brokers:
            await broker.aclose()
        conn = await asyncpg.connect(url)
        try:
            for schema in schemas:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def main() -> None:
    """Measure the depths side by side and print one line per depth."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--depths", default="1000,1000000")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    times = await measure(args.url, depths, args.batch, args.rounds)
    base = statistics.median(times[0])
    for depth, series in zip(depths, times, strict=True):
        median = statistics.median(series)
        cuts = statistics.quantiles(series, n=100)
        print(
            f"depth {depth:>9,}: receive of {args.batch} median {_ms(median)}, "
            f"p90 {_ms(cuts[89])}, p99 {_ms(cuts[98])}; {median / base:.2f}x depth {depths[0]:,}"
        )


if __name__ == "__main__":
    asyncio.run(main())
