"""`upnext.testing.needs_server`: skip for a missing server, fail instead under CI."""

from __future__ import annotations

import socket

import pytest
from upnext.testing import needs_server


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends


def test_a_missing_server_skips_naming_the_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("UPNEXT_REQUIRE_SERVICES", raising=False)
    url = f"redis://:hunter2secret@127.0.0.1:{_closed_port()}/0"
    with pytest.raises(pytest.skip.Exception) as caught:
        needs_server(url)
    assert "no server at redis://" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


def test_a_missing_server_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPNEXT_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception):
        needs_server(f"amqp://127.0.0.1:{_closed_port()}/")


def test_a_listening_server_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        needs_server("postgresql://127.0.0.1/test", port=int(server.getsockname()[1]))
