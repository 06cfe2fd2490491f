"""The circuit breaker in front of Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import BackendUnavailable, FlashSale, signals
from flask_flashsale.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    CircuitBreaker,
    CircuitOpen,
    GuardedRedis,
)

from .helpers import PREFIX, MakeApp, build_app
from .redis_server import free_port

DOWN = redis_lib.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(3, 2.0, clock=clock)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.fail_max):
        breaker.before_call()
        breaker.on_error(DOWN)


# -- the state machine -------------------------------------------------------------


def test_opens_after_fail_max_consecutive_outage_errors(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        breaker.on_error(DOWN)
    assert breaker.state == CLOSED
    breaker.on_error(redis_lib.TimeoutError("Timeout reading from socket"))
    assert breaker.state == OPEN
    assert breaker.opened == 1


def test_an_answer_from_redis_resets_the_count(breaker: CircuitBreaker) -> None:
    breaker.on_error(DOWN)
    breaker.on_error(DOWN)
    breaker.on_success()
    breaker.on_error(DOWN)
    breaker.on_error(DOWN)
    assert (breaker.state, breaker.failures) == (CLOSED, 2)


def test_open_breaker_refuses_at_once_with_retry_after(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.now += 0.5
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.code == 503
    assert info.value.error_code == "backend_unavailable"
    assert info.value.retry_after == pytest.approx(1.5)
    assert dict(info.value.get_headers())["Retry-After"] == "2"
    assert breaker.rejected == 1


def test_after_the_reset_timeout_one_probe_goes_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.now += 2.0
    breaker.before_call()  # the probe
    assert breaker.state == HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # everyone else waits for the probe


def test_a_successful_probe_closes_the_breaker(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += 2.0
    breaker.before_call()
    breaker.on_success()
    assert (breaker.state, breaker.failures) == (CLOSED, 0)
    breaker.before_call()


def test_a_failed_probe_opens_it_again(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += 2.0
    breaker.before_call()
    breaker.on_error(DOWN)
    assert (breaker.state, breaker.opened) == (OPEN, 2)
    clock.now += 1.9
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_a_probe_that_never_reports_back_does_not_wedge_the_breaker(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.now += 2.0
    breaker.before_call()  # this probe's thread dies without a word
    clock.now += 2.0
    breaker.before_call()  # another probe is allowed
    breaker.on_success()
    assert breaker.state == CLOSED


@pytest.mark.parametrize(
    "error",
    [
        redis_lib.ResponseError("ERR Error running script"),
        redis_lib.exceptions.NoScriptError("NOSCRIPT No matching script"),
        redis_lib.ConnectionError("No connection available."),
        redis_lib.exceptions.MaxConnectionsError("Too many connections"),
    ],
    ids=["response-error", "noscript", "pool-exhausted", "max-connections"],
)
def test_errors_that_are_not_outages_do_not_trip_it(
    breaker: CircuitBreaker, error: Exception
) -> None:
    for _ in range(10):
        breaker.on_error(error)
    assert (breaker.state, breaker.failures) == (CLOSED, 0)


TIMED_OUT = redis_lib.TimeoutError("Timeout reading from socket")


def test_a_timeout_lets_no_new_call_through_but_one_probe(breaker: CircuitBreaker) -> None:
    """Redis did not answer for a whole socket timeout: the calls sent meanwhile are
    stuck too, so the next call is a probe and the others are refused at once."""
    breaker.before_call()
    breaker.on_error(TIMED_OUT)
    assert breaker.state == HALF_OPEN
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == 1.0
    assert (breaker.rejected, breaker.opened) == (1, 0)


def test_a_probe_answered_after_a_timeout_closes_the_breaker(breaker: CircuitBreaker) -> None:
    breaker.on_error(TIMED_OUT)
    breaker.before_call()
    assert breaker.state == HALF_OPEN
    breaker.on_success()
    assert (breaker.state, breaker.failures) == (CLOSED, 0)
    breaker.before_call()


def test_a_probe_that_times_out_too_opens_the_breaker(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    breaker.on_error(TIMED_OUT)
    breaker.before_call()
    clock.now += 0.3
    breaker.on_error(TIMED_OUT)
    assert (breaker.state, breaker.opened) == (OPEN, 1)
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(2.0)


def test_a_timeout_while_watching_counts_as_a_timeout(breaker: CircuitBreaker) -> None:
    """redis-py reports it as a WatchError (the transaction's keys may have changed)."""
    error = redis_lib.WatchError("A TimeoutError occurred while watching one or more keys")
    error.__context__ = TIMED_OUT  # raised while handling it, as redis-py does
    breaker.on_error(error)
    assert breaker.state == HALF_OPEN


def test_a_refused_connection_still_takes_fail_max_errors(breaker: CircuitBreaker) -> None:
    """A refused connect costs microseconds: no reason to stop calls after one."""
    breaker.on_error(DOWN)
    assert breaker.state == CLOSED
    breaker.before_call()


@pytest.mark.parametrize(
    "error",
    [
        redis_lib.ConnectionError("No connection available."),
        CircuitOpen("down", retry_after=1),
    ],
    ids=["pool-exhausted", "refused-by-the-breaker"],
)
def test_a_busy_pool_or_a_refusal_tells_nothing_about_redis(
    breaker: CircuitBreaker, clock: FakeClock, error: Exception
) -> None:
    """Neither counts as an answer from Redis: they do not reset the count of
    failures, nor close a half-open breaker."""
    breaker.on_error(DOWN)
    breaker.on_error(DOWN)
    breaker.on_error(error)
    assert (breaker.state, breaker.failures) == (CLOSED, 2)
    breaker.on_error(DOWN)
    clock.now += 2.0
    breaker.before_call()  # the probe
    breaker.on_error(error)
    assert breaker.state == HALF_OPEN


def test_circuit_open_is_a_503_and_a_redis_connection_error() -> None:
    error = CircuitOpen("down", retry_after=1)
    assert isinstance(error, BackendUnavailable)
    assert isinstance(error, redis_lib.ConnectionError)
    assert error.problem()["code"] == "backend_unavailable"


def test_state_changes_are_sent_as_a_signal(make_app: MakeApp) -> None:
    app, _ = make_app(FLASHSALE_BREAKER_FAIL_MAX=1, FLASHSALE_BREAKER_RESET_TIMEOUT=0.01)
    breaker = FlashSale.state(app).breaker
    assert breaker is not None
    seen: list[tuple[Any, str, str]] = []

    def receiver(sender: Any, old_state: str, new_state: str) -> None:
        seen.append((sender, old_state, new_state))

    with signals.breaker_state_changed.connected_to(receiver):
        breaker.on_error(DOWN)
        time.sleep(0.02)
        breaker.before_call()
        breaker.on_success()
    assert seen == [(app, CLOSED, OPEN), (app, OPEN, HALF_OPEN), (app, HALF_OPEN, CLOSED)]


# -- in front of Redis ------------------------------------------------------------------


@pytest.fixture
def down_app() -> Iterator[tuple[Flask, FlashSale]]:
    """An app whose Redis is not running, breaker open after two failures."""
    app, flashsale = build_app(
        f"redis://127.0.0.1:{free_port()}/0",
        FLASHSALE_BREAKER_FAIL_MAX=2,
        FLASHSALE_BREAKER_RESET_TIMEOUT=60,
    )
    with app.app_context():
        for _ in range(2):
            with pytest.raises(redis_lib.ConnectionError):
                flashsale.get_sale("tee")
    breaker = FlashSale.state(app).breaker
    assert breaker is not None and breaker.state == OPEN
    yield app, flashsale


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", PREFIX),
        ("get", f"{PREFIX}/tee"),
        ("post", f"{PREFIX}/tee/order"),
        ("get", f"{PREFIX}/orders/tee~" + "A" * 22),
    ],
)
def test_every_web_path_is_refused_by_the_open_breaker(
    down_app: tuple[Flask, FlashSale], method: str, path: str
) -> None:
    app, _ = down_app
    breaker = FlashSale.state(app).breaker
    assert breaker is not None
    rejected = breaker.rejected
    r = getattr(app.test_client(), method)(path, headers={"X-User": "alice"})
    assert r.status_code == 503
    assert r.mimetype == "application/problem+json"
    assert r.get_json(force=True)["code"] == "backend_unavailable"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert breaker.rejected == rejected + 1


def test_idempotent_orders_are_refused_by_the_open_breaker_too(
    down_app: tuple[Flask, FlashSale],
) -> None:
    app, flashsale = down_app
    with app.app_context(), pytest.raises(CircuitOpen):
        flashsale.place_order("tee", "alice", idempotency_key="k")


def test_a_host_view_gets_a_503_problem_not_a_500(down_app: tuple[Flask, FlashSale]) -> None:
    app, flashsale = down_app

    @app.route("/buy")
    def buy() -> str:
        return flashsale.place_order("tee", "alice").status

    r = app.test_client().get("/buy")
    assert r.status_code == 503
    assert r.mimetype == "application/problem+json"
    assert r.headers["Retry-After"]


def test_script_errors_and_noscript_do_not_trip_the_breaker(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_BREAKER_FAIL_MAX=2)
    state = FlashSale.state(app)
    assert state.breaker is not None
    with app.app_context():
        flashsale.create_sale("tee", stock=10, per_user_limit=10)
        for _ in range(5):
            with pytest.raises(redis_lib.ResponseError):
                state.client.eval("return redis.call('NOPE')", 0)
            redis_client.script_flush()
            assert flashsale.place_order("tee", "alice").status == "queued"
    assert (state.breaker.state, state.breaker.failures, state.breaker.opened) == (CLOSED, 0, 0)


def test_guarded_calls_are_not_serialized(make_app: MakeApp, redis_client: redis_lib.Redis) -> None:
    """Four threads wait in Redis at the same time: the breaker holds no lock around calls."""
    app, _ = make_app()
    client = FlashSale.state(app).client
    assert isinstance(client, GuardedRedis)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.blpop(["q"], timeout=5)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 5
        while redis_client.info("clients")["blocked_clients"] < 4:
            assert time.monotonic() < deadline, "the calls did not wait in Redis together"
            time.sleep(0.01)
        assert redis_client.info("clients")["blocked_clients"] == 4
    finally:
        redis_client.rpush("q", 1, 2, 3, 4)
        for t in threads:
            t.join(10)
    assert len(results) == 4


def test_a_call_waiting_for_a_connection_is_refused_if_the_breaker_opened_meanwhile(
    make_app: MakeApp,
) -> None:
    """It would otherwise send its command to the Redis that made the breaker open."""
    app, _ = make_app(
        FLASHSALE_REDIS_POOL_SIZE=1,
        FLASHSALE_REDIS_POOL_TIMEOUT=5,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=5,
    )
    state = FlashSale.state(app)
    breaker = state.breaker
    assert breaker is not None
    pool = state.client.connection_pool
    held = pool.get_connection()  # the only connection
    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            app.test_client().get(f"{PREFIX}/orders/tee~" + "A" * 22, headers={"X-User": "a"})
        )
    )
    waiter.start()
    try:
        time.sleep(0.2)  # the waiter is now waiting for the connection
        for _ in range(breaker.fail_max):
            breaker.on_error(DOWN)
        assert breaker.state == OPEN
        rejected = breaker.rejected
    finally:
        pool.release(held)
        waiter.join(10)
    assert answers[0].status_code == 503
    assert answers[0].get_json(force=True)["code"] == "backend_unavailable"
    assert answers[0].headers["Retry-After"]
    assert breaker.rejected == rejected + 1


def test_pipelines_and_transactions_are_guarded(make_app: MakeApp) -> None:
    app, _ = make_app()
    client = FlashSale.state(app).client
    breaker = FlashSale.state(app).breaker
    assert breaker is not None
    with client.pipeline() as pipe:
        pipe.set("k", 1).incr("k")
        assert pipe.execute() == [True, 2]
    for _ in range(breaker.fail_max):
        breaker.on_error(DOWN)
    with client.pipeline() as pipe:
        pipe.incr("k")
        with pytest.raises(CircuitOpen):
            pipe.execute()
    with pytest.raises(CircuitOpen):
        client.transaction(lambda pipe: None, "k")


def test_breaker_can_be_turned_off(make_app: MakeApp) -> None:
    app, _ = make_app(FLASHSALE_BREAKER_FAIL_MAX=0)
    state = FlashSale.state(app)
    assert state.breaker is None
    assert type(state.client) is redis_lib.Redis


def test_memory_mode_is_not_guarded() -> None:
    app = Flask("memory-breaker")
    app.config["FLASHSALE_REDIS_URL"] = "memory://"
    FlashSale(app)
    assert not isinstance(FlashSale.state(app).client, GuardedRedis)
