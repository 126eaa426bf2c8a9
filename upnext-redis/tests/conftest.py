"""Fixtures for upnext-redis tests, run against a real Redis server.

The server is ``UPNEXT_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
Private servers (eviction policies, memory limits, passwords) are throwaway
``redis-server`` processes on free loopback ports, never the shared one.
Helpers are fixtures, not imports, so the tests work in any pytest import mode.

Every test gets a broker under a key prefix of its own and deletes its keys
afterwards, so tests never see each other's data. If the server cannot be
reached the tests fail when ``CI`` or ``UPNEXT_REQUIRE_SERVICES`` is set, and
otherwise skip with one line naming the URL.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from redis import exceptions as rx
from upnext.broker.redact import redact_url
from upnext.testing.loopback import free_port as _free_port
from upnext.testing.proxy import FaultyProxy
from upnext_redis import RedisBroker

pytest_plugins = ["upnext.testing.plugin"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the Redis Cluster tests share one process with the chaos scenarios.

    So they never run while a scenario's worker processes load the machine:
    three servers and a worker's tight timings (a retry within 0.15 s of its
    delay) ran late beside one on two cores (tests/chaos/conftest.py).
    """
    here = Path(__file__).resolve().parent
    for item in items:
        if item.path == here / "test_cluster.py":
            item.add_marker(pytest.mark.xdist_group("serial"))


def with_options(url: str, **options: object) -> str:
    """`url` with extra query options appended."""
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def _ping(url: str) -> None:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=3.0)
    try:
        await client.ping()
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The server URL; fails (CI) or skips (elsewhere) if it is unreachable."""
    url = os.environ.get("UPNEXT_TEST_REDIS_URL", DEFAULT_URL)
    try:
        asyncio.run(_ping(url))
    except (OSError, rx.RedisError) as exc:
        message = (
            f"Redis unreachable at {redact_url(url)} ({type(exc).__name__}); "
            "start one (docker compose up redis) or set UPNEXT_TEST_REDIS_URL"
        )
        if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return f"upnext-test-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the test server, for looking behind the broker."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix`."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])


@pytest_asyncio.fixture
async def redis_broker(
    redis_url: str, key_prefix: str, raw_redis: aioredis.Redis
) -> AsyncIterator[RedisBroker]:
    """A connected RedisBroker under this test's own prefix; its keys go afterwards."""
    broker = RedisBroker.from_url(with_options(redis_url, prefix=key_prefix))
    await broker.connect()
    yield broker
    await broker.aclose()
    await delete_prefix(raw_redis, key_prefix)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start listening")


@contextmanager
def _running(args: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """`args` as a process, its output dropped; stopped at the end (SIGKILL after 5 s)."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def running() -> Callable[[list[str]], AbstractContextManager[subprocess.Popen[bytes]]]:
    """``with running([...]) as proc``: a process stopped when the block ends."""
    return _running


@contextmanager
def _private_redis(*config: str) -> Iterator[int]:
    """Run ``redis-server <config>`` on a free port; yield the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (needed for a private server)")
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", workdir, *config]
        with _running(args) as proc:
            _wait_listening(port, proc)
            yield port


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A factory of TCP ports on 127.0.0.1 that nothing listens on."""
    return _free_port


@pytest.fixture
def private_redis() -> Callable[..., AbstractContextManager[int]]:
    """``with private_redis("--maxmemory", "4mb") as port:`` runs a throwaway server."""
    return _private_redis


@pytest.fixture
def prefixed_url(redis_url: str, key_prefix: str) -> Iterator[str]:
    """The server URL under this test's own prefix; its keys are deleted afterwards."""
    yield with_options(redis_url, prefix=key_prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{key_prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Everything written to any socket stream: one entry per write (one round trip)."""
    seen: list[bytes] = []
    write = asyncio.StreamWriter.write
    writelines = asyncio.StreamWriter.writelines

    def counting(self: asyncio.StreamWriter, data: Any) -> None:
        seen.append(bytes(data))
        write(self, data)

    def counting_lines(self: asyncio.StreamWriter, data: Any) -> None:
        chunks = [bytes(chunk) for chunk in data]
        seen.append(b"".join(chunks))
        writelines(self, chunks)

    monkeypatch.setattr(asyncio.StreamWriter, "write", counting)
    monkeypatch.setattr(asyncio.StreamWriter, "writelines", counting_lines)
    return seen


@pytest_asyncio.fixture
async def outage_proxy(redis_url: str) -> AsyncIterator[FaultyProxy]:
    """A running FaultyProxy in front of the test server."""
    parts = urlsplit(redis_url)
    async with FaultyProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        yield proxy


def through(url: str, port: int) -> str:
    """`url` pointed at 127.0.0.1:`port` (credentials, db and options kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
def via_proxy() -> Callable[[str, int], str]:
    """``via_proxy(url, port)``: the same URL, through a local proxy port."""
    return through


class RedisProcess:
    """A private redis-server that a test can kill (SIGKILL) and start again on one port."""

    def __init__(self, binary: str, workdir: str, config: tuple[str, ...]) -> None:
        self.port = _free_port()
        self._args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self._args += ["--dir", workdir, *config]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it listens."""
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(self.port, self._proc)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


@pytest.fixture
def restartable_redis() -> Iterator[Callable[..., RedisProcess]]:
    """``restartable_redis("--appendonly", "yes")``: a started RedisProcess, killed at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (needed for a private server)")
    started: list[RedisProcess] = []
    with tempfile.TemporaryDirectory() as workdir:

        def make(*config: str) -> RedisProcess:
            server = RedisProcess(binary, workdir, config)
            server.start()
            started.append(server)
            return server

        yield make
        for server in started:
            server.kill()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A private 3-master Redis Cluster on free loopback ports, for the session."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server and redis-cli are needed to start a private cluster")
    ports = _cluster_ports(3)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for port in ports:
                args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                args += ["--appendonly", "no", "--dir", workdir, "--cluster-enabled", "yes"]
                args += ["--cluster-config-file", f"nodes-{port}.conf"]
                procs.append(
                    subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
            for port, proc in zip(ports, procs, strict=True):
                _wait_listening(port, proc)
            create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            subprocess.run(
                [*create, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            _wait_cluster_ok(ports)
            yield f"redis://127.0.0.1:{ports[0]}/0?cluster=true"
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    for candidate in random.sample(range(20_000, 40_000), 200):
        if all(_port_free(p) for p in (candidate, candidate + 10_000)):
            ports.append(candidate)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free port pairs for a private cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_state_ok(info: object) -> bool:
    if isinstance(info, dict):
        return str(info.get("cluster_state")) in {"ok", "b'ok'"}
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _wait_cluster_ok(ports: list[int], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    for port in ports:
        client = redis.Redis(port=port)
        try:
            while not _cluster_state_ok(client.cluster("INFO")):
                if time.monotonic() > deadline:
                    raise RuntimeError("the private cluster did not come up")
                time.sleep(0.05)
        finally:
            client.close()


@pytest_asyncio.fixture
async def cluster_broker(redis_cluster_url: str, key_prefix: str) -> AsyncIterator[RedisBroker]:
    """A connected RedisBroker on the private cluster, under this test's own prefix."""
    broker = RedisBroker.from_url(with_options(redis_cluster_url, prefix=key_prefix))
    await broker.connect()
    yield broker
    await broker.aclose()
