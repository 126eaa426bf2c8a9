"""Print the backend's DDL: ``python -m upnext_postgres sql [--schema NAME]``.

For teams that apply migrations with their own tool instead of letting
workers migrate at connect.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from upnext.errors import ConfigurationError

from upnext_postgres.schema import schema_sql

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and print the SQL; 2 on a bad schema name."""
    parser = argparse.ArgumentParser(prog="python -m upnext_postgres")
    commands = parser.add_subparsers(dest="command", required=True)
    sql = commands.add_parser("sql", help="print the DDL (idempotent, one transaction)")
    sql.add_argument("--schema", default="upnext", help="schema name (default: upnext)")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(schema_sql(args.schema))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
