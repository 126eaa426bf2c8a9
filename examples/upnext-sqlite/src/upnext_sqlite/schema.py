"""Every table, index and statement of the SQLite backend, in one place.

One column, `due`, carries a job's clock: while the job waits it is the time
it becomes due; while it is held it is the time its lease runs out. So "may
be handed out" is always ``due <= now`` (a due job or an expired lease), and
the next event a blocked receiver waits for is ``min(due)``. Times are Unix
seconds of this host's clock (`time.time()`): every process sharing the file
runs on this machine, so all of them judge leases by one clock.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS upnext_jobs (
    seq INTEGER PRIMARY KEY,  -- insertion order: FIFO among equally due jobs
    id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL, body BLOB NOT NULL,
    due REAL NOT NULL,  -- due time; while held, the lease's expiry
    held INTEGER NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,  -- the receipt of the latest hand-out
    hand_outs INTEGER NOT NULL DEFAULT 0,  -- since the body was last written
    priority INTEGER NOT NULL DEFAULT 0  -- the envelope's, kept through retries and releases
);
CREATE INDEX IF NOT EXISTS upnext_jobs_due ON upnext_jobs (queue, due);
CREATE TABLE IF NOT EXISTS upnext_queues (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS upnext_dead (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, queue TEXT NOT NULL, function TEXT NOT NULL,
    reason TEXT NOT NULL, failed_at REAL NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS upnext_dead_order ON upnext_dead (failed_at, id);
CREATE INDEX IF NOT EXISTS upnext_dead_queue ON upnext_dead (queue, failed_at, id);
CREATE INDEX IF NOT EXISTS upnext_dead_job ON upnext_dead (job_id);
CREATE TABLE IF NOT EXISTS upnext_results (
    job_id TEXT PRIMARY KEY, data BLOB NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS upnext_results_expires ON upnext_results (expires);
CREATE TABLE IF NOT EXISTS upnext_state (
    version INTEGER PRIMARY KEY AUTOINCREMENT,  -- a new one per write, never reused
    scope TEXT NOT NULL,  -- '' without a scope, else '/' and the scope
    key TEXT NOT NULL, value BLOB NOT NULL,
    expires REAL,  -- NULL: kept until replaced or deleted
    UNIQUE (scope, key)
);
CREATE INDEX IF NOT EXISTS upnext_state_expires ON upnext_state (expires);
CREATE TABLE IF NOT EXISTS upnext_slots (
    scope TEXT NOT NULL, key TEXT NOT NULL, member TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (scope, key, member)
);
CREATE INDEX IF NOT EXISTS upnext_slots_expires ON upnext_slots (expires);
"""

# A job id is its key: an id not yet settled (queued, scheduled or held) is left alone.
ENQUEUE = """INSERT INTO upnext_jobs (id, queue, body, due, priority) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING"""
ADD_QUEUE = "INSERT OR IGNORE INTO upnext_queues (name) VALUES (?)"
# A hand-out is live while it is held under its token and its lease has not run out.
LIVE = "id = ? AND token = ? AND held = 1 AND due >= ?"
# Ready or scheduled, or held under an expired lease: never a live hand-out.
NOT_HELD = "(held = 0 OR due <= ?)"
FIRST_DUE = "SELECT min(due) FROM upnext_jobs WHERE queue = ?"
DUE = """SELECT seq, id, queue, body, token, hand_outs, due, priority FROM upnext_jobs
    WHERE queue = ? AND due <= ? ORDER BY due, seq LIMIT ?"""
TAKE = """UPDATE upnext_jobs SET held = 1, due = ?, token = token + 1,
    hand_outs = hand_outs + 1 WHERE seq = ?"""
ACK = f"DELETE FROM upnext_jobs WHERE {LIVE}"
RETRY = f"""UPDATE upnext_jobs SET body = ?, due = ?, held = 0, token = token + 1,
    hand_outs = 0 WHERE {LIVE}"""
RELEASE = f"""UPDATE upnext_jobs SET due = ?, held = 0, token = token + 1,
    hand_outs = hand_outs - 1 WHERE {LIVE}"""
EXTEND = f"UPDATE upnext_jobs SET due = ? WHERE {LIVE}"
CANCEL = f"DELETE FROM upnext_jobs WHERE id = ? AND queue = ? AND {NOT_HELD}"
PURGE = f"DELETE FROM upnext_jobs WHERE queue = ? AND {NOT_HELD}"
DEAD_DELETE = "DELETE FROM upnext_dead WHERE id = ?"
DEAD_PURGE = "DELETE FROM upnext_dead WHERE ?1 IS NULL OR queue = ?1"
DEAD_COUNT = "SELECT count(*) FROM upnext_dead WHERE ?1 IS NULL OR queue = ?1"
DEAD_PUT = "INSERT OR REPLACE INTO upnext_dead VALUES (?, ?, ?, ?, ?, ?, ?)"
RESULT_PUT = "INSERT OR REPLACE INTO upnext_results (job_id, data, expires) VALUES (?, ?, ?)"
RESULT_GET = "SELECT data FROM upnext_results WHERE job_id = ? AND expires > ?"
RESULT_SWEEP = "DELETE FROM upnext_results WHERE expires <= ?"
# Waiting jobs (`JobBrowser`), after the keyset (due, seq) of the last one shown, in
# receive's order over upnext_jobs_due (its rows end in seq, the rowid): one seek each.
WAITING_READY = """SELECT due, seq, id, body, priority FROM upnext_jobs
    WHERE queue = ? AND due <= ? AND (due, seq) > (?, ?) ORDER BY due, seq LIMIT ?"""
# Scheduled: the keyset starts past now. Rows held under a live lease share the
# range and are skipped: as many as the jobs in flight.
WAITING_SCHEDULED = """SELECT due, seq, id, body, priority FROM upnext_jobs
    WHERE queue = ? AND (due, seq) > (?, ?) AND held = 0 ORDER BY due, seq LIMIT ?"""
STATS = """SELECT total(due <= ?1), total(held = 0 AND due > ?1), total(held = 1 AND due > ?1),
    (SELECT count(*) FROM upnext_dead WHERE queue = ?2) FROM upnext_jobs WHERE queue = ?2"""

# The state store (see `state`). An expired row is never read: every read filters
# on `expires`, and each write transaction first sweeps what has expired.
STATE_GET = """SELECT value, version FROM upnext_state
    WHERE scope = ? AND key = ? AND (expires IS NULL OR expires > ?)"""
# REPLACE deletes the old row and inserts a new one: a fresh AUTOINCREMENT version.
STATE_SET = "INSERT OR REPLACE INTO upnext_state (scope, key, value, expires) VALUES (?, ?, ?, ?)"
STATE_DELETE = "DELETE FROM upnext_state WHERE scope = ? AND key = ?"
STATE_SWEEP = "DELETE FROM upnext_state WHERE expires <= ?"
STATE_SCAN = """SELECT key, value, version FROM upnext_state
    WHERE scope = ? AND {range} AND (expires IS NULL OR expires > ?) ORDER BY key LIMIT ?"""
SLOTS_SWEEP = "DELETE FROM upnext_slots WHERE expires <= ?"
SLOTS_COUNT = """SELECT count(*), min(expires), total(member = ?) FROM upnext_slots
    WHERE scope = ? AND key = ?"""
SLOTS_TAKE = "INSERT OR REPLACE INTO upnext_slots (scope, key, member, expires) VALUES (?, ?, ?, ?)"
SLOTS_RELEASE = "DELETE FROM upnext_slots WHERE scope = ? AND key = ? AND member = ?"


def upgrade(conn: sqlite3.Connection) -> None:
    """Add the `priority` column to a file made before it, under the write lock."""
    if "priority" in {row[1] for row in conn.execute("PRAGMA table_info(upnext_jobs)")}:
        return
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # another process may have added it meanwhile: look again, locked
        if "priority" not in {row[1] for row in conn.execute("PRAGMA table_info(upnext_jobs)")}:
            conn.execute("ALTER TABLE upnext_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
