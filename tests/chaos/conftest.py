"""Fixtures of the chaos suite: one fresh namespace per backend, a ledger per run.

Short variants run by default (small counts, CI); ``UPNEXT_CHAOS_FULL=1``
switches every scenario to the figures of issue 9.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

# The harness is a plain package beside the tests, also run as `python -m chaoskit.worker`.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaoskit.backends import BACKENDS, Backend, cleanup, make_backend
from chaoskit.ledger import Ledger


def pytest_configure(config: pytest.Config) -> None:
    """Register the `chaos` marker."""
    config.addinivalue_line(
        "markers", "chaos: fault-injection scenarios of issue 9 (UPNEXT_CHAOS_FULL=1 for full size)"
    )


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every chaos scenario is `serial`: `nox -s tests` runs those after the rest, alone.

    Each scenario starts several worker processes and loads the machine on
    purpose; beside other tests (pytest-xdist) they would measure each other.
    """
    item.add_marker(pytest.mark.serial)


@pytest_asyncio.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A private namespace on one real broker; everything in it is removed afterwards."""
    made = make_backend(request.param)
    yield made
    await cleanup(made)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    """This run's execution ledger (a file outside every broker)."""
    return Ledger(tmp_path / "ledger.txt")


@pytest_asyncio.fixture(params=("memory", *BACKENDS))
async def any_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Like `backend`, plus memory:// for scenarios that run their worker in-process."""
    made = make_backend(request.param)
    yield made
    await cleanup(made)
