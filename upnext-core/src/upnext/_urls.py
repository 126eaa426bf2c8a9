"""URL helpers: the scheme, and a check for typos (redaction is `upnext.broker.redact`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

__all__ = ["check_url", "did_you_mean", "scheme_of"]


def scheme_of(url: str) -> str:
    """The lower-cased scheme of `url` ('' if it has none)."""
    return urlsplit(url).scheme.lower()


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
