"""Backends: what FLASHSALE_REDIS_URL names, and what each can do (asked, never sniffed)."""

from __future__ import annotations

import pytest

from flask_flashsale import ConfigurationError
from flask_flashsale.breaker import GuardedRedis
from flask_flashsale.connection import (
    ClusterBackend,
    MemoryBackend,
    RedisBackend,
    SentinelBackend,
    backend_class,
)

from .helpers import MakeApp, build_app


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://localhost:6379/0", RedisBackend),
        ("rediss://localhost:6379/0", RedisBackend),
        ("unix:///tmp/redis.sock", RedisBackend),
        ("redis+cluster://a:7000,b:7001", ClusterBackend),
        ("redis+sentinel://s1:26379,s2:26380/mymaster", SentinelBackend),
        ("memory://", MemoryBackend),
    ],
)
def test_each_scheme_names_its_backend(url: str, kind: type) -> None:
    assert backend_class(url) is kind


def test_capabilities_say_how_the_worker_reads_and_who_shares_the_store() -> None:
    assert RedisBackend.can_block and not RedisBackend.process_local
    assert SentinelBackend.can_block and not SentinelBackend.sharded
    assert not ClusterBackend.can_block and ClusterBackend.sharded
    assert not MemoryBackend.can_block and MemoryBackend.process_local
    assert not any(b.sharded_pubsub for b in (RedisBackend, ClusterBackend, SentinelBackend))


def test_a_cluster_url_lists_its_startup_nodes_and_password() -> None:
    backend = ClusterBackend("redis+cluster://:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert backend.password == "s@cret"
    assert backend.nodes == [("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002)]


def test_a_sentinel_url_gives_sentinels_service_db_and_password() -> None:
    backend = SentinelBackend("redis+sentinel://:pw@s1:26379,s2/shop/3")
    assert backend.sentinels == [("s1", 26379), ("s2", 26379)]
    assert (backend.service, backend.db, backend.password) == ("shop", 3, "pw")


def test_a_sentinel_url_without_password_or_db_uses_db_0() -> None:
    backend = SentinelBackend("redis+sentinel://s1:26379/shop")
    assert (backend.service, backend.db, backend.password) == ("shop", 0, None)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/",
        "redis+sentinel://s1:26379/shop/x",
        "redis+sentinel://s1:notaport/shop",
        "redis+cluster://",
        "redis+cluster://a:99999",
        "mysql://localhost",
    ],
)
def test_a_bad_url_fails_at_start_up(url: str) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_REDIS_URL"):
        build_app(url)


def test_the_app_keeps_its_backend_and_a_guarded_client(make_app: MakeApp) -> None:
    from flask_flashsale import FlashSale

    app, _ = make_app()
    state = FlashSale.state(app)
    assert isinstance(state.backend, RedisBackend)
    assert isinstance(state.client, GuardedRedis)


def test_the_memory_backend_runs_an_inline_worker_by_default() -> None:
    from flask import Flask

    from flask_flashsale import FlashSale

    app = Flask("memory-host")
    app.config.update(FLASHSALE_REDIS_URL="memory://")
    FlashSale(app)
    state = FlashSale.state(app)
    assert isinstance(state.backend, MemoryBackend)
    assert state.inline_worker is not None
    assert state.inline_worker.worker.polling
    assert state.inline_worker.stop()
