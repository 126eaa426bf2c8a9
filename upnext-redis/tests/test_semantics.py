"""The semantic conformance classes (a real Worker) against Redis."""

from __future__ import annotations

import pytest
from upnext.testing.semantics_dlq import DeadLetterSemantics
from upnext.testing.semantics_errors import ErrorSemantics
from upnext.testing.semantics_hooks import HookSemantics
from upnext.testing.semantics_leases import LeaseSemantics
from upnext.testing.semantics_retries import RetrySemantics
from upnext.testing.semantics_timeouts import TimeoutSemantics


class TestRedisSemantics(
    RetrySemantics,
    ErrorSemantics,
    TimeoutSemantics,
    LeaseSemantics,
    DeadLetterSemantics,
    HookSemantics,
):
    """Every semantic class on the test server, under a key prefix of the test's own."""

    @pytest.fixture
    def broker_url(self, prefixed_url: str) -> str:
        """The server URL under this test's own key prefix (cleaned afterwards)."""
        return prefixed_url
