"""URL options and discovery through entry points."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from upnext._discovery import BROKER_GROUP, RESULT_STORE_GROUP, load_factory
from upnext.errors import ConfigurationError
from upnext_redis import RedisBroker
from upnext_redis._config import parse_url


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
@pytest.mark.parametrize("group", [BROKER_GROUP, RESULT_STORE_GROUP])
def test_entry_points_build_a_redis_broker(scheme: str, group: str) -> None:
    """Both schemes, in both groups, resolve to RedisBroker.from_url."""
    factory = load_factory(f"{scheme}://127.0.0.1:6379/0", group)
    assert isinstance(factory(f"{scheme}://127.0.0.1:6379/0"), RedisBroker)


def test_upnext_options_are_parsed_and_removed() -> None:
    """Our options become typed fields; redis-py never sees them."""
    options = parse_url(
        "redis://:pw@h:1/3?prefix=app&strict=yes&socket_timeout=2.5&recovery_interval=0.5"
        "&health_check_interval=4&max_connections=9&retries=0"
    )
    assert (options.prefix, options.strict, options.socket_timeout) == ("app", True, 2.5)
    assert (options.recovery_interval, options.health_check_interval) == (0.5, 4.0)
    assert (options.max_connections, options.retries) == (9, 0)
    assert options.driver_url == "redis://:pw@h:1/3"
    assert "pw" not in options.safe_url


def test_tls_verifies_certificates_by_default() -> None:
    """rediss:// requires a valid certificate and host name unless the URL says otherwise."""
    options = parse_url("rediss://h:6380/0")
    assert options.driver_kwargs["ssl_cert_reqs"] == "required"
    assert options.driver_kwargs["ssl_check_hostname"] is True
    broker = RedisBroker.from_url("rediss://h:6380/0?ssl_ca_certs=/tmp/ca.pem")
    assert isinstance(broker._client.redis, Redis)
    kwargs = broker._client.redis.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_ca_certs"] == "/tmp/ca.pem"


def test_keepalive_is_on() -> None:
    """TCP keepalive with short probes, so a half-open connection is detected."""
    client = RedisBroker.from_url("redis://h/0")._client.redis
    assert isinstance(client, Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_keepalive"] is True
    assert kwargs["socket_keepalive_options"]


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_db() -> None:
    """redis+sentinel://[auth@]host[:port],.../service[/db]: ports default to 26379."""
    options = parse_url("redis+sentinel://:pw@s1:5000,s2/mymaster/3?prefix=app&socket_timeout=2")
    assert options.sentinels == (("s1", 5000), ("s2", 26379))
    assert options.service_name == "mymaster"
    assert (options.prefix, options.socket_timeout) == ("app", 2.0)
    assert options.driver_url == "redis://:pw@s1/3"
    assert "pw" not in options.safe_url
    assert parse_url("redis+sentinel://s1/svc").driver_url == "redis://s1"
    assert parse_url("rediss+sentinel://s1/svc").driver_kwargs["ssl_cert_reqs"] == "required"


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:5000/",
        "redis+sentinel://s1:x/svc",
        "redis+sentinel://s1,/svc",
        "redis+sentinel://s1/svc?cluster=true",
    ],
)
def test_bad_sentinel_urls_are_configuration_errors(url: str) -> None:
    """No service name, a bad port, an empty address, or Cluster: refused at construction."""
    with pytest.raises(ConfigurationError):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0?prefetch=3",
        "redis://h/0?strict=maybe",
        "redis://h/0?socket_timeout=-1",
        "redis://h/0?prefix=a{b}",
        "memory://x",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    """Unknown options, bad values and wrong schemes fail at construction."""
    with pytest.raises(ConfigurationError):
        RedisBroker.from_url(url)


def test_repr_hides_the_password() -> None:
    """repr names the server but never the password."""
    assert "hunter2" not in repr(RedisBroker.from_url("redis://u:hunter2@h:6379/0"))


def test_public_facade_is_one_class_implementing_all_four_protocols() -> None:
    """`upnext_redis` exports RedisBroker alone, and it is every protocol of the contract."""
    import upnext_redis
    from upnext.broker.protocol import Broker, DeadLetterAdmin, QueueAdmin, ResultStore

    assert upnext_redis.__all__ == ["RedisBroker"]
    broker = RedisBroker.from_url("redis://h/0")
    for protocol in (Broker, ResultStore, DeadLetterAdmin, QueueAdmin):
        assert isinstance(broker, protocol), protocol.__name__
