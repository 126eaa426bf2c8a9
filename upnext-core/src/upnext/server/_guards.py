"""ASGI middleware: bearer-token auth, request-size limit, and a last-resort error guard."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "BodyLimit", "ErrorGuard", "TokenAuth"]

log = logging.getLogger("upnext.server")

COOKIE = "upnext_token"

_LOGIN_PAGE = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>upnext: sign in</title></head><body style="font-family:sans-serif;margin:3em">
<h1>upnext</h1><p>This server needs its API token.</p>
<form method="post" action="/login"><label>Token <input name="token" type="password"
autocomplete="current-password" autofocus></label> <button>Sign in</button></form></body></html>"""


async def _json(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": code, "message": message}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class TokenAuth:
    """Every HTTP request needs ``Authorization: Bearer <token>`` (or the sign-in cookie).

    Browsers cannot send a header on navigation, so a browser without the
    token gets the 401 with a sign-in form; posting the right token to
    ``/login`` sets an HttpOnly, SameSite=Strict cookie holding it.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _valid(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, credentials = _header(scope, b"authorization").partition(" ")
        if scheme.lower() == "bearer" and self._valid(credentials.strip()):
            return True
        cookie = SimpleCookie(_header(scope, b"cookie"))
        return COOKIE in cookie and self._valid(cookie[COOKIE].value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
        elif scope["path"] == "/login" and scope["method"] == "POST":
            await self._login(receive, send)
        else:
            await self._refuse(scope, send)

    async def _login(self, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, 4096) or b""
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not self._valid(token):
            await _json(send, 401, "unauthorized", "wrong token")
            return
        cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        headers = [(b"location", b"/"), (b"set-cookie", cookie.encode()), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if "text/html" in _header(scope, b"accept"):
            headers = [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"www-authenticate", b"Bearer"),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": _LOGIN_PAGE})
            return
        await _json(send, 401, "unauthorized", "send Authorization: Bearer <UPNEXT_API_TOKEN>")


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared and (not declared.isdigit() or int(declared) > self.limit):
            await _json(send, 413, "too_large", f"request body over {self.limit} bytes")
            return
        body = await _read_body(receive, self.limit)
        if body is None:
            await _json(send, 413, "too_large", f"request body over {self.limit} bytes")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # after the body: wait for the disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ErrorGuard:
    """Turn an unexpected exception into a JSON 500 without a traceback; log one scrubbed line."""

    def __init__(self, app: ASGIApp, scrub: Callable[[str], str]) -> None:
        self.app = app
        self.scrub = scrub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan and websockets report their own failures
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            log.error(
                "%s %s failed: %s: %s",
                scope.get("method"),
                scope.get("path"),
                type(exc).__name__,
                self.scrub(str(exc)),
            )
            if not started:
                await _json(send, 500, "internal", "internal server error (see the server log)")
