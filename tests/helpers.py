"""Helpers the tests share: the host-app builder, HTTP and Redis shorthands, a poller,
the command counter, and the oversell scenario.

Fixtures live in ``tests/conftest.py``; everything a test module imports by name
lives here (``from .helpers import build_app, problem, PREFIX``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis as redis_lib
from flask import Flask, request
from redis.cluster import RedisCluster

from flask_flashsale import FlashSale, Ticket
from flask_flashsale.cli import flashsale_cli
from flask_flashsale.connection import ClusterBackend

from .redis_server import free_port, stop_process

#: The repository root (for the docs, examples, scripts and benchmarks).
ROOT = Path(__file__).resolve().parent.parent

#: Where the extension mounts its HTTP API by default.
PREFIX = "/api/flash-sales"

#: Request headers of the buyer ``alice`` (the test host reads the buyer from ``X-User``).
ALICE = {"X-User": "alice"}

#: The three inventory strategies, for tests that must hold for each.
STRATEGIES = ["lua", "optimistic", "lock"]

#: ``make_app(**config) -> (app, flashsale)``, the type of the factory fixture.
MakeApp = Callable[..., tuple[Flask, FlashSale]]

_counter = itertools.count()
T = TypeVar("T")
R = TypeVar("R")

#: Apps built by build_app in this process, so their event subscribers can be stopped
#: (conftest's autouse fixture empties it after each test).
built_apps: list[Flask] = []


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
    built_apps.append(app)

    @flashsale.identity_loader
    def current_buyer() -> str | None:
        return request.headers.get("X-User")

    return app, flashsale


def run_benchmark(
    name: str, *args: str, json_path: Path, timeout: float = 90
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``python -m benchmarks <name> <args> --json <json_path>`` from this checkout.

    Fails the test if it exits non-zero; returns the process (for its output)
    and the JSON result it wrote.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", name, *args, "--json", str(json_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(json_path.read_text())


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll ``predicate`` until true; return the seconds it took (fail after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - start


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status`` and ``code``; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    doc: dict[str, Any] = response.get_json(force=True)
    assert doc["code"] == code
    assert doc["status"] == status
    assert "Traceback" not in response.get_data(as_text=True)
    return doc


def make_tls_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1: ``(cert, key)`` in ``directory``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def redis_now(client: redis_lib.Redis) -> float:
    """Redis ``TIME`` in Unix seconds."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def redis_ms(client: redis_lib.Redis) -> int:
    """Redis ``TIME`` in ms."""
    seconds, micros = client.time()
    return int(seconds * 1000 + micros // 1000)


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    return free_port()


def buy(ext: FlashSale, user: str, quantity: int = 1, sale: str = "tee") -> str:
    """``quantity`` units of ``sale`` for ``user``, which must be admitted (app context
    pushed); the ticket id."""
    admission = ext.place_order(sale, user, quantity)
    assert admission.status == "queued", admission
    assert admission.ticket_id is not None
    return admission.ticket_id


def admit(ext: FlashSale, count: int, sale: str = "drop") -> list[str]:
    """One unit of ``sale`` for each of ``user0`` ... ``user<count-1>`` (app
    context pushed); their ticket ids."""
    return [buy(ext, f"user{i}", sale=sale) for i in range(count)]


def ticket(ext: FlashSale, ticket_id: str) -> Ticket:
    """The ticket ``ticket_id``, which must exist."""
    found = ext.get_ticket(ticket_id)
    assert found is not None
    return found


def pay_by_ms(t: Ticket) -> int:
    """The ticket's payment deadline in Unix ms (it must have one)."""
    assert t.pay_by is not None
    return int(t.pay_by.timestamp() * 1000)


def wait_past_pay_by(ext: FlashSale, client: redis_lib.Redis, ticket_id: str) -> None:
    """Wait until Redis time has reached the payment deadline of ``ticket_id``."""
    deadline = pay_by_ms(ticket(ext, ticket_id))
    wait_for(lambda: redis_ms(client) >= deadline)


def app_with_sale(make_app: MakeApp, stock: int = 5, **config: Any) -> tuple[Flask, FlashSale]:
    """``make_app(**config)`` with sale "tee" of ``stock`` units created."""
    app, ext = make_app(**config)
    with app.app_context():
        ext.create_sale("tee", stock=stock)
    return app, ext


def subscribed(app: Flask) -> None:
    """Wait until the app's event subscriber listens (it starts on the first cache miss)."""
    subscriber = FlashSale.state(app).cache.subscriber
    assert subscriber is not None
    assert subscriber.subscribed.wait(5), "the events subscriber did not subscribe"


def watched_sale(app: Flask, ext: FlashSale, stock: int = 5, **options: Any) -> None:
    """Create sale "tee" with ``stock`` units (and ``options``) and read it once, the first
    cache miss, which starts the app's events subscriber; return once it listens."""
    with app.app_context():
        ext.create_sale("tee", stock=stock, **options)
        ext.get_sale("tee")
    subscribed(app)


def invoke(app: Flask, *args: str) -> tuple[int, str]:
    """Run ``flask flashsale ARGS...`` on ``app``; ``(exit code, output)``."""
    result = app.test_cli_runner().invoke(flashsale_cli, list(args))
    return result.exit_code, result.output


# The cache's events subscriber starts lazily, on its own connection, in a
# background thread; its SUBSCRIBE can land inside a counted window but is no
# round trip of the call being counted.
BACKGROUND_COMMANDS = {"SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE"}
#: What MONITOR shows of redis-py's health check on a pub/sub connection
#: (only the subscriber's connection sends it).
PUBSUB_HEALTH_CHECK = "PING redis-py-health-check"


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
                if command == PUBSUB_HEALTH_CHECK:
                    continue  # the events subscriber's own connection, not a round trip
                seen.append(command)
        finally:
            monitor.__exit__()
            watcher.close()
            marker_client.close()


def cluster_client(url: str) -> Any:
    """A cluster client on the local Redis Cluster of ``url`` (strings decoded)."""
    nodes = ClusterBackend(url).nodes
    host, port = nodes[0]
    return RedisCluster(host=host, port=port, decode_responses=True)


# -- the oversell scenario: 1000 buyers try twice each for 100 units -------------------

STOCK = 100
USERS = [f"user{i}" for i in range(1000)]
# Every user tries twice; the second try is rotated by one so that, split
# i::4 across processes, a user's two tries land in different processes.
ATTEMPTS = USERS + USERS[1:] + USERS[:1]
# Generous settings: every attempt must get an answer, none may be "busy".
PATIENT = {"FLASHSALE_OPTIMISTIC_RETRIES": 200, "FLASHSALE_LOCK_WAIT": 30.0}


def check_books(
    results: list[tuple[str, str, str | None]], client: redis_lib.Redis, sale: str
) -> None:
    """Exactly STOCK admitted, stock 0, nobody over the limit, each order in the stream once."""
    statuses = Counter(s for _, s, _ in results)
    print(f"\n{sale}: {dict(statuses)}")
    assert len(results) == len(ATTEMPTS)
    assert set(statuses) <= {"queued", "sold_out", "limit_reached"}
    check_admitted([(u, t) for u, s, t in results if s == "queued"], client, sale)


def check_admitted(
    admitted: list[tuple[str, str | None]], client: redis_lib.Redis, sale: str
) -> None:
    """The ``(user, ticket_id)`` admitted are exactly STOCK, one a buyer, and Redis agrees:
    stock 0, STOCK units held (one a buyer), each order in the stream once."""
    assert len(admitted) == STOCK
    per_user = Counter(u for u, _ in admitted)
    assert max(per_user.values()) == 1
    assert client.hget(f"flashsale:{{{sale}}}:sale", "remaining") == "0"
    held = client.hgetall(f"flashsale:{{{sale}}}:users")
    assert sum(int(v) for v in held.values()) == STOCK
    assert all(v == "1" for v in held.values())
    stream = client.xrange(f"flashsale:{{{sale}}}:orders")
    assert len(stream) == STOCK
    assert sorted(f["t"] for _, f in stream) == sorted(t for _, t in admitted)
    assert sorted(f["u"] for _, f in stream) == sorted(u for u, _ in admitted)


def released_together(
    app: Flask, items: list[T], threads: int, act: Callable[[T], R]
) -> list[R]:
    """``act(item)`` for each of ``items``, from ``threads`` threads released together
    by a barrier, each inside an app context; the results, thread by thread."""
    barrier = threading.Barrier(threads)

    def run(chunk: list[T]) -> list[R]:
        with app.app_context():
            barrier.wait()
            return [act(item) for item in chunk]

    chunks = [items[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for rs in pool.map(run, chunks) for r in rs]


# -- a real gunicorn serving a test host ---------------------------------------------


@contextlib.contextmanager
def gunicorn_server(
    app: str,
    log: Path,
    *,
    env: dict[str, str],
    worker_class: str = "sync",
    workers: int = 1,
    args: Sequence[str] = (),
    timeout: float = 30,
) -> Iterator[str]:
    """Serve ``app`` (``module:factory()``) with gunicorn on a free 127.0.0.1 port.

    Yields the base URL once the port accepts connections; stops the server
    (SIGTERM, then SIGKILL) on exit. ``env`` is added to this process's
    environment, with this checkout's ``src`` first on the path.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        **env,
    }
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", str(workers),
            "-k", worker_class, "--graceful-timeout", "2", *args, app]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


def http(
    method: str, url: str, *, user: str | None = None, timeout: float = 30
) -> tuple[int, dict[str, Any]]:
    """One HTTP request with urllib: ``(status, JSON body)`` (``{}`` if not JSON)."""
    headers = {"X-User": user} if user else {}
    body = None
    if method == "POST":
        body, headers["Content-Type"] = b"{}", "application/json"
    req = urllib.request.Request(url, method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            status, body = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    return status, doc if isinstance(doc, dict) else {"json": doc}
