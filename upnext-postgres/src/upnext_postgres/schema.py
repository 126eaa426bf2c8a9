"""Every table, index and channel name of the PostgreSQL backend, and its DDL.

All objects live in one schema (default ``upnext``):

- ``jobs``: one row per queued, scheduled or leased job. A row is *held* while
  ``lease_until`` is set; the lease is live while ``lease_until >= now()``.
  ``token`` is the receipt of the current hand-out and ``hand_outs`` counts
  hand-outs since the body was last written; ``priority`` (v3) is the
  envelope's, kept through retries and releases. Ack and dead-letter delete
  the row, so completed jobs never accumulate.
- ``dead_letters``: core's dead-letter records, indexed for keyset paging.
- ``results``: final results, kept until ``expires_at``.
- ``state``, ``state_slots``: the `StateStore` (v2, see `_state_ddl`): entries
  with a version from the ``state_versions`` sequence and an optional
  ``expires_at``, and slot members with theirs; the functions ``state_put``,
  ``slots_acquire`` and ``slots_release`` make each call one round trip.
- ``schema_version``: the migrations applied.

`migrate` creates or upgrades the schema at connect under a transaction-level
advisory lock, so many workers starting at once serialise on it and all but
the first find nothing to do. Teams that apply migrations themselves print
`schema_sql` instead.
"""

from __future__ import annotations

import re
import textwrap
import zlib
from dataclasses import dataclass

import asyncpg
from upnext.errors import BrokerError, ConfigurationError

from upnext_postgres._state_ddl import state_ddl

__all__ = ["SCHEMA_VERSION", "Names", "migrate", "schema_sql"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

SCHEMA_VERSION = 4


@dataclass(frozen=True, slots=True)
class Names:
    """Quoted, schema-qualified names of every object the backend uses."""

    schema: str

    def __post_init__(self) -> None:
        # Channel names must fit PostgreSQL's 63-byte identifiers, hence the cap.
        if not _IDENT.fullmatch(self.schema):
            raise ConfigurationError(
                f"schema name must match {_IDENT.pattern} (letters, digits, _), got {self.schema!r}"
            )

    @property
    def quoted_schema(self) -> str:
        """The schema as a quoted identifier."""
        return f'"{self.schema}"'

    @property
    def jobs(self) -> str:
        """The jobs table."""
        return f'"{self.schema}".jobs'

    @property
    def dead_letters(self) -> str:
        """The dead-letter table."""
        return f'"{self.schema}".dead_letters'

    @property
    def results(self) -> str:
        """The results table."""
        return f'"{self.schema}".results'

    @property
    def state(self) -> str:
        """The state entries table (`StateStore`)."""
        return f'"{self.schema}".state'

    @property
    def state_slots(self) -> str:
        """The slot members table (`StateStore`)."""
        return f'"{self.schema}".state_slots'

    @property
    def state_versions(self) -> str:
        """The sequence every state entry's version comes from."""
        return f'"{self.schema}".state_versions'

    @property
    def state_put(self) -> str:
        """The function applying one `state_put` call's writes (in key order)."""
        return f'"{self.schema}".state_put'

    @property
    def slots_acquire(self) -> str:
        """The function taking or refreshing one slot under its key's lock."""
        return f'"{self.schema}".slots_acquire'

    @property
    def slots_release(self) -> str:
        """The function freeing members' slots under their key's lock."""
        return f'"{self.schema}".slots_release'

    @property
    def version_table(self) -> str:
        """The schema-version table."""
        return f'"{self.schema}".schema_version'

    @property
    def jobs_channel(self) -> str:
        """NOTIFY channel: payload ``"<delay seconds> <queue>"``, once per queue per transaction."""
        return f"upnext.{self.schema}.jobs"

    @property
    def results_channel(self) -> str:
        """NOTIFY channel: payload is newline-separated job ids whose results were written."""
        return f"upnext.{self.schema}.results"

    @property
    def slot_lock_seed(self) -> int:
        """Seed of the hashes that name slot keys' advisory locks (apart per schema)."""
        return zlib.crc32(b"slots:" + self.schema.encode())

    @property
    def lock_key(self) -> int:
        """Advisory lock key guarding migrations of this schema (a signed 64-bit int)."""
        return 0x7570_6E78_0000_0000 | zlib.crc32(self.schema.encode())


def _bootstrap(n: Names) -> list[str]:
    return [
        f"CREATE SCHEMA IF NOT EXISTS {n.quoted_schema}",
        f"""CREATE TABLE IF NOT EXISTS {n.version_table} (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )""",
    ]


def _v1(n: Names) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {n.jobs} (
            id text PRIMARY KEY,
            queue text NOT NULL,
            body bytea NOT NULL,
            seq bigint GENERATED BY DEFAULT AS IDENTITY,
            due_at timestamptz NOT NULL DEFAULT now(),
            lease_until timestamptz,
            token bigint,
            hand_outs integer NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL DEFAULT now()
        )""",
        # Receive walks this partial index in due order: O(log n) whatever the backlog.
        f"CREATE INDEX IF NOT EXISTS jobs_ready ON {n.jobs} (queue, due_at, seq) "
        "WHERE lease_until IS NULL",
        # Held rows only (bounded by in-flight work): expired-lease recovery.
        f"CREATE INDEX IF NOT EXISTS jobs_leased ON {n.jobs} (queue, lease_until) "
        "WHERE lease_until IS NOT NULL",
        f"""CREATE TABLE IF NOT EXISTS {n.dead_letters} (
            id text PRIMARY KEY,
            job_id text NOT NULL,
            queue text NOT NULL,
            function text NOT NULL,
            reason text NOT NULL,
            failed_at double precision NOT NULL,
            data bytea NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS dead_letters_order ON {n.dead_letters} (failed_at, id)",
        f"CREATE INDEX IF NOT EXISTS dead_letters_queue ON {n.dead_letters} (queue, failed_at, id)",
        f"CREATE INDEX IF NOT EXISTS dead_letters_function ON {n.dead_letters} "
        "(function, failed_at, id)",
        f"""CREATE TABLE IF NOT EXISTS {n.results} (
            job_id text PRIMARY KEY,
            queue text NOT NULL,
            data bytea NOT NULL,
            expires_at timestamptz NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS results_expiry ON {n.results} (expires_at)",
    ]


def _v3(n: Names) -> list[str]:
    # A constant default: PostgreSQL (11+) adds the column without rewriting the table.
    return [f"ALTER TABLE {n.jobs} ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 0"]


def _v4(n: Names) -> list[str]:
    # Dead letters by job id (``upnext dlq show JOB_ID``, ``GET /api/v1/dlq?job_id=``).
    return [f"CREATE INDEX IF NOT EXISTS dead_letters_job ON {n.dead_letters} (job_id)"]


# (version, DDL builder), in order. A new migration appends; none is ever edited.
_MIGRATIONS = [(1, _v1), (2, state_ddl), (3, _v3), (4, _v4)]


def _record(n: Names, version: int) -> str:
    return f"INSERT INTO {n.version_table} (version) VALUES ({version}) ON CONFLICT DO NOTHING"


def schema_sql(schema: str = "upnext") -> str:
    """The complete DDL for `schema`, for teams that apply migrations themselves.

    Idempotent: every statement uses IF NOT EXISTS, and the version rows tell
    `migrate` at connect that nothing is left to do.
    """
    n = Names(schema)
    statements = _bootstrap(n)
    for version, build in _MIGRATIONS:
        statements += [*build(n), _record(n, version)]
    return "".join(f"{_tidy(s)};\n" for s in ["BEGIN", *statements, "COMMIT"])


def _tidy(statement: str) -> str:
    # Re-indent a multi-line statement for people reading the printed SQL: the
    # lines after the first lose their common indent and keep their relative
    # ones (a table's columns one level in, a function's body as written).
    first, _, rest = statement.partition("\n")
    return f"{first}\n{textwrap.dedent(rest)}" if rest else first


async def _current(conn: asyncpg.Connection, n: Names) -> int:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", n.version_table)
    if not exists:
        return 0
    version = await conn.fetchval(f"SELECT max(version) FROM {n.version_table}")
    return int(version or 0)


async def migrate(conn: asyncpg.Connection, n: Names) -> None:
    """Bring the schema up to `SCHEMA_VERSION`, serialised by an advisory lock.

    Raises `BrokerError` if the database holds a newer schema than this code knows.
    """
    current = await _current(conn, n)
    if current < SCHEMA_VERSION:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", n.lock_key)
            for statement in _bootstrap(n):
                await conn.execute(statement)
            current = await _current(conn, n)
            for version, build in _MIGRATIONS:
                if version > current:
                    for statement in build(n):
                        await conn.execute(statement)
                    await conn.execute(_record(n, version))
            current = max(current, SCHEMA_VERSION)
    if current > SCHEMA_VERSION:
        raise BrokerError(
            f"schema {n.schema!r} is at version {current}; this upnext-postgres "
            f"knows up to {SCHEMA_VERSION}: upgrade upnext-postgres"
        )
