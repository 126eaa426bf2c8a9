"""upnext backend on a SQLite file: ``sqlite:///jobs.db`` (relative) or ``sqlite:////abs/jobs.db``.

Written as a third party would write one, on upnext's public API only. See
`SQLiteBroker` for the guarantees and their limits.
"""

from upnext_sqlite.broker import SQLiteBroker

__all__ = ["SQLiteBroker"]
