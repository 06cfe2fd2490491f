"""The latency bound while Redis is frozen (SIGSTOP) or down.

DESIGN.md: "While Redis is down or frozen, no answer takes longer than
FLASHSALE_REDIS_SOCKET_TIMEOUT + 100 ms, whatever the pool size and the number
of threads waiting for a connection", and every such answer is a ``503
backend_unavailable`` problem with ``Retry-After`` (or a correct answer from
the cache). The contract is about time, so these tests measure time: each
request's duration is taken around the test client call in the thread that
makes it, less the delays the machine added meanwhile (see
:class:`MachineDelays`). Everything else (books, statuses) is checked exactly.

A frozen Redis is a live TCP endpoint that never answers: the kernel still
accepts connections into the listen backlog, so a connect succeeds and the
first read hangs until the socket timeout. That is what makes the waits stack
(pool wait + read, connect + handshake, retries), which these tests provoke:
many threads, a pool much smaller than the thread count, long pool and connect
timeouts, a URL asking for retries.
"""

from __future__ import annotations

import bisect
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale

from .helpers import PREFIX, build_app
from .redis_server import RedisServer, require_redis_binary

TIMEOUT = 0.3  # FLASHSALE_REDIS_SOCKET_TIMEOUT of these tests
BOUND = TIMEOUT + 0.1  # the contract
pytestmark = pytest.mark.slow


class MachineDelays:
    """How late a thread of this process that wanted to run got to run: a canary
    thread sleeps 5 ms over and over and records how late it woke each time.

    On a loaded machine (other processes on both cores, and these tests' own
    64 threads taking turns on the GIL) an answer can come late for reasons no
    code of the extension controls: its thread was ready and not run. It is
    made ready a few times (when its request starts, when a connection comes
    back to the pool, when its socket times out), and each time it can wait as
    long as the canary did at worst meanwhile. So the bound is checked on an
    answer's duration minus the three worst delays the canary saw while the
    answer was being made. The canary usually wakes about 0.1 ms late, so a
    wait that stacks (a socket timeout or more each time) still fails the
    test: each test here that fails on the old code fails with or without
    this allowance.
    """

    PERIOD = 0.005
    WAKE_UPS = 3

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (went to sleep, woke late by)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            slept = time.monotonic()
            time.sleep(self.PERIOD)
            self.samples.append((slept, time.monotonic() - slept - self.PERIOD))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def during(self, start: float, end: float) -> float:
        """Seconds an answer made between ``start`` and ``end`` may have waited to run."""
        samples = self.samples
        first = bisect.bisect_left(samples, (start - 10.0, 0.0))
        last = bisect.bisect_right(samples, (end, float("inf")))
        delays = sorted(
            (late for slept, late in samples[first:last] if slept + self.PERIOD + late >= start),
            reverse=True,
        )
        return sum(delays[: self.WAKE_UPS])


@pytest.fixture
def machine() -> Iterator[MachineDelays]:
    canary = MachineDelays()
    yield canary
    canary.stop()


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may freeze, kill and restart."""
    if not require_redis_binary():
        pytest.skip("redis-server is not installed")
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            os.kill(srv.process.pid, signal.SIGCONT)  # never leave a stopped process
        srv.cleanup()


class Frozen:
    """``with Frozen(server):`` SIGSTOPs the server, and always SIGCONTs it."""

    def __init__(self, srv: RedisServer) -> None:
        assert srv.process is not None
        self.pid = srv.process.pid
        self.stopped_at = 0.0
        self.continued_at = 0.0

    def __enter__(self) -> Frozen:
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.continued_at = time.monotonic()
        os.kill(self.pid, signal.SIGCONT)


@dataclass(frozen=True)
class Answer:
    """One request as its client saw it."""

    kind: str
    started: float
    latency: float
    status: int
    code: str | None
    mimetype: str
    retry_after: str | None

    @property
    def ended(self) -> float:
        return self.started + self.latency


class Clients:
    """Sends requests through Flask test clients and records every answer."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def send(self, kind: str, method: str, path: str, headers: dict[str, str]) -> Any:
        client = self.app.test_client()
        started = time.monotonic()
        response = client.open(path, method=method, headers=headers)
        latency = time.monotonic() - started
        code = None
        if response.mimetype == "application/problem+json":
            code = response.get_json(force=True).get("code")
        answer = Answer(
            kind,
            started,
            latency,
            response.status_code,
            code,
            response.mimetype,
            response.headers.get("Retry-After"),
        )
        with self._lock:
            self.answers.append(answer)
        return response

    def between(self, start: float, end: float) -> list[Answer]:
        """Answers whose request overlapped ``[start, end]``."""
        return [a for a in self.answers if a.ended >= start and a.started <= end]


def assert_honest_503(answer: Answer) -> None:
    assert answer.status == 503, answer
    assert answer.mimetype == "application/problem+json", answer
    assert answer.code == "backend_unavailable", answer
    assert answer.retry_after is not None and int(answer.retry_after) >= 1, answer


def assert_within_bound(answers: list[Answer], machine: MachineDelays) -> None:
    """Each answer took at most ``BOUND``, once the machine's delays are taken off."""
    took = [(a.latency - machine.during(a.started, a.ended), a) for a in answers]
    late = [(t, a) for t, a in took if t > BOUND]
    assert not late, (
        f"{len(late)} of {len(answers)} answers took longer than {BOUND:.2f} s "
        f"(the machine's delays taken off); slowest {max(late, key=lambda x: x[0])}"
    )


def check_books(app: Flask, admitted: dict[str, str]) -> None:
    """Stock, per-buyer counts and the order stream agree with what buyers were told."""
    state = FlashSale.state(app)
    keys = state.keys
    r = redis_lib.Redis.from_url(state.settings.redis_url, decode_responses=True)
    try:
        sale = r.hgetall(keys.sale("tee"))
        users = {u: int(n) for u, n in r.hgetall(keys.users("tee")).items()}
        stream = [fields["t"] for _, fields in r.xrange(keys.stream("tee"))]
        assert int(sale["stock"]) - int(sale["remaining"]) == len(admitted)
        assert users == dict.fromkeys(admitted, 1)
        assert sorted(stream) == sorted(admitted.values())  # each order exactly once
    finally:
        r.close()


def in_threads(n: int, fn: Callable[[int], None]) -> None:
    """Run ``fn(i)`` in ``n`` threads at once and re-raise the first failure."""
    with ThreadPoolExecutor(n) as pool:
        for future in [pool.submit(fn, i) for i in range(n)]:
            future.result(timeout=60)


def warm(app: Flask, n: int) -> None:
    """Open ``n`` pooled connections (as a server under load would have)."""
    client = FlashSale.state(app).client
    held = [client.connection_pool.get_connection() for _ in range(n)]
    for conn in held:
        client.connection_pool.release(conn)


# -- the scenario of the report ------------------------------------------------------


def test_no_answer_waits_longer_than_the_socket_timeout_while_redis_is_frozen(
    server: RedisServer, machine: MachineDelays
) -> None:
    """64 threads buy and browse through a pool of 4; Redis is frozen for 1.5 s."""
    app, flashsale = build_app(
        server.url,
        FLASHSALE_REDIS_POOL_SIZE=4,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT,
        FLASHSALE_CACHE_TTL=0.2,
        FLASHSALE_BREAKER_RESET_TIMEOUT=0.4,
    )
    stock, buyers, readers = 400, 48, 16
    with app.app_context():
        flashsale.create_sale("tee", stock=stock)
    clients = Clients(app)
    admitted: dict[str, str] = {}
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def buyer(n: int) -> None:
        i = 0
        while not stop.is_set():
            user = f"t{n}-u{i}"
            headers = {"X-User": user, "Idempotency-Key": f"buy-{user}"}
            while True:  # retry with the same key until a definite answer
                r = clients.send("order", "POST", f"{PREFIX}/tee/order", headers)
                if r.status_code != 503:
                    break
                assert time.monotonic() < deadline, "the service did not come back"
                time.sleep(0.05)
            assert r.status_code in (202, 409), r.get_data(as_text=True)
            if r.status_code == 202:
                admitted[user] = r.get_json()["ticket_id"]
            i += 1
            time.sleep(0.05)

    def reader(n: int) -> None:
        headers = {"X-User": f"reader{n}"}
        while not stop.is_set():
            clients.send("list", "GET", PREFIX, headers)
            time.sleep(0.05)
            clients.send("detail", "GET", f"{PREFIX}/tee", headers)
            time.sleep(0.05)

    def run(n: int) -> None:
        (buyer if n < buyers else reader)(n)

    with ThreadPoolExecutor(buyers + readers) as pool:
        futures = [pool.submit(run, n) for n in range(buyers + readers)]
        try:
            while len(admitted) < 40:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with Frozen(server) as frozen:
                time.sleep(1.5)
            while not [a for a in clients.answers if a.started > frozen.continued_at + 0.5]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stop.set()
            for f in futures:
                f.result(timeout=60)

    answers = clients.between(frozen.stopped_at, frozen.continued_at)
    # Sent after the freeze and answered before the thaw: Redis could not answer them.
    inside = [
        a for a in answers if a.started > frozen.stopped_at + 0.01 and a.ended < frozen.continued_at
    ]
    for answer in clients.answers:
        assert answer.status < 500 or answer.status == 503, answer
        if answer.status == 503:
            assert_honest_503(answer)
    for answer in inside:
        if not (answer.kind in ("list", "detail") and answer.status == 200):
            assert_honest_503(answer)  # or a page served from the cache
    print(
        f"\nfrozen {frozen.continued_at - frozen.stopped_at:.2f} s: {len(answers)} answers "
        f"overlapped it, {sum(a.status == 503 for a in answers)} of them 503, "
        f"{sum(a.latency > 0.05 for a in answers)} slower than 50 ms, slowest "
        f"{max(a.latency for a in answers) * 1000:.0f} ms, or "
        f"{max(a.latency - machine.during(a.started, a.ended) for a in answers) * 1000:.0f} ms "
        f"without the machine's delays (bound {BOUND * 1000:.0f} ms); "
        f"{len(admitted)}/{stock} sold"
    )
    assert_within_bound(answers, machine)
    assert len(inside) > 200, "too few requests while frozen to judge"
    assert [a for a in clients.answers if a.started > frozen.continued_at and a.status == 202]
    check_books(app, admitted)


# -- the stacking cases one by one --------------------------------------------------------


@pytest.mark.parametrize("fail_max", [5, 0], ids=["breaker", "no-breaker"])
def test_threads_far_beyond_the_pool_wait_no_longer_than_the_socket_timeout(
    server: RedisServer, machine: MachineDelays, fail_max: int
) -> None:
    """64 threads hit a frozen Redis through a pool of 2 that would let them wait 5 s.

    With the breaker off too: the bound holds by construction, not because
    the breaker happens to open."""
    app, flashsale = build_app(
        server.url,
        FLASHSALE_REDIS_POOL_SIZE=2,
        FLASHSALE_REDIS_POOL_TIMEOUT=5.0,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT,
        FLASHSALE_BREAKER_FAIL_MAX=fail_max,
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=1000, per_user_limit=1000)
    warm(app, 2)
    clients = Clients(app)
    gate = threading.Barrier(64)

    def buy(n: int) -> None:
        gate.wait()
        headers = {"X-User": f"u{n}", "Idempotency-Key": f"k{n}"}
        clients.send("order", "POST", f"{PREFIX}/tee/order", headers)

    with Frozen(server):
        in_threads(64, buy)
    for answer in clients.answers:
        assert_honest_503(answer)
    assert_within_bound(clients.answers, machine)


def test_a_timeout_is_not_retried_even_if_the_url_asks_for_it(
    server: RedisServer, machine: MachineDelays
) -> None:
    """``?retry_on_timeout=true`` makes redis-py send the command again after a
    timeout: a second socket timeout inside the same answer."""
    app, flashsale = build_app(
        server.url + "?retry_on_timeout=true", FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
    warm(app, 1)
    clients = Clients(app)
    with Frozen(server):
        clients.send("order", "POST", f"{PREFIX}/tee/order", {"X-User": "alice"})
    assert_honest_503(clients.answers[0])
    assert_within_bound(clients.answers, machine)


def test_a_connect_the_frozen_server_never_accepts_is_cut_at_the_socket_timeout(
    server: RedisServer, machine: MachineDelays
) -> None:
    """A frozen server's listen backlog fills up; then a connect hangs (the SYN is
    dropped) for the whole connect timeout, here 2 s."""
    server.stop()
    server.extra_args = ["--tcp-backlog", "1"]
    server.start()
    app, flashsale = build_app(
        server.url,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT,
        FLASHSALE_REDIS_CONNECT_TIMEOUT=2.0,
        FLASHSALE_CACHE_TTL=0,
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
    FlashSale.state(app).client.connection_pool.disconnect()  # the next call connects
    squatters: list[socket.socket] = []
    clients = Clients(app)
    try:
        with Frozen(server):
            while True:  # fill the backlog the frozen server does not drain
                s = socket.socket()
                s.settimeout(0.2)
                try:
                    s.connect(("127.0.0.1", server.port))
                except OSError:
                    s.close()
                    break
                squatters.append(s)
                assert len(squatters) < 100, "the backlog never filled"
            clients.send("detail", "GET", f"{PREFIX}/tee", {"X-User": "alice"})
    finally:
        for s in squatters:
            s.close()
    assert_honest_503(clients.answers[0])
    assert_within_bound(clients.answers, machine)


def test_redis_down_answers_fast(server: RedisServer, machine: MachineDelays) -> None:
    """Killed, not frozen: connections are refused, every answer is a quick 503."""
    app, flashsale = build_app(
        server.url, FLASHSALE_REDIS_POOL_SIZE=4, FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=1000, per_user_limit=1000)
    warm(app, 4)
    clients = Clients(app)
    server.kill()
    stop_at = time.monotonic() + 1.0

    def hammer(n: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            headers = {"X-User": f"u{n}", "Idempotency-Key": f"k{n}-{i}"}
            if i % 2:
                clients.send("detail", "GET", f"{PREFIX}/tee", headers)
            else:
                clients.send("order", "POST", f"{PREFIX}/tee/order", headers)
            i += 1
            time.sleep(0.02)

    in_threads(32, hammer)
    for answer in clients.answers:
        assert_honest_503(answer)
    assert_within_bound(clients.answers, machine)
    assert len(clients.answers) > 200


def test_the_python_api_raises_within_the_bound(
    server: RedisServer, machine: MachineDelays
) -> None:
    """``place_order`` called from a host's own code (16 threads, a pool of 1 that
    would let them wait 5 s) raises a :class:`redis.RedisError` within the bound;
    the time is taken around the call alone, without any request handling."""
    app, flashsale = build_app(
        server.url,
        FLASHSALE_REDIS_POOL_SIZE=1,
        FLASHSALE_REDIS_POOL_TIMEOUT=5.0,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT,
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=100, per_user_limit=100)
    warm(app, 1)
    calls: list[Answer] = []
    lock = threading.Lock()
    gate = threading.Barrier(16)

    def buy(n: int) -> None:
        gate.wait()
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(redis_lib.RedisError):
                flashsale.place_order("tee", f"u{n}", idempotency_key=f"k{n}")
            latency = time.monotonic() - started
        with lock:
            calls.append(Answer("place_order", started, latency, 0, None, "", None))

    with Frozen(server):
        in_threads(16, buy)
    assert len(calls) == 16
    assert_within_bound(calls, machine)


@pytest.mark.parametrize("idle", [0.0, 0.05], ids=["hot", "idle"])
def test_an_order_on_a_kept_fast_connection_is_cut_at_the_socket_timeout(
    server: RedisServer, machine: MachineDelays, idle: float
) -> None:
    """The fast admission path keeps its connection between orders; on a frozen
    Redis its order is still a 503 within the bound, whether the connection was
    just used or idle long enough to be checked first."""
    app, flashsale = build_app(server.url, FLASHSALE_REDIS_SOCKET_TIMEOUT=TIMEOUT)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    clients = Clients(app)
    assert clients.send("order", "POST", f"{PREFIX}/tee/order", {"X-User": "a"}).status_code == 202
    time.sleep(idle)
    with Frozen(server):
        clients.send("order", "POST", f"{PREFIX}/tee/order", {"X-User": "b"})
    assert_honest_503(clients.answers[1])
    assert_within_bound(clients.answers[1:], machine)
