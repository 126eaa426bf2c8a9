"""Passwords out of every message: the one place upnext hides them.

`redact_url` is the printable form of a broker URL or DSN. `redact` cleans
any text (a driver's error message, a log line) of the passwords in URLs it
contains, and of the passwords the given URLs carry wherever they appear
(a driver may echo one alone, or percent-decoded). Backends call them for
every message that may hold a URL, a DSN or a driver's words; core's log
filter and the server use the same code.

Redaction does not trust a URL to be well formed: ``amqp:/guest:pw@host``
(one slash) or a password holding ``/`` still has its password hidden.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["redact", "redact_url", "url_secrets"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# scheme:[/...]user:password@ , however many slashes; the password runs to the last '@'.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*:/*[^\s/:@'\"]*):([^\s'\"]+)@")
_SECRET_WORDS = ("pass", "secret", "token", "credential")
# ?password=... or &sslpassword=... in a URL inside some text.
_QUERY_SECRET = re.compile(
    r"(?i)([?&][^=&\s'\"]*(?:" + "|".join(_SECRET_WORDS) + r")[^=&\s'\"]*=)[^&\s'\"#]+"
)


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***``; safe for logs and errors."""
    try:
        urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    scheme, colon, rest = url.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        scheme, colon, rest = "", "", url
    body = rest.lstrip("/")
    slashes = rest[: len(rest) - len(body)]
    end = min((i for i in (body.find("?"), body.find("#")) if i >= 0), default=len(body))
    head, query, fragment = body[:end], body[end:], ""
    if "#" in query:
        query, hash_, fragment = query.partition("#")
        fragment = hash_ + fragment
    return f"{scheme}{colon}{slashes}{_hide_password(head)}{_hide_query(query)}{fragment}"


def url_secrets(url: str) -> frozenset[str]:
    """The passwords `url` carries (userinfo and secret query values), raw and decoded."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        found.add(parts.password or "")
        found |= {v for k, v in parse_qsl(parts.query) if _secret(k)}
    except ValueError:
        pass
    found |= {unquote(s) for s in found}
    return frozenset(s for s in found if s)


def redact(text: str, *urls: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL password, and each password of `urls` and `secrets`, as ``***``."""
    # Each pattern needs its literal character: the common text without one skips the regex.
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1:***@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
    if not urls and not secrets:  # URL passwords only (the log filter's path, once per record)
        return text
    hidden = set(secrets).union(*(url_secrets(url) for url in urls))
    for secret in sorted(hidden, key=len, reverse=True):  # a password inside another: longest first
        if secret:
            text = text.replace(secret, "***")
    return text


def _hide_password(head: str) -> str:
    """``user:pass@host/path`` -> ``user:***@host/path``; the userinfo ends at the last ``@``."""
    userinfo, at, host = head.rpartition("@")
    user, sep, _password = userinfo.partition(":")
    return f"{user}:***@{host}" if at and sep else head


def _hide_query(query: str) -> str:
    if not query:
        return query
    pairs = (pair.partition("=") for pair in query[1:].split("&"))
    hidden = [f"{k}=***" if _secret(k) else f"{k}{eq}{v}" for k, eq, v in pairs]
    return "?" + "&".join(hidden)


def _secret(key: str) -> bool:
    """Query keys whose values are secrets (password, sslpassword, token, ...)."""
    key = key.lower()
    return any(word in key for word in _SECRET_WORDS)
