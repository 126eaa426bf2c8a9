"""Every semantic conformance class (a real Worker) against Redis."""

from __future__ import annotations

import pytest
from upnext.testing import WorkerSemantics


class TestRedisSemantics(WorkerSemantics):
    """Every semantic class on the test server, under a key prefix of the test's own."""

    @pytest.fixture
    def broker_url(self, prefixed_url: str) -> str:
        """The server URL under this test's own key prefix (cleaned afterwards)."""
        return prefixed_url
