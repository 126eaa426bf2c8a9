"""URL helpers: the scheme, a form safe to print (password hidden), and a check for typos.

Redaction does not trust the URL to be well formed: ``amqp:/guest:pw@host``
(one slash) or a password holding ``/`` still has its password hidden.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from upnext.errors import ConfigurationError

__all__ = ["check_url", "did_you_mean", "redact_url", "scheme_of"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def scheme_of(url: str) -> str:
    """The lower-cased scheme of `url` ('' if it has none)."""
    return urlsplit(url).scheme.lower()


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
    return any(word in key for word in ("pass", "secret", "token", "credential"))


def check_url(url: str, *, host: bool = True) -> SplitResult:
    """`url` split, or ConfigurationError (one line, password hidden) for a typo.

    Catches what users mistype: a scheme without ``//`` (``amqp:/host``),
    no host (when `host` is required), a port that is not a number in
    1..65535. Options are each backend's to check.
    """
    safe = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise ConfigurationError(f"malformed URL {safe!r}: {exc}") from None
    try:
        port = parts.port
    except ValueError:  # not quoted: the "port" may be half a password holding '/'
        raise ConfigurationError(
            f"bad port in URL {safe!r}: give a number in 1..65535"
            " (percent-encode a '/' or '@' in the password)"
        ) from None
    scheme = parts.scheme.lower()
    if not url[len(scheme) + 1 :].startswith("//"):
        raise ConfigurationError(
            f"malformed URL {safe!r}: write {scheme}://host (two slashes after '{scheme}:')"
        )
    if host and not parts.hostname:
        raise ConfigurationError(f"no host in URL {safe!r}: write {scheme}://host[:port]/...")
    if port == 0:
        raise ConfigurationError(f"port 0 in URL {safe!r}: give a port in 1..65535")
    return parts


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known option closest to `name`; '' if none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""
