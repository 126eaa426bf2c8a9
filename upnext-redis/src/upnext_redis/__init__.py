"""upnext backend for Redis: broker, result store and admin in one `RedisBroker`.

Use it through a URL (``redis://host:6379/0``, ``rediss://`` for TLS); the
`upnext.brokers` and `upnext.result_stores` entry points map both schemes to
`RedisBroker.from_url`. See `upnext_redis.keys` for the key layout.
"""

from upnext_redis.broker import RedisBroker

__all__ = ["RedisBroker"]
