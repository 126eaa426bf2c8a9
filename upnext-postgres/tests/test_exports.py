"""The public facade and the entry points that find it."""

from __future__ import annotations

from types import ModuleType

import pytest
import upnext_postgres
from upnext._discovery import BROKER_GROUP, RESULT_STORE_GROUP, load_factory
from upnext.broker.protocol import Broker, DeadLetterAdmin, QueueAdmin, ResultStore
from upnext.broker.state import StateStore
from upnext_postgres import PostgresBroker


def test_all_lists_exactly_the_public_names() -> None:
    """`__all__` names every public non-module attribute of the facade, once."""
    public = {
        name
        for name, value in vars(upnext_postgres).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert len(upnext_postgres.__all__) == len(set(upnext_postgres.__all__))
    assert set(upnext_postgres.__all__) == public


@pytest.mark.parametrize("group", [BROKER_GROUP, RESULT_STORE_GROUP])
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_schemes_resolve_to_the_factory(group: str, scheme: str) -> None:
    """Both schemes, in both groups, build a PostgresBroker without connecting."""
    broker = load_factory(f"{scheme}://u@127.0.0.1/db", group)(f"{scheme}://u@127.0.0.1/db")
    assert isinstance(broker, PostgresBroker)
    for protocol in (Broker, ResultStore, DeadLetterAdmin, QueueAdmin, StateStore):
        assert isinstance(broker, protocol)
    assert broker.capabilities.transactional_enqueue
