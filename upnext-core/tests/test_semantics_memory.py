"""The semantic conformance classes against memory://, plus memory-only guarantees."""

from __future__ import annotations

import uuid

import pytest
from upnext.testing.semantics_dlq import DeadLetterSemantics
from upnext.testing.semantics_errors import ErrorSemantics
from upnext.testing.semantics_hooks import HookSemantics
from upnext.testing.semantics_leases import LeaseSemantics
from upnext.testing.semantics_retries import RetrySemantics
from upnext.testing.semantics_timeouts import TimeoutSemantics


class TestMemorySemantics(
    RetrySemantics,
    ErrorSemantics,
    TimeoutSemantics,
    LeaseSemantics,
    DeadLetterSemantics,
    HookSemantics,
):
    """Every semantic class on a fresh memory:// broker per test."""

    @pytest.fixture
    def broker_url(self) -> str:
        """A memory:// URL no other test shares."""
        return f"memory://t-{uuid.uuid4().hex}"
