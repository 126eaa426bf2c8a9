"""Server guards: bearer token on every route, loopback-only without a token, error mapping."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from upnext.errors import BrokerError, Busy, ConfigurationError
from upnext.testing import needs_modules

needs_modules("fastapi")

from fastapi import FastAPI  # noqa: E402
from upnext.server import check_bind, create_app  # noqa: E402

TOKEN = "t0k3n-" + uuid.uuid4().hex
SECRET = "pw-canary-" + uuid.uuid4().hex


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    app = create_app(f"memory://user:{SECRET}@auth-{uuid.uuid4().hex}", token=TOKEN)
    yield app
    await app.state.backend.aclose()


def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers
    )


def _every_route(app: FastAPI) -> list[tuple[str, str]]:
    routes = [("GET", "/"), ("GET", "/static/app.js"), ("GET", "/openapi.json")]
    for path, methods in app.openapi()["paths"].items():
        concrete = path.replace("{entry_id}", "x").replace("{job_id}", "x")
        routes += [(method.upper(), concrete) for method in methods]
    return routes


async def test_every_route_needs_the_token(app: FastAPI) -> None:
    """Without (or with a wrong) bearer token, every route and asset answers 401."""
    routes = _every_route(app)
    assert len(routes) > 10
    async with _client(app) as anon, _client(app, authorization="Bearer wrong") as wrong:
        for method, path in routes:
            for client in (anon, wrong):
                response = await client.request(method, path)
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"] == "Bearer"


async def test_the_token_opens_every_route(app: FastAPI) -> None:
    """With the token the same routes answer, none with 401 or a server error."""
    async with _client(app, authorization=f"Bearer {TOKEN}") as client:
        for method, path in _every_route(app):
            response = await client.request(method, path)
            assert response.status_code not in (401, 500), (method, path, response.text)
            assert SECRET not in response.text


async def test_browser_signs_in_with_a_cookie(app: FastAPI) -> None:
    """A browser gets a sign-in form; the right token sets a cookie that opens the dashboard."""
    async with _client(app, accept="text/html") as browser:
        page = await browser.get("/")
        assert page.status_code == 401
        assert "<form" in page.text
        assert (await browser.post("/login", data={"token": "nope"})).status_code == 401
        signed = await browser.post("/login", data={"token": TOKEN})
        assert signed.status_code == 303
        assert "HttpOnly" in signed.headers["set-cookie"]
        assert (await browser.get("/")).status_code == 200
        assert (await browser.get("/api/v1/health")).status_code == 200


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("0.0.0.0", True),
        ("10.1.2.3", True),
    ],
)
def test_non_loopback_bind_needs_token_or_insecure(host: str, refused: bool) -> None:
    """Only loopback is served without a token, unless --insecure says otherwise."""
    if refused:
        with pytest.raises(ConfigurationError, match="UPNEXT_API_TOKEN"):
            check_bind(host, None, insecure=False)
    else:
        check_bind(host, None, insecure=False)
    check_bind(host, "tok", insecure=False)
    check_bind(host, None, insecure=True)


async def test_busy_scan_dlq_is_409_and_surprises_are_bare_500(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A busy scan-type DLQ answers 409; an unexpected error a 500 without traceback or password."""
    dlq = app.state.backend.dlq
    url = app.state.backend.worker.broker_url

    async def busy(*args: object, **kwargs: object) -> None:
        raise Busy("dead-letter queue busy: another admin is reading it; try again")

    async def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"driver exploded talking to {url}")

    monkeypatch.setattr(dlq, "list", busy)
    monkeypatch.setattr(dlq, "get", crash)
    async with _client(app, authorization=f"Bearer {TOKEN}") as client:
        response = await client.get("/api/v1/dlq")
        assert response.status_code == 409
        assert response.json()["error"] == "busy"
        with caplog.at_level(logging.ERROR, logger="upnext.server"):
            response = await client.get("/api/v1/dlq/abc")
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert "Traceback" not in response.text
    assert SECRET not in response.text
    assert "RuntimeError" in caplog.text
    assert SECRET not in caplog.text


async def test_busy_is_told_by_its_type_not_by_its_text(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Busy` is 409 whatever it says; a plain BrokerError that mentions "busy" is 502."""
    dlq = app.state.backend.dlq

    async def busy(*args: object, **kwargs: object) -> None:
        raise Busy("held by another admin")

    async def refused(*args: object, **kwargs: object) -> None:
        raise BrokerError("the server is busy compacting; refused")

    monkeypatch.setattr(dlq, "list", busy)
    monkeypatch.setattr(dlq, "get", refused)
    async with _client(app, authorization=f"Bearer {TOKEN}") as client:
        listed = await client.get("/api/v1/dlq")
        got = await client.get("/api/v1/dlq/abc")
    assert (listed.status_code, listed.json()["error"]) == (409, "busy")
    assert (got.status_code, got.json()["error"]) == (502, "broker_error")
