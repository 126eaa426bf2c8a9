"""What the conformance suite cannot see: URLs, entry points, files shared by processes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from upnext.broker import Ack, Broker, Envelope, ResultStore, SchemaProvider
from upnext.errors import ConfigurationError
from upnext_sqlite import SQLiteBroker

PRODUCER = """
import asyncio, sys
from upnext.broker import Envelope
from upnext_sqlite import SQLiteBroker
from upnext_sqlite import broker as broker_module

async def main() -> None:
    broker = SQLiteBroker.from_url(sys.argv[1])
    await broker.connect()
    await broker.enqueue_many([Envelope("from-child", "shared", b"hello")])
    await broker.aclose()

asyncio.run(main())
"""

CONSUMER = """
import asyncio, sys
from upnext.broker import Ack
from upnext_sqlite import SQLiteBroker
from upnext_sqlite import broker as broker_module

async def main() -> None:
    broker = SQLiteBroker.from_url(sys.argv[1])
    await broker.connect()
    print("ready", flush=True)
    got = await broker.receive(["shared"], limit=2, lease=60.0, wait=10.0)
    while got:
        assert await broker.settle([Ack(d) for d in got]) == [None] * len(got)
        print(*(d.envelope.id for d in got), sep="\\n", flush=True)
        await asyncio.sleep(0.002)  # the jobs' work, done outside any transaction
        got = await broker.receive(["shared"], limit=2, lease=60.0, wait=0.5)
    await broker.aclose()

asyncio.run(main())
"""


def test_url_forms_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three slashes name a relative file, four an absolute one; options are checked."""
    monkeypatch.chdir(tmp_path)
    assert SQLiteBroker.from_url("sqlite:///jobs.db").path == str(tmp_path / "jobs.db")
    absolute = SQLiteBroker.from_url(f"sqlite:///{tmp_path}/a.db?poll=0.2&busy_timeout=1")
    assert (absolute.path, absolute.poll) == (str(tmp_path / "a.db"), 0.2)
    for bad in ["sqlite://", "sqlite://host/x.db", "redis:///x.db", "sqlite:///x.db?poll=0"]:
        with pytest.raises(ConfigurationError):
            SQLiteBroker.from_url(bad)
    with pytest.raises(ConfigurationError, match="unknown"):
        SQLiteBroker.from_url("sqlite:///x.db?pool=3")


def test_entry_points_serve_the_sqlite_scheme() -> None:
    """The distribution registers `sqlite` for brokers and result stores."""
    for group in ("upnext.brokers", "upnext.result_stores"):
        [ep] = [ep for ep in entry_points(group=group) if ep.name == "sqlite"]
        assert ep.load() == SQLiteBroker.from_url
    broker = SQLiteBroker.from_url("sqlite:///x.db")
    assert isinstance(broker, Broker)
    assert isinstance(broker, ResultStore)


async def test_jobs_survive_the_broker(db_url: str) -> None:
    """A job enqueued and left unreceived is there for the next broker on the file."""
    first = SQLiteBroker.from_url(db_url)
    await first.connect()
    await first.enqueue_many([Envelope("j1", "q", b"x")])
    await first.aclose()
    second = SQLiteBroker.from_url(db_url)
    await second.connect()
    [got] = await second.receive(["q"], limit=10, lease=30.0, wait=1.0)
    assert (got.envelope.id, got.envelope.body) == ("j1", b"x")
    await second.settle([Ack(got)])
    await second.aclose()


async def test_another_process_job_wakes_a_receiver_within_poll(
    db_url: str, sqlite_broker: SQLiteBroker
) -> None:
    """A job enqueued by another process reaches a blocked receiver within about `poll` s."""
    receiver = asyncio.create_task(sqlite_broker.receive(["shared"], limit=1, lease=30, wait=20))
    await asyncio.sleep(0.1)
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", PRODUCER, db_url)
    assert await child.wait() == 0
    done = time.monotonic()
    [got] = await asyncio.wait_for(receiver, 5.0)
    assert got.envelope.id == "from-child"
    assert time.monotonic() - done <= sqlite_broker.poll + 0.25


async def test_same_process_brokers_wake_each_other_at_once(db_url: str) -> None:
    """Two brokers on one file in one process: an enqueue wakes the other's receiver now."""
    slow = f"{db_url}?poll=1"
    consumer, producer = SQLiteBroker.from_url(slow), SQLiteBroker.from_url(slow)
    await consumer.connect()
    await producer.connect()
    receiver = asyncio.create_task(consumer.receive(["q"], limit=1, lease=30, wait=10))
    await asyncio.sleep(0.2)
    await producer.enqueue_many([Envelope("j", "q", b"")])
    sent = time.monotonic()
    [got] = await asyncio.wait_for(receiver, 5.0)
    assert time.monotonic() - sent < 0.2  # far below the 1 s poll: the bell rang
    await consumer.settle([Ack(got)])
    await consumer.aclose()
    await producer.aclose()


async def test_processes_draining_one_queue_never_share_a_job(
    db_url: str, sqlite_broker: SQLiteBroker
) -> None:
    """Two processes draining one queue both get jobs, and no job goes to both."""
    pipe = asyncio.subprocess.PIPE
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", CONSUMER, db_url, stdout=pipe, stderr=pipe
        )
        for _ in range(2)
    ]
    for child in children:  # both are connected and about to block in receive
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 20.0) == b"ready\n"
    ids = [f"job-{i}" for i in range(300)]
    await sqlite_broker.enqueue_many([Envelope(i, "shared", b"") for i in ids])
    ends = [await child.communicate() for child in children]
    outputs = [out.decode().split() for out, _ in ends]
    errors = b"".join(err for _, err in ends).decode()
    assert [child.returncode for child in children] == [0, 0], errors
    assert not set(outputs[0]) & set(outputs[1]), "a job was handed to both processes"
    assert sorted(outputs[0] + outputs[1]) == sorted(ids)
    counts = [len(output) for output in outputs]
    assert all(counts), f"both processes were blocked on the queue, both must get jobs: {counts}"


def test_connections_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """Six connections switch a new file to WAL at the same instant, a hundred times.

    SQLite may answer "database is locked" to the switch without waiting on
    the busy timeout (8% of such trials here before the retry); a worker and
    a producer starting together must both connect.
    """
    from upnext_sqlite._db import Database

    for trial in range(100):
        path = str(tmp_path / f"jobs-{trial}.db")
        start = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_one(
            path: str = path, start: threading.Barrier = start, errors: list[BaseException] = errors
        ) -> None:
            database = Database(path, busy_timeout=5.0)
            start.wait()
            try:
                database.connection().close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"trial {trial}: {errors[0]}"


async def test_a_file_made_before_priorities_gains_the_column(tmp_path: Path) -> None:
    """An existing jobs table without `priority` is upgraded at open; its jobs read 0."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE upnext_jobs (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
            " queue TEXT NOT NULL, body BLOB NOT NULL, due REAL NOT NULL,"
            " held INTEGER NOT NULL DEFAULT 0, token INTEGER NOT NULL DEFAULT 0,"
            " hand_outs INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute("INSERT INTO upnext_jobs (id, queue, body, due) VALUES ('old', 'q', X'78', 0)")
    conn.close()
    broker = SQLiteBroker(str(path))
    await broker.connect()
    try:
        await broker.enqueue_many([Envelope("new", "q", b"y", 0.0, 6)])
        got = await broker.receive(["q"], limit=2, lease=30.0, wait=1.0)
        assert {d.envelope.id: d.envelope.priority for d in got} == {"old": 0, "new": 6}
        assert await broker.settle([Ack(d) for d in got]) == [None, None]
    finally:
        await broker.aclose()


def test_schema_sql_is_the_ddl_connect_applies(tmp_path: Path) -> None:
    """The broker is a SchemaProvider: `upnext schema` prints the tables connect creates."""
    broker = SQLiteBroker.from_url(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert isinstance(broker, SchemaProvider)
    ddl = broker.schema_sql()
    assert "CREATE TABLE IF NOT EXISTS upnext_jobs" in ddl
    assert "CREATE TABLE IF NOT EXISTS upnext_dead" in ddl
