"""Shared fixtures: a real throwaway redis-server, and a host-app factory.

The helpers tests import by name (``build_app``, ``problem``, ``PREFIX``...) are in
``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import CommandCounter, build_app, built_apps
from .redis_server import RedisServer, require_redis_binary

#: The local Redis Cluster and Sentinel fixtures (started only by tests that use them).
pytest_plugins = ["tests.cluster"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real ``redis-server`` for the whole run, on a free port.

    Skipped when the binary is missing, except under ``CI=true`` where that is
    a failure.
    """
    if not require_redis_binary():
        pytest.skip("redis-server is not installed")
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the test server, flushed before each test."""
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    """A plain client on the test server, for inspecting what the extension wrote."""
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def make_app(redis_url: str) -> Callable[..., tuple[Flask, FlashSale]]:
    """Factory fixture: ``make_app(**config) -> (app, flashsale)`` on the test Redis."""

    def factory(**config: Any) -> tuple[Flask, FlashSale]:
        return build_app(redis_url, **config)

    return factory


@pytest.fixture
def app_and_ext(
    make_app: Callable[..., tuple[Flask, FlashSale]],
) -> Iterator[tuple[Flask, FlashSale]]:
    """``(app, flashsale)`` with an app context pushed."""
    app, ext = make_app()
    with app.app_context():
        yield app, ext


@pytest.fixture
def app(app_and_ext: tuple[Flask, FlashSale]) -> Flask:
    """The host app (app context pushed)."""
    return app_and_ext[0]


@pytest.fixture
def flashsale(app_and_ext: tuple[Flask, FlashSale]) -> FlashSale:
    """The extension of the host app (app context pushed)."""
    return app_and_ext[1]


@pytest.fixture
def client(app: Flask) -> Any:
    """Flask test client of the host app."""
    return app.test_client()


@pytest.fixture
def command_counter(redis_url: str) -> CommandCounter:
    """Counts client commands sent to the test Redis while a callable runs."""
    return CommandCounter(redis_url)


@pytest.fixture(autouse=True)
def _stop_event_subscribers() -> Iterator[None]:
    """Stop the cache's pub/sub thread of every app a test built (without waiting)."""
    yield
    while built_apps:
        built_apps.pop().extensions["flashsale"].cache.stop(timeout=0)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may stop, kill and start again.

    It writes an append-only file synced on every write, so what Redis
    acknowledged survives a restart (as a production Redis would be set up).
    """
    if not require_redis_binary():
        pytest.skip("redis-server is not installed")
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    yield server
    server.cleanup()
