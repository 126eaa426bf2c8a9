"""URL options of the PostgreSQL backend, parsed once into a typed object.

``postgresql://user:pass@host:5432/db?schema=upnext&pool_size=10&connect_timeout=10
&command_timeout=5&lease_recovery_interval=5`` — upnext's own options are removed from the DSN
before it reaches asyncpg (which would send unknown ones to the server as
settings); everything else is passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from upnext._urls import check_url, did_you_mean
from upnext.broker.redact import redact_url
from upnext.errors import ConfigurationError

from upnext_postgres.schema import Names

__all__ = ["PostgresOptions"]

_SCHEMES = ("postgresql", "postgres")
_OPTIONS = {"schema", "pool_size", "connect_timeout", "command_timeout", "lease_recovery_interval"}


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """Connection settings taken from a ``postgresql://`` URL.

    - `schema`: where the tables live (default ``upnext``).
    - `pool_size`: most pooled connections (default 10); the LISTEN connection
      is one more, opened on the first blocking receive or result wait.
    - `connect_timeout`: seconds to reach the server (default 10).
    - `command_timeout`: longest any one statement may take (default 5 s);
      bounds a hang on a connection that died without closing (half-open):
      the pool's connections are then replaced, so the worker is back within
      about twice this time (asyncpg first waits as long for the cancel).
    - `lease_recovery_interval`: longest an idle receiver blocks without
      looking at the table (default 5 s). Notifications and known due times
      wake it sooner; this bounds recovery of leases it could not know of.
    """

    dsn: str
    schema: str = "upnext"
    pool_size: int = 10
    connect_timeout: float = 10.0
    command_timeout: float = 5.0
    lease_recovery_interval: float = 5.0

    @property
    def redacted(self) -> str:
        """The DSN with its password hidden."""
        return redact_url(self.dsn)

    @classmethod
    def from_url(cls, url: str) -> PostgresOptions:
        """Parse `url`; `ConfigurationError` (password hidden) on a bad option."""
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ConfigurationError(f"malformed PostgreSQL URL: {redact_url(url)!r}") from None
        if parts.scheme.lower() not in _SCHEMES:
            raise ConfigurationError(f"not a postgresql:// URL: {redact_url(url)!r}")
        check_url(url, host=False)  # libpq: no host means the local socket (or ?host=)
        rest: list[tuple[str, str]] = []
        mine: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in _OPTIONS:
                mine[key] = value
            elif hint := did_you_mean(key, _OPTIONS):
                # Any other key may be a server setting; one this close to ours is a typo.
                raise ConfigurationError(
                    f"unknown PostgreSQL URL option {key!r}{hint} in {redact_url(url)!r}"
                )
            else:
                rest.append((key, value))
        dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), ""))
        try:
            options = cls(
                dsn=dsn,
                schema=mine.get("schema", "upnext"),
                pool_size=int(mine.get("pool_size", 10)),
                connect_timeout=float(mine.get("connect_timeout", 10.0)),
                command_timeout=float(mine.get("command_timeout", 5.0)),
                lease_recovery_interval=float(mine.get("lease_recovery_interval", 5.0)),
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"bad option in PostgreSQL URL {redact_url(url)!r}: {exc}"
            ) from None
        if options.pool_size < 1 or min(options.connect_timeout, options.command_timeout) <= 0:
            raise ConfigurationError(
                "pool_size must be >= 1, connect_timeout and command_timeout > 0"
            )
        if options.lease_recovery_interval <= 0:
            raise ConfigurationError("lease_recovery_interval must be > 0")
        Names(options.schema)  # validates the schema name
        return options
