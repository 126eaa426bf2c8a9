"""The semantic conformance classes against memory://, plus memory-only guarantees."""

from __future__ import annotations

import uuid

import pytest
from upnext.testing.semantics import WorkerSemantics


class TestMemorySemantics(WorkerSemantics):
    """Every semantic class on a fresh memory:// broker per test."""

    @pytest.fixture
    def broker_url(self) -> str:
        """A memory:// URL no other test shares."""
        return f"memory://t-{uuid.uuid4().hex}"
