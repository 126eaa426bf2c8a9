"""The Host check: a DNS-rebinding page (a foreign name on 127.0.0.1) gets 400, not the DLQ."""

from __future__ import annotations

import uuid

import httpx
import pytest
import upnext
from upnext.testing import needs_modules
from upnext.testing.loopback import serve_in_thread

needs_modules("fastapi", "uvicorn")

from upnext.cli._commands import _bound_hosts  # noqa: E402
from upnext.server import ENV_ALLOWED_HOSTS, create_app  # noqa: E402

SECRET_ARG = "payload-" + uuid.uuid4().hex


async def _dead_letter(url: str) -> None:
    worker = upnext.Worker("hosts", broker=url, load_plugins=False)

    @worker.task(retries=0)
    async def boom(arg: str) -> None:
        raise ValueError("boom")

    async with worker:
        future = await boom.submit(SECRET_ARG)
        with pytest.raises(upnext.TaskExecutionError):
            await future.result(timeout=5)


async def test_a_forged_host_is_400_without_the_dlq() -> None:
    """Without a token, over a real socket: loopback names are served, a foreign Host is not."""
    url = f"memory://hosts-{uuid.uuid4().hex}"
    await _dead_letter(url)
    with serve_in_thread(create_app(url)) as base:
        port = base.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=base) as http:
            for host in ("127.0.0.1", f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                ok = await http.get("/api/v1/dlq", headers={"host": host})
                assert ok.status_code == 200, host
                assert SECRET_ARG in ok.text
            forged = await http.get("/api/v1/dlq", headers={"host": "rebind.evil.example"})
            assert forged.status_code == 400
            assert forged.json()["error"] == "bad_host"
            assert SECRET_ARG not in forged.text
            purge = await http.delete(
                "/api/v1/dlq", headers={"host": f"rebind.evil.example:{port}"}
            )
            assert purge.status_code == 400
            assert SECRET_ARG in (await http.get("/api/v1/dlq")).text


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("dash.example.com", True),
        ("DASH.example.com.:443", True),
        ("api.example.com:8443", True),
        ("api.example.com:9000", False),
        ("env.example", True),
        ("example.com", False),
        ("", False),
    ],
)
async def test_listed_hosts_are_served_by_name_or_name_and_port(
    host: str, served: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`allowed_hosts` and $UPNEXT_ALLOWED_HOSTS add names; `host:port` also pins the port."""
    monkeypatch.setenv(ENV_ALLOWED_HOSTS, "env.example, ")
    app = create_app(
        f"memory://hosts-{uuid.uuid4().hex}",
        allowed_hosts=["dash.example.com", "api.example.com:8443"],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        response = await http.get("/api/v1/health", headers={"host": host})
    assert response.status_code == (200 if served else 400)


def test_the_cli_serves_the_bound_address_and_lists_wildcards_only_when_asked() -> None:
    """`upnext server --host`: a named bind adds itself; 0.0.0.0 serves any Host unless listed."""
    assert _bound_hosts("10.1.2.3", 8000, ["dash.example"], False) == [
        "dash.example",
        "10.1.2.3:8000",
    ]
    assert _bound_hosts("fd00::5", 80, [], False) == ["[fd00::5]:80"]
    assert _bound_hosts("0.0.0.0", 8000, [], False) == ["*"]
    assert _bound_hosts("0.0.0.0", 8000, ["dash.example"], False) == ["dash.example"]
    assert _bound_hosts("::", 8000, [], True) == []
