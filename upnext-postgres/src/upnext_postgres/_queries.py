"""The SQL of every operation, one statement (one round trip) each.

Batches travel as parallel arrays expanded with ``unnest``; data-modifying
CTEs make a whole settle one atomic statement. Due times and leases are
always computed from the server's ``now()``.

Statements that only move leases (receive, extend, give-back) commit with
``synchronous_commit = off`` (`_ASYNC_COMMIT`, set for their transaction
alone): they skip the WAL flush, which halves the flushes of a busy worker.
Only a crash of the PostgreSQL server itself can lose such a commit, and then
the job is simply handed out again (at least once). Enqueue, settle, results
and dead letters always commit synchronously. Notifications are sent with
``pg_notify`` inside the same statement, so they go out exactly when (and
only if) its transaction commits, and PostgreSQL folds identical
notifications of one transaction into one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from upnext.broker.protocol import Envelope

from upnext_postgres.schema import Names

__all__ = ["Queries", "enqueue_arguments"]


# In a WHERE clause: an init-plan run once, before the statement's transaction commits.
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"


def _chunks(source: str) -> str:
    # Result notifications carry newline-separated job ids; a payload must stay
    # under PostgreSQL's 8000-byte limit, so ids are grouped into ~6 KB chunks.
    return f"""
    SELECT string_agg(job_id, E'\\n') AS ids FROM (
        SELECT job_id, sum(octet_length(job_id) + 1) OVER (ORDER BY job_id) / 6000 AS chunk
        FROM {source}
    ) AS s GROUP BY chunk"""


def _enqueue(n: Names) -> str:
    # $6: notification payloads, one per queue ("<min delay> <queue>").
    return f"""
WITH ins AS (
    INSERT INTO {n.jobs} (id, queue, body, due_at, priority)
    SELECT t.id, t.queue, t.body, now() + make_interval(secs => t.delay), t.priority
    FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[], $5::int2[])
        AS t(id, queue, body, delay, priority)
    ON CONFLICT (id) DO NOTHING
)
SELECT pg_notify($7, note)::text FROM unnest($6::text[]) AS note
"""


def _receive(n: Names) -> str:
    # $1 queues, $2 limit, $3 lease seconds, $4 token of this hand-out.
    # Either the taken rows, or (none taken) one row whose next_in says how many
    # seconds until the earliest due job or lease expiry of these queues.
    return f"""
WITH expired AS (
    SELECT id FROM {n.jobs}
    WHERE queue = ANY($1::text[]) AND lease_until IS NOT NULL AND lease_until < now()
    ORDER BY lease_until LIMIT $2
    FOR UPDATE SKIP LOCKED
), ready AS (
    SELECT c.id FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id FROM {n.jobs}
        WHERE queue = q.name AND lease_until IS NULL AND due_at <= now()
        ORDER BY due_at, seq LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    (SELECT id FROM expired) UNION ALL (SELECT id FROM ready) LIMIT $2
), taken AS (
    UPDATE {n.jobs} AS j
    SET lease_until = now() + make_interval(secs => $3::float8), token = $4,
        hand_outs = j.hand_outs + 1
    WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.queue, j.body, j.hand_outs, j.due_at, j.seq, j.priority
)
SELECT id, queue, body, hand_outs, due_at, seq, priority, NULL::float8 AS next_in FROM taken
WHERE {_ASYNC_COMMIT}
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, extract(epoch FROM least(
    (SELECT min(m.due) FROM unnest($1::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT min(due_at) AS due FROM {n.jobs} WHERE queue = q.name AND lease_until IS NULL
    ) AS m),
    (SELECT min(m.until) FROM unnest($1::text[]) AS q(name) CROSS JOIN LATERAL (
        SELECT min(lease_until) AS until FROM {n.jobs}
        WHERE queue = q.name AND lease_until IS NOT NULL
    ) AS m)
) - now())::float8
WHERE NOT EXISTS (SELECT 1 FROM taken)
"""


def _settle(n: Names) -> str:
    # `j.id = ANY(ids)` pins each lookup to the primary key: joined to unnest()
    # alone, the planner may hash-join against a sequential scan of the table.
    def live(ids: str) -> str:
        return (
            f"j.id = ANY({ids}::text[]) AND j.id = t.id AND j.token = t.token "
            "AND j.lease_until >= now()"
        )

    return f"""
WITH acked AS (
    DELETE FROM {n.jobs} AS j USING unnest($1::text[], $2::int8[]) AS t(id, token)
    WHERE {live("$1")} RETURNING j.id
), retried AS (
    UPDATE {n.jobs} AS j
    SET body = t.body, due_at = now() + make_interval(secs => t.delay),
        lease_until = NULL, token = NULL, hand_outs = 0
    FROM unnest($3::text[], $4::int8[], $5::bytea[], $6::float8[]) AS t(id, token, body, delay)
    WHERE {live("$3")} RETURNING j.id, j.queue, t.delay
), dead_in AS (
    SELECT * FROM unnest($7::text[], $8::int8[], $9::text[], $10::text[], $11::text[],
                         $12::text[], $13::float8[], $14::bytea[])
        AS t(id, token, entry_id, function, reason, queue, failed_at, data)
), dead AS (
    DELETE FROM {n.jobs} AS j USING dead_in AS t WHERE {live("$7")} RETURNING j.id
), dlq AS (
    INSERT INTO {n.dead_letters} (id, job_id, queue, function, reason, failed_at, data)
    SELECT t.entry_id, t.id, t.queue, t.function, t.reason, t.failed_at, t.data
    FROM dead_in AS t JOIN dead USING (id)
    ON CONFLICT (id) DO NOTHING
), released AS (
    UPDATE {n.jobs} AS j SET lease_until = NULL, token = NULL, hand_outs = j.hand_outs - 1
    FROM unnest($15::text[], $16::int8[]) AS t(id, token)
    WHERE {live("$15")} RETURNING j.id, j.queue
), res AS (
    INSERT INTO {n.results} (job_id, queue, data, expires_at)
    SELECT r.job_id, r.queue, r.data, now() + make_interval(secs => r.ttl)
    FROM unnest($17::text[], $18::text[], $19::text[], $20::bytea[], $21::float8[])
        AS r(owner, job_id, queue, data, ttl)
    WHERE r.owner IN (SELECT id FROM acked UNION ALL SELECT id FROM dead)
    ON CONFLICT (job_id) DO UPDATE
    SET queue = excluded.queue, data = excluded.data, expires_at = excluded.expires_at
    RETURNING job_id
), ready_notes AS (
    SELECT min(x.delay)::text || ' ' || x.queue AS note
    FROM (SELECT queue, delay FROM retried UNION ALL SELECT queue, 0 FROM released) AS x
    GROUP BY x.queue
), done AS (
    SELECT 'a' AS kind, id FROM acked
    UNION ALL SELECT 'r', id FROM retried
    UNION ALL SELECT 'd', id FROM dead
    UNION ALL SELECT 'l', id FROM released
)
SELECT kind, id FROM done
UNION ALL SELECT 'n', pg_notify($22, note)::text FROM ready_notes
UNION ALL SELECT 'n', pg_notify($23, ids)::text FROM ({_chunks("res")}) AS c
"""


def _put_results(n: Names) -> str:
    return f"""
WITH res AS (
    INSERT INTO {n.results} (job_id, queue, data, expires_at)
    SELECT r.job_id, r.queue, r.data, now() + make_interval(secs => r.ttl)
    FROM unnest($1::text[], $2::text[], $3::bytea[], $4::float8[]) AS r(job_id, queue, data, ttl)
    ON CONFLICT (job_id) DO UPDATE
    SET queue = excluded.queue, data = excluded.data, expires_at = excluded.expires_at
    RETURNING job_id
)
SELECT pg_notify($5, ids)::text FROM ({_chunks("res")}) AS c
"""


def _extend(n: Names) -> str:
    return f"""
WITH extended AS (
    UPDATE {n.jobs} AS j SET lease_until = now() + make_interval(secs => $3::float8)
    FROM unnest($1::text[], $2::int8[]) AS t(id, token)
    WHERE j.id = ANY($1::text[]) AND j.id = t.id AND j.token = t.token
        AND j.lease_until >= now()
    RETURNING j.id
)
SELECT id FROM extended WHERE {_ASYNC_COMMIT}
"""


@dataclass(frozen=True, slots=True)
class Queries:
    """The hot-path statements for one schema, built once per broker."""

    enqueue: str
    receive: str
    settle: str
    put_results: str
    extend: str
    cancel: str
    get_result: str
    cleanup_results: str

    @classmethod
    def build(cls, n: Names) -> Queries:
        """Every statement, with `n`'s table names filled in."""
        return cls(
            enqueue=_enqueue(n),
            receive=_receive(n),
            settle=_settle(n),
            put_results=_put_results(n),
            extend=_extend(n),
            cancel=f"DELETE FROM {n.jobs} WHERE id = $1 AND queue = $2 "
            "AND lease_until IS NULL RETURNING 1",
            get_result=f"SELECT data FROM {n.results} WHERE job_id = $1 AND expires_at > now()",
            # Bounded batches keep each cleanup short; the expiry index finds them.
            cleanup_results=f"""DELETE FROM {n.results} WHERE job_id IN (
                SELECT job_id FROM {n.results} WHERE expires_at <= now() LIMIT 5000)""",
        )


def enqueue_arguments(envelopes: Sequence[Envelope], channel: str) -> tuple[object, ...]:
    """The arguments of `Queries.enqueue` for a batch: columns, then each queue's soonest delay."""
    soonest: dict[str, float] = {}
    for env in envelopes:
        delay = max(env.delay, 0.0)
        soonest[env.queue] = min(delay, soonest.get(env.queue, delay))
    return (
        [e.id for e in envelopes],
        [e.queue for e in envelopes],
        [e.body for e in envelopes],
        [max(e.delay, 0.0) for e in envelopes],
        [e.priority for e in envelopes],
        [f"{delay!r} {queue}" for queue, delay in soonest.items()],
        channel,
    )
