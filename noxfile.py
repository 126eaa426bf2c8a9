"""Developer tasks: `nox` runs lint, typecheck and the whole test suite."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "examples", "sqlite_example", "bench_smoke"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = [
    "-e",
    "upnext-core[server,testing]",
    "-e",
    "upnext-redis",
    "-e",
    "upnext-rabbitmq",
    "-e",
    "upnext-postgres",
]
# httpx drives the API in-process; playwright drives Debian's Chromium (no browser
# download); schemathesis fuzzes the OpenAPI schema.
SERVER_TEST_DEPS = ["httpx>=0.27", "playwright>=1.45", "schemathesis>=4"]
# trustme: a throwaway CA for the amqps:// tests (TLS end to end on loopback).
TEST_DEPS = [
    "pytest-cov>=5",
    "hypothesis>=6.100",
    "pytest-timeout>=2.3",
    "trustme>=1.1",
    *SERVER_TEST_DEPS,
]
LINT_DEPS = ["ruff==0.17.6"]
TYPE_DEPS = [
    "mypy==2.4.1",
    "pytest>=8",
    "pytest-asyncio>=0.24",
    "hypothesis>=6.100",
    "nox",
    "asyncpg-stubs",
    "trustme>=1.1",
    *SERVER_TEST_DEPS,
]
# Checked one group at a time: each package has its own tests/conftest.py.
SOURCE_GROUPS = [
    ["upnext-core"],
    ["upnext-redis"],
    ["upnext-rabbitmq"],
    ["upnext-postgres"],
    ["tests", "examples/quickstart.py", "docs/check_snippets.py", "benchmarks", "noxfile.py"],
    ["examples/upnext-sqlite"],
]


@nox.session
def demo(session: nox.Session) -> None:
    """Run the quickstart demo (memory:// unless UPNEXT_BROKER_URL is set)."""
    session.install("-e", "upnext-core")
    session.run("python", "examples/quickstart.py")


@nox.session
def examples(session: nox.Session) -> None:
    """The quickstart and every runnable snippet in docs/ (memory://)."""
    session.install(*PACKAGES)
    session.run("python", "examples/quickstart.py")
    session.run("python", "docs/check_snippets.py")


@nox.session
def sqlite_example(session: nox.Session) -> None:
    """The third-party-style SQLite backend through the whole conformance suite, via its tox."""
    session.install("tox>=4.11")
    session.run("tox", "-c", "examples/upnext-sqlite", "--", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos suite at issue 9's full figures (tests/chaos with UPNEXT_CHAOS_FULL=1)."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run(
        "pytest", "tests/chaos", "-m", "chaos", *session.posargs, env={"UPNEXT_CHAOS_FULL": "1"}
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over sources and tests."""
    session.install(*PACKAGES, *TYPE_DEPS)
    for group in SOURCE_GROUPS:
        session.run("mypy", *group)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real servers, with coverage of `upnext`."""
    session.install(*PACKAGES, *TEST_DEPS)
    session.run(
        "pytest",
        "--cov=upnext",
        "--cov-report=term",
        "--cov-fail-under=90",
        *session.posargs,
    )


@nox.session
def bench_core(session: nox.Session) -> None:
    """Core hot-path throughput on memory:// (no peers)."""
    session.install("-e", "upnext-core[speed]")
    session.run("python", "benchmarks/core_throughput.py", *session.posargs)


@nox.session
def bench_pg_depth(session: nox.Session) -> None:
    """PostgreSQL receive time with 1,000 vs 1,000,000 queued rows (postgres_depth.py)."""
    session.install("-e", "upnext-core", "-e", "upnext-postgres")
    session.run("python", "benchmarks/postgres_depth.py", *session.posargs)


BENCH_PEERS = [
    "arq",
    "saq[redis,postgres]",
    # taskiq-redis 1.0.9 imports taskiq.compat.model_dump, which taskiq 0.13 removed.
    "taskiq>=0.12,<0.13",
    "taskiq-redis",
    "taskiq-aio-pika",
    "dramatiq[redis,rabbitmq]",
    "celery[redis]",
    "procrastinate",
    "psycopg[binary,pool]",
    "pgqueuer",
    "asyncpg",
    "redis",
    "aio-pika",
    "matplotlib",
]


def _bench_install(session: nox.Session) -> None:
    # Peers live only in this session's venv: never runtime dependencies of upnext.
    session.install("-e", "upnext-core[speed]", "-e", "upnext-redis", "-e", "upnext-rabbitmq")
    session.install("-e", "upnext-postgres", *BENCH_PEERS)


@nox.session
def bench(session: nox.Session) -> None:
    """upnext side by side with its peers: `nox -s bench -- --broker redis` (see benchmarks/)."""
    _bench_install(session)
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """A tiny run of the side-by-side harness (upnext on memory:// and arq on Redis), for CI."""
    _bench_install(session)
    session.run("python", "benchmarks/bench.py", "--smoke", *session.posargs)
