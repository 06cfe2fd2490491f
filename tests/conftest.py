"""Shared fixtures: a real throwaway redis-server, and a host-app factory."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask, request

from flask_flashsale import FlashSale

from .redis_server import RedisServer, require_redis_binary

#: The local Redis Cluster and Sentinel fixtures (started only by tests that use them).
pytest_plugins = ["tests.cluster"]

_counter = itertools.count()

#: ``make_app(**config) -> (app, flashsale)``, the type of the factory fixture.
MakeApp = Callable[..., tuple[Flask, FlashSale]]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``predicate`` until true; return the seconds it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - start


#: Apps built by build_app in this process, so their event subscribers can be stopped.
_built: list[Flask] = []


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


def build_app(redis_url: str, **config: Any) -> tuple[Flask, FlashSale]:
    """A host app as a user would write it: the buyer comes from ``X-User``."""
    app = Flask(f"host{next(_counter)}")
    app.config.update(
        TESTING=True,
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=redis_url,
        FLASHSALE_INLINE_WORKER=False,
        **config,
    )
    flashsale = FlashSale(app)
    _built.append(app)

    @flashsale.identity_loader
    def current_buyer() -> str | None:
        return request.headers.get("X-User")

    return app, flashsale


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


# The cache's events subscriber starts lazily, on its own connection, in a
# background thread; its SUBSCRIBE can land inside a counted window but is no
# round trip of the call being counted.
BACKGROUND_COMMANDS = {"SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE"}


class CommandCounter:
    """Counts the commands clients send to Redis, using ``MONITOR``.

    ``INFO commandstats`` also counts what scripts run inside Redis, so it
    cannot show round trips; MONITOR tags those with ``client_type == "lua"``
    and we skip them.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def count(self, fn: Callable[[], Any]) -> list[str]:
        """Run ``fn`` and return the commands clients sent meanwhile."""
        watcher = redis_lib.Redis.from_url(self.url, decode_responses=True)
        marker_client = redis_lib.Redis.from_url(self.url, decode_responses=True)
        marker_client.ping()
        monitor = watcher.monitor()
        monitor.__enter__()
        try:
            fn()
            marker_client.echo("flashsale-test-marker")
            seen: list[str] = []
            while True:
                entry = monitor.next_command()
                command = entry["command"]
                if "flashsale-test-marker" in command:
                    return seen
                if entry.get("client_type") == "lua":
                    continue  # run by a script inside Redis, not sent by a client
                if command.split(" ", 1)[0].upper() in BACKGROUND_COMMANDS:
                    continue
                seen.append(command)
        finally:
            monitor.__exit__()
            watcher.close()
            marker_client.close()


@pytest.fixture
def command_counter(redis_url: str) -> CommandCounter:
    """Counts client commands sent to the test Redis while a callable runs."""
    return CommandCounter(redis_url)


@pytest.fixture(autouse=True)
def _stop_event_subscribers() -> Iterator[None]:
    """Stop the cache's pub/sub thread of every app a test built (without waiting)."""
    yield
    while _built:
        _built.pop().extensions["flashsale"].cache.stop(timeout=0)


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
