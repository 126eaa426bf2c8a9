"""Backends are found by entry point, per URL scheme, and only the one in use is imported."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from upnext._discovery import BROKER_GROUP, RESULT_STORE_GROUP, installed_schemes

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "redis": "upnext-redis",
    "rediss": "upnext-redis",
    "amqp": "upnext-rabbitmq",
    "amqps": "upnext-rabbitmq",
    "postgresql": "upnext-postgres",
    "postgres": "upnext-postgres",
    "memory": "upnext-core",
}


@pytest.mark.parametrize("group", [BROKER_GROUP, RESULT_STORE_GROUP])
def test_every_scheme_is_served_by_its_distribution(group: str) -> None:
    """Each scheme has an entry point in both groups, from the distribution that owns it."""
    found = {ep.name: ep.dist.name if ep.dist else None for ep in entry_points(group=group)}
    for scheme, dist in EXPECTED.items():
        assert found.get(scheme) == dist, f"{group}: {scheme} served by {found.get(scheme)}"
    assert set(EXPECTED) <= set(installed_schemes(group))


def test_extras_pull_the_backend_of_their_name() -> None:
    """`pip install upnext[rabbitmq]` (and redis, postgres) pulls the matching backend."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert meta["dependencies"] == ["upnext-core==0.1.0"]
    for extra, dist in {
        "redis": "upnext-redis",
        "rabbitmq": "upnext-rabbitmq",
        "postgres": "upnext-postgres",
    }.items():
        assert any(req.startswith(dist) for req in extras[extra]), extra
    assert "all" in extras


def test_only_the_scheme_in_use_is_imported() -> None:
    """Naming a redis:// broker imports upnext_redis and no other backend."""
    code = (
        "import sys, upnext\n"
        "upnext.Worker('w', broker='redis://127.0.0.1:1/0')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('upnext_')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['upnext_redis']"
