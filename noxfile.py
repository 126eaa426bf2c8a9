"""Developer tasks: `nox` runs lint, typecheck and the whole test suite.

Every session installs from uv.lock (`uv sync --locked`), so a commit gives the
same result on any day. `nox -s latest` and `nox -s lowest` are the two that
resolve afresh, at either end of the declared ranges: outside the default run,
for maintainers (a red `latest` is news, not a broken build).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests", "examples", "sqlite_example", "bench_smoke"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent
# The meta distribution's extras that pull in every in-tree backend, the server and
# OpenTelemetry (so TracingSemantics runs, never skips, in the tests sessions).
BACKENDS = ("redis", "rabbitmq", "postgres", "server", "otel")
# Checked one group at a time: each package has its own tests/conftest.py.
SOURCE_GROUPS = [
    ["upnext-core"],
    ["upnext-redis"],
    ["upnext-rabbitmq"],
    ["upnext-postgres"],
    ["tests", "examples/quickstart.py", "docs/check_snippets.py", "benchmarks", "noxfile.py"],
    ["examples/upnext-sqlite"],
]


def sync(
    session: nox.Session,
    *,
    extras: Sequence[str] = (),
    groups: Sequence[str] = (),
    only_groups: bool = False,
) -> None:
    """Install exactly what uv.lock holds for these extras and groups into the session."""
    location = session.virtualenv.location
    args = ["uv", "sync", "--locked", f"--python={location}"]
    args += [f"--extra={extra}" for extra in extras]
    flag = "--only-group" if only_groups else "--group"
    args += [f"{flag}={group}" for group in groups]
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": location})


def constraints_file(session: nox.Session) -> str:
    """The lock's pins for upnext's own dependencies, as a pip constraints file."""
    path = Path(session.create_tmp()).resolve() / "constraints.txt"
    session.run_install(
        "uv",
        "export",
        "--locked",
        "--no-hashes",
        "--no-header",
        "--no-emit-workspace",
        "--all-extras",
        "--group=test",
        f"--output-file={path}",
        silent=True,
    )
    return str(path)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_tools(*, pinned: bool) -> list[str]:
    """The test group's requirements that no upnext package declares (pytest-cov, ...).

    Pinned to the lock's version for `lowest`, which tests upnext's own ranges,
    not the lowest releases of the test tools.
    """
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = tomllib.loads((ROOT / "upnext-core" / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in core["dependencies"]}
    declared |= {_name(r) for extra in core["optional-dependencies"].values() for r in extra}
    locked: dict[str, str] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        version = package.get("version", "0")
        if tuple(map(int, re.findall(r"\d+", version))) > tuple(
            map(int, re.findall(r"\d+", locked.get(package["name"], "0")))
        ):
            locked[package["name"]] = version
    tools = []
    for item in root["dependency-groups"]["test"]:
        if not isinstance(item, str) or item.startswith("upnext"):
            continue
        name = _name(item)
        if name in declared:
            continue
        tools.append(f"{name}=={locked[name]}" if pinned else item)
    return tools


def install_unlocked(session: nox.Session, resolution: str) -> None:
    """Every package editable, its dependencies resolved afresh at one end of their ranges."""
    session.install(
        f"--resolution={resolution}",
        "-e",
        "upnext-core[server,testing]",
        "-e",
        "upnext-redis",
        "-e",
        "upnext-rabbitmq",
        "-e",
        "upnext-postgres",
        *test_tools(pinned=resolution != "highest"),
    )
    location = session.virtualenv.location
    session.run("uv", "pip", "list", f"--python={location}", silent=False)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the quickstart demo (memory:// unless UPNEXT_BROKER_URL is set)."""
    sync(session)
    session.run("python", "examples/quickstart.py")


@nox.session
def examples(session: nox.Session) -> None:
    """The quickstart and every runnable snippet in docs/ (memory://)."""
    sync(session, extras=BACKENDS, groups=["test"])
    session.run("python", "examples/quickstart.py")
    session.run("python", "docs/check_snippets.py")


@nox.session
def sqlite_example(session: nox.Session) -> None:
    """The third-party-style SQLite backend through the whole conformance suite, via its tox.

    tox builds its own environment with pip; PIP_CONSTRAINT holds it to the lock's
    versions of upnext's dependencies (pydantic, pluggy, pytest, ...).
    """
    sync(session, groups=["tox"], only_groups=True)
    constraints = constraints_file(session)
    session.run(
        "tox",
        "-c",
        "examples/upnext-sqlite",
        "--",
        *session.posargs,
        env={"PIP_CONSTRAINT": constraints},
    )


@nox.session
def chaos(session: nox.Session) -> None:
    """The chaos suite at issue 9's full figures (tests/chaos with UPNEXT_CHAOS_FULL=1)."""
    sync(session, extras=BACKENDS, groups=["test"])
    session.run(
        "pytest", "tests/chaos", "-m", "chaos", *session.posargs, env={"UPNEXT_CHAOS_FULL": "1"}
    )


@nox.session
def acceptance(session: nox.Session) -> None:
    """Issue 19's cron and issue 20's flow-control acceptance at full size (4 workers),
    and the speed bars that are figures, not behaviour (the RabbitMQ DLQ's first page)."""
    sync(session, extras=BACKENDS, groups=["test"])
    session.run(
        "pytest",
        "tests/chaos/test_chaos_cron.py",
        "tests/chaos/test_chaos_flow.py",
        "-m",
        "chaos",
        "-s",
        *session.posargs,
        env={"UPNEXT_CHAOS_FULL": "1"},
    )
    session.run(
        "pytest",
        "upnext-rabbitmq/tests/test_dlq.py::test_first_page_of_ten_thousand_while_workers_consume",
        "-s",
        *session.posargs,
        env={"UPNEXT_ACCEPTANCE": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    sync(session, groups=["lint"], only_groups=True)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over sources and tests."""
    sync(session, extras=BACKENDS, groups=["typecheck"])
    for group in SOURCE_GROUPS:
        session.run("mypy", *group)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real servers, with coverage of `upnext`."""
    sync(session, extras=BACKENDS, groups=["test"])
    # The SQLite example too, for the tests that run every broker across processes
    # (tests/test_unique_processes.py). It needs nothing but upnext-core: --no-deps
    # keeps the session exactly the lock's.
    session.run_install(
        "uv",
        "pip",
        "install",
        f"--python={session.virtualenv.location}",
        "--no-deps",
        "-e",
        "examples/upnext-sqlite",
    )
    # Two processes for most tests: the suite mostly waits (sleeps, servers),
    # about 20% of a core each. Then, in one process and alone, the tests marked
    # `serial`: the chaos scenarios (they load the machine on purpose) and the
    # Redis Cluster's tight timings. `nox -s tests -- -n 0` runs the first part
    # in one process too. Exit code 5 is "nothing selected" (a narrow -k).
    session.run(
        "pytest",
        "--numprocesses=2",
        "-m",
        "not serial",
        "--cov=upnext",
        "--cov-report=",
        "--durations=30",  # where CI's minutes go, in every log
        *session.posargs,
        success_codes=[0, 5],
    )
    session.run(
        "pytest",
        "-m",
        "serial",
        "--cov=upnext",
        "--cov-append",
        "--cov-report=term",
        "--cov-fail-under=90",
        "--durations=15",
        *session.posargs,
        success_codes=[0, 5],
    )


@nox.session
def latest(session: nox.Session) -> None:
    """The tests against the newest release of every dependency (ignores uv.lock)."""
    install_unlocked(session, "highest")
    session.run("pytest", *session.posargs)


@nox.session
def lowest(session: nox.Session) -> None:
    """The tests against the lowest version each package declares (ignores uv.lock)."""
    install_unlocked(session, "lowest-direct")
    session.run("pytest", *session.posargs)


@nox.session
def bench_core(session: nox.Session) -> None:
    """Core hot-path throughput on memory:// (no peers)."""
    sync(session, extras=["speed"])
    session.run("python", "benchmarks/core_throughput.py", *session.posargs)


@nox.session
def bench_pg_depth(session: nox.Session) -> None:
    """PostgreSQL receive time with 1,000 vs 1,000,000 queued rows (postgres_depth.py)."""
    sync(session, extras=["postgres"])
    session.run("python", "benchmarks/postgres_depth.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """upnext side by side with its peers: `nox -s bench -- --broker redis` (see benchmarks/)."""
    # Peers live only in this session's venv (the lock's `bench` group): never
    # runtime dependencies of upnext.
    sync(session, extras=["redis", "rabbitmq", "postgres"], groups=["bench"])
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """A tiny run of the side-by-side harness (upnext on memory:// and arq on Redis), for CI."""
    sync(session, extras=["redis", "rabbitmq", "postgres"], groups=["bench"])
    session.run("python", "benchmarks/bench.py", "--smoke", *session.posargs)
