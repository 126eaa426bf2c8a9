"""The DDL of the `StateStore` (schema version 2): two tables, a sequence, three functions.

- ``state``: one row per entry, keyed by ``(scope, key)``; ``key`` sorts
  bytewise (``COLLATE "C"``), the order of Python strings, so scans page in
  the contract's key order. ``version`` comes from the ``state_versions``
  sequence, never from a per-key counter, so it never repeats for a key,
  even after a delete. ``expires_at`` is NULL for an entry kept until
  replaced.
- ``state_slots``: one row per slot member, keyed by ``(scope, key, member)``.
- ``state_put(...)`` applies one call's writes in key order, a key's writes
  in call order (no other order can be seen: the call commits at once), each
  one statement PostgreSQL makes atomic on its row (``INSERT ... ON
  CONFLICT``, an ``UPDATE`` or ``DELETE`` that re-checks the version on the
  row it locks).
- ``slots_acquire(...)`` takes a transaction-level advisory lock on the key,
  drops its expired members, counts the rest and admits or refuses;
  ``slots_release(...)`` deletes members under the same lock.

Times are the server's ``clock_timestamp()``, read after the row or key lock
is held, so an expiry is judged at the moment the write takes effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from upnext_postgres.schema import Names

__all__ = ["state_ddl"]

_LIVE = "(expires_at IS NULL OR expires_at > clock_timestamp())"
_EXPIRES = "clock_timestamp() + p_ttls[i] * interval '1 second'"  # NULL when ttl is NULL


def _put_function(n: Names) -> str:
    # p_kinds[i]: 'any', 'absent' or 'version' (then p_versions[i] is the version).
    # A NULL p_values[i] deletes. Returns whether each write was applied.
    match = "scope = p_scope AND key = p_keys[i]"
    return f"""CREATE OR REPLACE FUNCTION {n.state_put}(
    p_scope text, p_keys text[], p_values bytea[], p_ttls float8[],
    p_kinds text[], p_versions int8[]
) RETURNS boolean[] LANGUAGE plpgsql AS $fn$
DECLARE
    applied boolean[] := array_fill(false, ARRAY[coalesce(array_length(p_keys, 1), 0)]);
    i integer;
BEGIN
    -- In key order (a key's writes in call order): calls that write the same
    -- keys lock their rows in one order, so they wait for each other, never deadlock.
    FOR i IN SELECT t.i FROM unnest(p_keys) WITH ORDINALITY AS t(k, i)
        ORDER BY t.k COLLATE "C", t.i
    LOOP
        IF p_kinds[i] = 'absent' THEN
            -- A committed live entry refuses at once, and writes nothing (no WAL
            -- flush at commit): the common answer to a repeated unique key.
            PERFORM 1 FROM {n.state} WHERE {match} AND {_LIVE};
            CONTINUE WHEN FOUND;
            IF p_values[i] IS NULL THEN
                applied[i] := true;
                CONTINUE;
            END IF;
        END IF;
        IF p_values[i] IS NULL THEN
            DELETE FROM {n.state} WHERE {match}
                AND (p_kinds[i] = 'any' OR (version = p_versions[i] AND {_LIVE}));
            applied[i] := FOUND OR p_kinds[i] = 'any';
        ELSIF p_kinds[i] = 'version' THEN
            UPDATE {n.state} SET value = p_values[i], version = nextval('{n.state_versions}'),
                expires_at = {_EXPIRES}
            WHERE {match} AND version = p_versions[i] AND {_LIVE};
            applied[i] := FOUND;
        ELSE
            INSERT INTO {n.state} AS s (scope, key, value, version, expires_at)
            VALUES (p_scope, p_keys[i], p_values[i], nextval('{n.state_versions}'), {_EXPIRES})
            ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
                version = excluded.version, expires_at = excluded.expires_at
            WHERE p_kinds[i] = 'any' OR s.expires_at <= clock_timestamp();
            applied[i] := FOUND;
        END IF;
    END LOOP;
    RETURN applied;
END
$fn$"""


def _slot_lock(n: Names) -> str:
    # The key's transaction-level advisory lock, a hash of scope and key.
    key = "p_scope || E'\\n' || p_key"
    return f"PERFORM pg_advisory_xact_lock(hashtextextended({key}, {n.slot_lock_seed}))"


def _release_function(n: Names) -> str:
    # Under the key's lock too: an acquire and a release of one key never
    # lock its member rows in opposite orders.
    return f"""CREATE OR REPLACE FUNCTION {n.slots_release}(
    p_scope text, p_key text, p_members text[]
) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    {_slot_lock(n)};
    DELETE FROM {n.state_slots} WHERE scope = p_scope AND key = p_key AND member = ANY(p_members);
END
$fn$"""


def _slots_function(n: Names) -> str:
    # One caller per key at a time: the advisory lock makes count-then-insert
    # atomic. Returns (acquired, count, retry_after).
    key = "scope = p_scope AND key = p_key"
    return f"""CREATE OR REPLACE FUNCTION {n.slots_acquire}(
    p_scope text, p_key text, p_member text, p_limit integer, p_ttl float8,
    OUT o_acquired boolean, OUT o_count integer, OUT o_retry_after float8
) LANGUAGE plpgsql AS $fn$
DECLARE
    t timestamptz;
    earliest timestamptz;
    held boolean;
BEGIN
    {_slot_lock(n)};
    t := clock_timestamp();
    DELETE FROM {n.state_slots} WHERE {key} AND expires_at <= t;
    SELECT count(*), min(expires_at), coalesce(bool_or(member = p_member), false)
        INTO o_count, earliest, held
        FROM {n.state_slots} WHERE {key};
    IF held OR p_limit IS NULL OR o_count < p_limit THEN
        INSERT INTO {n.state_slots} (scope, key, member, expires_at)
        VALUES (p_scope, p_key, p_member, t + p_ttl * interval '1 second')
        ON CONFLICT (scope, key, member) DO UPDATE SET expires_at = excluded.expires_at;
        o_acquired := true;
        o_count := o_count + CASE WHEN held THEN 0 ELSE 1 END;
        o_retry_after := 0.0;
    ELSE
        o_acquired := false;
        o_retry_after := greatest(extract(epoch FROM earliest - t)::float8, 0.0);
    END IF;
END
$fn$"""


def state_ddl(n: Names) -> list[str]:
    """Migration 2: the `StateStore`'s tables, sequence and functions (idempotent)."""
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {n.state_versions} AS bigint",
        f"""CREATE TABLE IF NOT EXISTS {n.state} (
            scope text NOT NULL,
            key text COLLATE "C" NOT NULL,
            value bytea NOT NULL,
            version bigint NOT NULL,
            expires_at timestamptz,
            PRIMARY KEY (scope, key)
        )""",
        f"CREATE INDEX IF NOT EXISTS state_expiry ON {n.state} (expires_at) "
        "WHERE expires_at IS NOT NULL",
        f"""CREATE TABLE IF NOT EXISTS {n.state_slots} (
            scope text NOT NULL,
            key text NOT NULL,
            member text NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (scope, key, member)
        )""",
        f"CREATE INDEX IF NOT EXISTS state_slots_expiry ON {n.state_slots} (expires_at)",
        _put_function(n),
        _slots_function(n),
        _release_function(n),
    ]
