"""URL helpers: the scheme, and a form safe to print (password hidden)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "scheme_of"]


def scheme_of(url: str) -> str:
    """The lower-cased scheme of `url` ('' if it has none)."""
    return urlsplit(url).scheme.lower()


def redact_url(url: str) -> str:
    """`url` with any password replaced by ``***``; safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" not in netloc and not any(_secret(k) for k in _keys(parts.query)):
        return url
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if sep else f"{user}@{host}"
    query = "&".join(
        f"{k}=***" if _secret(k) else f"{k}={v}" if eq else k
        for k, eq, v in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _keys(query: str) -> list[str]:
    return [pair.partition("=")[0] for pair in query.split("&") if pair]


def _secret(key: str) -> bool:
    """Query keys whose values are secrets (password, sslpassword, token, ...)."""
    key = key.lower()
    return any(word in key for word in ("pass", "secret", "token", "credential"))
