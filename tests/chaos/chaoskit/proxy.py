"""The chaos suite's TCP proxy is upnext's own test proxy (`upnext.testing.proxy`)."""

from upnext.testing.proxy import FaultyProxy, Link

__all__ = ["FaultyProxy", "Link"]
