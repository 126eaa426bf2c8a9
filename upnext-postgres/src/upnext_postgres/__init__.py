"""upnext's PostgreSQL backend: jobs, dead letters, results and state in one schema.

``postgresql://user@host/db?schema=upnext`` selects it. `PostgresBroker` is
the broker, result store, state store, dead-letter and queue admin in one object;
`schema_sql` prints the DDL for teams that apply migrations themselves.
"""

from upnext_postgres._options import PostgresOptions
from upnext_postgres.broker import PostgresBroker
from upnext_postgres.schema import SCHEMA_VERSION, schema_sql

__all__ = ["SCHEMA_VERSION", "PostgresBroker", "PostgresOptions", "schema_sql"]
