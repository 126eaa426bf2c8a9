"""`create_app`: the FastAPI application (REST API, dashboard, auth, error mapping)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from upnext.errors import (
    BrokerError,
    BrokerUnavailable,
    Busy,
    ConfigurationError,
    DeadLetterNotFound,
    SerializationError,
    UnsupportedOperation,
    UpNextError,
)
from upnext.server._api import router
from upnext.server._backend import Backend
from upnext.server._crons import crons_router
from upnext.server._guards import BodyLimit, ErrorGuard, TokenAuth
from upnext.server._history import QueueHistory, history_router
from upnext.server._hosts import HostGuard, served_hosts
from upnext.server._metrics import metrics_router
from upnext.server._queues import queues_router

__all__ = ["ENV_TOKEN", "MAX_BODY", "check_bind", "create_app"]

ENV_TOKEN = "UPNEXT_API_TOKEN"
MAX_BODY = 64 * 1024
STATIC = Path(__file__).parent / "static"


def _status_of(exc: UpNextError) -> tuple[int, str]:
    """The HTTP status and error code for an upnext error."""
    if isinstance(exc, DeadLetterNotFound):
        return 404, "not_found"
    if isinstance(exc, BrokerUnavailable):
        return 503, "unavailable"
    if isinstance(exc, Busy):
        return 409, "busy"  # e.g. a scan-type DLQ serves one admin at a time
    if isinstance(exc, BrokerError):
        return 502, "broker_error"
    if isinstance(exc, UnsupportedOperation):
        return 409, "unsupported"
    if isinstance(exc, ConfigurationError | SerializationError | ValueError):
        return 422, "invalid"  # e.g. a cursor this broker did not make
    return 500, "internal"


def _allowed_methods(request: Request) -> list[str]:
    """The documented methods of this path (Starlette names only the first route's).

    A literal path (``/dlq/replay``) is its own resource, not an instance of
    ``/dlq/{entry_id}``.
    """
    paths: dict[str, dict[str, object]] = request.app.openapi()["paths"]
    path = request.url.path
    if path in paths:
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


async def _upnext_error(request: Request, exc: Exception) -> JSONResponse:
    """An upnext error as JSON: status by kind, message scrubbed of URLs and passwords."""
    assert isinstance(exc, UpNextError)
    status, code = _status_of(exc)
    backend: Backend = request.app.state.backend
    message = backend.scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, DeadLetterNotFound):
        message = f"no dead-letter entry {message} (never existed, replayed or deleted)"
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    """Validation errors as 422: a one-line message and each field in `detail`."""
    assert isinstance(exc, RequestValidationError)
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse(
        jsonable_encoder(
            {"error": "invalid", "message": f"{where}: {first['msg']}", "detail": detail}
        ),
        status_code=422,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing errors (404, 405) as JSON; an unparseable body as 422."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # an unparseable body: bad input, like any other (422)
        return JSONResponse(
            {"error": "invalid", "message": str(exc.detail), "detail": []}, status_code=422
        )
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
    if exc.status_code == 405:
        headers["allow"] = ", ".join(_allowed_methods(request))
    return JSONResponse(
        {"error": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=headers,
    )


_HANDLERS: dict[Any, Any] = {
    UpNextError: _upnext_error,
    RequestValidationError: _invalid,
    StarletteHTTPException: _http_error,
}


def create_app(
    broker_url: str,
    results_url: str | None = None,
    *,
    token: str | None = None,
    queues: Sequence[str] | None = None,
    management_url: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    history_interval: float = 5.0,
) -> FastAPI:
    """Build the server app: REST API under /api/v1, OpenAPI at /openapi.json, dashboard at /.

    ``GET /metrics`` serves the job metrics workers publish (Prometheus text).

    `token` (default ``$UPNEXT_API_TOKEN``) makes every route require
    ``Authorization: Bearer <token>``. `queues` are listed by /api/v1/queues
    besides those the broker knows (AMQP cannot list queues). On RabbitMQ,
    `management_url` (``http://user:pass@host:15672``) makes the management
    API the source of queue names and depths, in-flight counts included.
    Only requests whose ``Host`` is a loopback name (``127.0.0.1``,
    ``localhost``, ``[::1]``), one of `allowed_hosts` or of
    ``$UPNEXT_ALLOWED_HOSTS`` (comma-separated) are served; others get 400,
    so a DNS-rebinding page cannot reach the API. An entry is ``host`` or
    ``host:port``; ``*`` serves every host.

    While it runs (its lifespan), the app samples queue depths and worker
    throughput every `history_interval` seconds into an hour-long in-memory
    ring buffer, served by ``GET /api/v1/queues/history``.
    """
    backend = Backend(broker_url, results_url, queues or (), management_url)
    history = QueueHistory(backend, history_interval)
    token = token if token is not None else os.environ.get(ENV_TOKEN) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with history.sampling():
            yield
        await backend.aclose()

    app = FastAPI(
        title="upnext",
        summary="Browse and replay the dead-letter queue, look up results, watch queues.",
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the dashboard works offline
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers=_HANDLERS,
    )
    app.state.backend = backend
    app.state.history = history
    app.include_router(router)
    app.include_router(history_router)
    app.include_router(metrics_router)
    app.include_router(crons_router)
    app.include_router(queues_router)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Added innermost first: auth runs before anything reads the body.
    app.add_middleware(ErrorGuard, scrub=backend.scrub)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    if token:
        app.add_middleware(TokenAuth, token=token)
    app.add_middleware(HostGuard, hosts=served_hosts(allowed_hosts))
    return app


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse (ConfigurationError) to serve a non-loopback address without a token."""
    if token or insecure:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"refusing to listen on {host} without a token: set UPNEXT_API_TOKEN"
            " (or --token), or pass --insecure"
        )
