"""`upnext schema`: print the DDL a backend applies at connect.

For teams that apply migrations with their own tool. A backend offers its
DDL by implementing `upnext.broker.SchemaProvider` (a ``schema_sql() -> str``
method); a backend that keeps no schema does not.
"""

from __future__ import annotations

import argparse
import os
import sys

from upnext._discovery import load_factory
from upnext._urls import scheme_of
from upnext._worker import ENV_BROKER
from upnext.broker.optional import SchemaProvider
from upnext.cli._output import fail

__all__ = ["schema"]


def schema(args: argparse.Namespace) -> int:
    """Print the broker's DDL; 1 when its backend keeps no schema, 2 without a URL."""
    url = args.broker or os.environ.get(ENV_BROKER)
    if not url:
        return fail("no broker: pass --broker URL or set UPNEXT_BROKER_URL", 2)
    broker = load_factory(url)(url)
    if not isinstance(broker, SchemaProvider):
        return fail(f"the {scheme_of(url)}:// backend keeps no schema: nothing to print")
    sys.stdout.write(broker.schema_sql())
    return 0
