"""Inventory strategies: ``optimistic`` and ``lock`` behave like ``lua``, and say ``busy``
rather than oversell when contention outlasts their retries or lock wait. What must hold
for every strategy (Redis time, idempotency under concurrency) runs for all three."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import ConfigurationError, FlashSale
from flask_flashsale.lock import FencedLock
from flask_flashsale.strategies import LockStrategy, OptimisticStrategy

from .helpers import STRATEGIES, MakeApp, redis_now, released_together

PYTHON_SIDE = ["optimistic", "lock"]


def scripted_sale(flashsale: FlashSale) -> list[tuple[Any, ...]]:
    """A fixed run of orders touching every admission outcome; returns the outcomes."""
    flashsale.create_sale("tee", stock=3, price="9.99", per_user_limit=2)
    steps = [
        ("tee", "alice", 1, "k1"),
        ("tee", "alice", 1, "k1"),  # duplicate
        ("tee", "alice", 2, "k2"),  # over the per-user limit
        ("tee", "alice", 1, "k3"),
        ("tee", "bob", 2, "k4"),  # more than remains
        ("tee", "bob", 1, "k5"),  # the last unit
        ("tee", "carol", 1, "k6"),  # sold out
        ("ghost", "alice", 1, "k7"),  # no such sale
        ("tee", "alice", 1, "k1"),  # duplicate after the sell-out
    ]
    out = []
    for sale_id, user, quantity, key in steps:
        a = flashsale.place_order(sale_id, user, quantity, idempotency_key=key)
        out.append((a.status, a.ticket_id, a.remaining, a.retry_after))
    return out


def redis_records(client: redis_lib.Redis) -> dict[str, Any]:
    """Everything admission wrote for sale ``tee``, minus admission times."""
    tickets = {}
    for key in client.scan_iter(match="flashsale:{tee}:t:*"):
        fields = client.hgetall(key)
        assert fields.pop("a").isdigit()
        tickets[key] = (fields, client.ttl(key) > 0)
    stream = []
    for _, fields in client.xrange("flashsale:{tee}:orders"):
        assert fields.pop("a").isdigit()
        stream.append(fields)
    buyers = client.hgetall("flashsale:{tee}:buyers")
    return {
        "sale": client.hgetall("flashsale:{tee}:sale"),
        "users": client.hgetall("flashsale:{tee}:users"),
        "tickets": tickets,
        "stream": stream,
        "buyer_tickets": buyers,
    }


@pytest.mark.parametrize("strategy", PYTHON_SIDE)
def test_strategy_gives_the_same_answers_and_writes_the_same_records_as_lua(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app()
    with app.app_context():
        expected = scripted_sale(flashsale)
    expected_records = redis_records(redis_client)
    redis_client.flushall()
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    assert flashsale.state(app).strategy.name == strategy
    with app.app_context():
        assert scripted_sale(flashsale) == expected
    assert redis_records(redis_client) == expected_records
    assert [s for s, *_ in expected] == [
        "queued",
        "duplicate",
        "limit_reached",
        "queued",
        "sold_out",
        "queued",
        "sold_out",
        "not_found",
        "duplicate",
    ]


@pytest.mark.parametrize("strategy", PYTHON_SIDE)
def test_ticket_and_stream_entry_carry_the_redis_time_of_admission(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        before = redis_now(redis_client)
        admission = flashsale.place_order("tee", "alice")
        after = redis_now(redis_client)
    token = admission.ticket_id.split("~")[1]  # type: ignore[union-attr]
    ticket_at = int(redis_client.hget(f"flashsale:{{tee}}:t:{token}", "a"))  # type: ignore[arg-type]
    [(_, entry)] = redis_client.xrange("flashsale:{tee}:orders")
    assert int(entry["a"]) == ticket_at
    assert int(before * 1000) <= ticket_at <= int(after * 1000) + 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sale_not_started_is_judged_on_redis_time(
    make_app: MakeApp,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, starts_at=redis_now(redis_client) + 60)
        # The web server's clock says the sale is long open: admission ignores it.
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
        refused = flashsale.place_order("tee", "alice")
    assert refused.status == "not_started"
    assert refused.retry_after is not None and 55 < refused.retry_after <= 60


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sale_ended_is_judged_on_redis_time(
    make_app: MakeApp,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    now = redis_now(redis_client)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, starts_at=now - 120, ends_at=now - 1)
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
        assert flashsale.place_order("tee", "alice").status == "ended"
    assert redis_client.xlen("flashsale:{tee}:orders") == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_requests_with_one_idempotency_key_take_stock_once(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    app, flashsale = make_app(
        FLASHSALE_INVENTORY_STRATEGY=strategy, FLASHSALE_OPTIMISTIC_RETRIES=100
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=100, per_user_limit=100)

    def attempt(_: int) -> tuple[str, str | None]:
        a = flashsale.place_order("tee", "alice", idempotency_key="same")
        return a.status, a.ticket_id

    results = released_together(app, list(range(16)), 16, attempt)
    assert sorted(s for s, _ in results) == ["duplicate"] * 15 + ["queued"]
    assert len({t for _, t in results}) == 1
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "99"
    assert redis_client.xlen("flashsale:{tee}:orders") == 1


def _conflict_on_judge(
    strategy: OptimisticStrategy | LockStrategy,
    monkeypatch: pytest.MonkeyPatch,
    writer: Callable[[], None],
    times: int,
) -> None:
    """Make ``writer`` run between the watched read and the write, ``times`` times."""
    real_judge = strategy._judge
    left = [times]

    def judge_then_write_elsewhere(*args: Any) -> Any:
        outcome = real_judge(*args)
        if left[0] > 0:
            left[0] -= 1
            writer()
        return outcome

    monkeypatch.setattr(strategy, "_judge", judge_then_write_elsewhere)


def assert_nothing_admitted(client: redis_lib.Redis) -> None:
    assert client.xlen("flashsale:{tee}:orders") == 0
    assert client.hgetall("flashsale:{tee}:users") == {}
    assert list(client.scan_iter(match="flashsale:{tee}:t:*")) == []


def test_optimistic_answers_busy_when_every_retry_conflicts(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(
        FLASHSALE_INVENTORY_STRATEGY="optimistic", FLASHSALE_OPTIMISTIC_RETRIES=3
    )
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, OptimisticStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        _conflict_on_judge(strategy, monkeypatch, lambda: flashsale.restock("tee", 1), times=99)
        busy = flashsale.place_order("tee", "alice")
    assert (busy.status, busy.ticket_id, busy.retry_after) == ("busy", None, 1.0)
    assert strategy.counters.snapshot() == {
        "attempts": 1,
        "conflicts": 4,
        "retries": 3,
        "busy": 1,
    }
    assert_nothing_admitted(redis_client)
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "9"  # 5 + 4 restocks


def test_optimistic_retries_a_conflict_and_admits(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="optimistic")
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, OptimisticStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        # Another buyer takes a unit between our read and our write.
        _conflict_on_judge(
            strategy, monkeypatch, lambda: flashsale.place_order("tee", "bob"), times=1
        )
        admission = flashsale.place_order("tee", "alice")
    assert (admission.status, admission.remaining) == ("queued", 3)
    assert strategy.counters["conflicts"] == 1 and strategy.counters["retries"] == 1
    assert redis_client.hgetall("flashsale:{tee}:users") == {"alice": "1", "bob": "1"}
    assert redis_client.xlen("flashsale:{tee}:orders") == 2


def test_optimistic_last_unit_race_is_sold_out_for_the_loser(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="optimistic")
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, OptimisticStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        _conflict_on_judge(
            strategy, monkeypatch, lambda: flashsale.place_order("tee", "bob"), times=1
        )
        assert flashsale.place_order("tee", "alice").status == "sold_out"
    assert redis_client.hgetall("flashsale:{tee}:users") == {"bob": "1"}
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "0"


def hold_sale_lock(flashsale: FlashSale, app: Flask) -> FencedLock:
    """Another process's holding of sale ``tee``'s lock (the key the strategy uses)."""
    state = flashsale.state(app)
    lock = FencedLock(
        state.client,
        "flashsale:{tee}:lock",
        "flashsale:{tee}:fence",
        script=state.scripts["lock_acquire"],
        timeout=30,
        blocking_timeout=0,
        thread_local=False,  # released from another thread in one test
    )
    lock.acquire()
    return lock


def test_lock_strategy_answers_busy_when_the_sale_lock_stays_taken(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock", FLASHSALE_LOCK_WAIT=0.2)
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, LockStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        other = hold_sale_lock(flashsale, app)
        busy = flashsale.place_order("tee", "alice")
        assert (busy.status, busy.retry_after) == ("busy", 1.0)
        assert_nothing_admitted(redis_client)
        other.release()
        assert flashsale.place_order("tee", "alice").status == "queued"
    assert strategy.counters["lock_timeouts"] == 1 and strategy.counters["busy"] == 1


def test_lock_strategy_waits_for_the_holder_then_admits(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock", FLASHSALE_LOCK_WAIT=10)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        other = hold_sale_lock(flashsale, app)
        releaser = threading.Timer(0.2, other.release)
        releaser.start()
        admission = flashsale.place_order("tee", "alice")
        releaser.join()
    assert admission.status == "queued"
    assert redis_client.xlen("flashsale:{tee}:orders") == 1


def test_lock_strategy_never_writes_once_another_holder_took_its_lock(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock")
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, LockStrategy)

    def lease_expires_and_another_holder_takes_the_lock() -> None:
        redis_client.set("flashsale:{tee}:lock", "someone-else", px=30_000)

    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        _conflict_on_judge(
            strategy, monkeypatch, lease_expires_and_another_holder_takes_the_lock, times=1
        )
        busy = flashsale.place_order("tee", "alice")
    assert busy.status == "busy"
    assert strategy.counters["leases_lost"] == 1
    assert_nothing_admitted(redis_client)
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "5"
    # The stale holder did not release the new holder's lock either.
    assert redis_client.get("flashsale:{tee}:lock") == "someone-else"


def test_lock_strategy_never_writes_after_its_lease_expired(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock", FLASHSALE_LOCK_TIMEOUT=0.05)
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, LockStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        # A pause longer than the lease between the read and the write (GC, swap...).
        _conflict_on_judge(strategy, monkeypatch, lambda: time.sleep(0.2), times=1)
        busy = flashsale.place_order("tee", "alice")
    assert busy.status == "busy"
    assert strategy.counters["leases_lost"] == 1
    assert_nothing_admitted(redis_client)


def test_lock_strategy_rereads_after_a_restock_and_admits(
    make_app: MakeApp, redis_client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock")
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, LockStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        # An admin withdraws the last unit while we hold the lock: restock does not lock.
        _conflict_on_judge(strategy, monkeypatch, lambda: flashsale.restock("tee", -1), times=1)
        assert flashsale.place_order("tee", "alice").status == "sold_out"
    assert strategy.counters["conflicts"] == 1
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "0"
    assert_nothing_admitted(redis_client)


def test_lock_strategy_releases_the_sale_lock_after_each_attempt(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock")
    with app.app_context():
        flashsale.create_sale("tee", stock=2)
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert flashsale.place_order("tee", "bob").status == "queued"
    assert redis_client.exists("flashsale:{tee}:lock") == 0
    assert redis_client.get("flashsale:{tee}:fence") == "2"


def test_busy_is_a_503_problem_with_retry_after(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY="lock", FLASHSALE_LOCK_WAIT=0.1)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        other = hold_sale_lock(flashsale, app)
    response = app.test_client().post("/api/flash-sales/tee/order", headers={"X-User": "alice"})
    other.release()
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.json["code"] == "backend_unavailable"  # type: ignore[index]
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("strategy", PYTHON_SIDE)
@pytest.mark.parametrize(
    "throttle", ["FLASHSALE_ORDER_RATE_PER_USER", "FLASHSALE_ORDER_RATE_PER_SALE"]
)
def test_admission_throttles_need_the_lua_strategy(
    make_app: MakeApp, strategy: str, throttle: str
) -> None:
    with pytest.raises(ConfigurationError, match=throttle[:-5]):
        make_app(FLASHSALE_INVENTORY_STRATEGY=strategy, **{throttle: "5/second"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("FLASHSALE_OPTIMISTIC_RETRIES", -1),
        ("FLASHSALE_OPTIMISTIC_RETRIES", "many"),
        ("FLASHSALE_LOCK_TIMEOUT", 0),
        ("FLASHSALE_LOCK_WAIT", -1),
    ],
)
def test_bad_strategy_settings_fail_at_start_up(make_app: MakeApp, key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: value})


@pytest.mark.parametrize("strategy", PYTHON_SIDE)
def test_sold_out_event_is_published_when_the_last_unit_goes(
    redis_client: redis_lib.Redis, make_app: MakeApp, strategy: str
) -> None:
    app, flashsale = make_app()
    state = flashsale.state(app)
    chosen: OptimisticStrategy | LockStrategy
    if strategy == "optimistic":
        chosen = OptimisticStrategy(
            state.client, state.keys, ticket_ttl=60, events_channel="flashsale:events"
        )
    else:
        chosen = LockStrategy(
            state.client,
            state.keys,
            state.scripts["lock_acquire"],
            ticket_ttl=60,
            events_channel="flashsale:events",
        )
    pubsub = redis_client.pubsub()
    pubsub.subscribe("flashsale:events")
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"  # type: ignore[index]
    with app.app_context():
        flashsale.create_sale("tee", stock=2)
    created = pubsub.get_message(timeout=1)  # create_sale announces the change
    assert created is not None and created["data"] == "changed tee"
    assert chosen.admit("tee", "alice", 1, "a" * 22).status == "queued"
    assert pubsub.get_message(timeout=0.2) is None
    assert chosen.admit("tee", "bob", 1, "b" * 22).remaining == 0
    message = pubsub.get_message(timeout=1)
    pubsub.close()
    assert message is not None and message["data"] == "sold_out tee"


@pytest.mark.parametrize("strategy", PYTHON_SIDE)
def test_strategy_works_on_the_embedded_store(strategy: str) -> None:
    app = Flask("embedded")
    app.config.update(
        FLASHSALE_REDIS_URL="memory://",
        FLASHSALE_INLINE_WORKER=False,
        FLASHSALE_INVENTORY_STRATEGY=strategy,
    )
    flashsale = FlashSale(app)
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert flashsale.place_order("tee", "bob").status == "sold_out"
        assert flashsale.get_sale("tee").remaining == 0  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", PYTHON_SIDE)
def test_hot_item_with_default_settings_never_oversells(
    make_app: MakeApp, redis_client: redis_lib.Redis, strategy: str
) -> None:
    """32 threads, 800 buyers, 50 units, the production defaults: some attempts
    may be answered ``busy``, none may oversell, and the stock still sells out."""
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    chosen = flashsale.state(app).strategy
    assert isinstance(chosen, (OptimisticStrategy, LockStrategy))
    with app.app_context():
        flashsale.create_sale("tee", stock=50)
    users = [f"u{i}" for i in range(800)]
    barrier = threading.Barrier(32)

    def buy(chunk: list[str]) -> list[tuple[str, str]]:
        with app.app_context():
            barrier.wait()
            return [(u, flashsale.place_order("tee", u).status) for u in chunk]

    with ThreadPoolExecutor(32) as pool:
        results = [r for part in pool.map(buy, [users[i::32] for i in range(32)]) for r in part]
    statuses = Counter(s for _, s in results)
    print(f"\n{strategy}: {dict(statuses)} counters {chosen.counters.snapshot()}")
    assert set(statuses) <= {"queued", "sold_out", "busy"}
    assert statuses["queued"] == 50
    assert statuses["busy"] == chosen.counters["busy"]
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "0"
    held = redis_client.hgetall("flashsale:{tee}:users")
    assert sorted(held) == sorted(u for u, s in results if s == "queued")
    assert redis_client.xlen("flashsale:{tee}:orders") == 50


READS = ["WATCH", "HMGET", "HGET", "TIME", "HGET", "HGET"]
WRITE = [
    "MULTI",
    "HINCRBY",
    "HINCRBY",
    "HSET",
    "EXPIRE",
    "XADD",
    "HSET",
    "EXEC",
]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("optimistic", [*READS, *WRITE]),  # 7 round trips: 6 reads, 1 pipelined MULTI/EXEC
        ("lock", ["EVALSHA", *READS, *WRITE, "EVALSHA"]),  # + acquire and release
    ],
)
def test_commands_sent_for_one_uncontended_admission(
    make_app: MakeApp, command_counter: Any, strategy: str, expected: list[str]
) -> None:
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
        flashsale.place_order("tee", "warm-up", idempotency_key="warm")  # scripts, secret
        sent = command_counter.count(lambda: flashsale.place_order("tee", "alice"))
    assert [c.split()[0] for c in sent] == expected


@pytest.mark.parametrize("strategy_name", ["optimistic", "lock"])
def test_a_connection_lost_while_watching_is_an_outage_not_a_conflict(
    make_app: MakeApp,
    redis_client: redis_lib.Redis,
    monkeypatch: pytest.MonkeyPatch,
    strategy_name: str,
) -> None:
    """redis-py reports it as a WatchError; retrying would wait a second timeout."""
    app, flashsale = make_app(FLASHSALE_INVENTORY_STRATEGY=strategy_name)
    strategy = flashsale.state(app).strategy
    assert isinstance(strategy, OptimisticStrategy | LockStrategy)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        _conflict_on_judge(
            strategy,
            monkeypatch,
            lambda: redis_client.client_kill_filter(_type="normal", skipme=True),
            times=1,
        )
        with pytest.raises(redis_lib.ConnectionError):
            flashsale.place_order("tee", "alice")
    assert strategy.counters["conflicts"] == 0
    assert_nothing_admitted(redis_client)
