"""The in-process sale cache and its invalidation across processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
import types
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.breaker import GuardedPipeline, GuardedRedis
from flask_flashsale.cache import SaleCache

from .helpers import (
    PREFIX,
    CommandCounter,
    MakeApp,
    app_with_sale,
    build_app,
    subscribed,
    wait_for,
    watched_sale,
)
from .redis_server import RedisServer


def restock_in_child_process(redis_url: str, sale_id: str, quantity: int) -> int:
    """Top-level so that a spawned process can run it: another app server restocks."""
    app, flashsale = build_app(redis_url)
    with app.app_context():
        return flashsale.restock(sale_id, quantity)


# -- reads ---------------------------------------------------------------------


def test_second_get_within_the_ttl_costs_no_redis_command(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, _ = app_with_sale(make_app, FLASHSALE_CACHE_TTL=30)
    client = app.test_client()
    # The events subscriber starts with the first read, on its own connection:
    # let its handshake land before the counted windows, then forget the sale.
    client.get(f"{PREFIX}/tee")
    probe = redis_lib.Redis.from_url(command_counter.url)
    wait_for(lambda: probe.pubsub_numsub("flashsale:events")[0][1] >= 1)
    probe.close()
    FlashSale.state(app).cache.invalidate("tee")

    first = command_counter.count(lambda: client.get(f"{PREFIX}/tee"))
    seen: list[Any] = []
    second = command_counter.count(lambda: seen.append(client.get(f"{PREFIX}/tee")))

    assert [c.split()[0] for c in first] == ["HGETALL"]
    assert second == []
    assert seen[0].status_code == 200
    assert seen[0].get_json()["remaining"] == 5


def test_second_list_within_the_ttl_costs_no_redis_command(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=30)
    with app.app_context():
        for sale_id in ("a", "b", "c"):
            flashsale.create_sale(sale_id, stock=5)
    client = app.test_client()

    command_counter.count(lambda: client.get(PREFIX))
    listed: list[Any] = []
    again = command_counter.count(lambda: listed.append(client.get(PREFIX)))
    details = command_counter.count(lambda: client.get(f"{PREFIX}/b"))

    assert again == []
    assert details == [], "a list read fills the cache of each sale too"
    assert [s["id"] for s in listed[0].get_json()["sales"]] == ["a", "b", "c"]


def test_list_reads_the_index_and_every_known_sale_in_one_round_trip(
    make_app: MakeApp, command_counter: CommandCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=30)
    round_trips: list[str] = []
    real_execute = GuardedPipeline.execute
    real_command = GuardedRedis.execute_command

    def execute(self: GuardedPipeline, raise_on_error: bool = True) -> list[Any]:
        round_trips.append("pipeline")
        return real_execute(self, raise_on_error)

    def command(self: GuardedRedis, *args: Any, **options: Any) -> Any:
        round_trips.append(str(args[0]))
        return real_command(self, *args, **options)

    with app.app_context():
        for sale_id in ("a", "b", "c"):
            flashsale.create_sale(sale_id, stock=5)
        flashsale.list_sales()  # the cache learns the ids
        FlashSale.state(app).cache.invalidate()
        monkeypatch.setattr(GuardedPipeline, "execute", execute)
        monkeypatch.setattr(GuardedRedis, "execute_command", command)
        commands = command_counter.count(flashsale.list_sales)

    assert round_trips == ["pipeline"]
    assert sorted(c.split()[0] for c in commands) == ["HGETALL"] * 3 + ["SMEMBERS"]


def test_list_sees_a_sale_added_elsewhere_after_the_cache_expires(make_app: MakeApp) -> None:
    app_a, ext_a = make_app(FLASHSALE_CACHE_TTL=0.05)
    app_b, ext_b = make_app()
    with app_a.app_context():
        ext_a.create_sale("a", stock=1)
        assert [s.id for s in ext_a.list_sales()] == ["a"]
    with app_b.app_context():
        ext_b.create_sale("b", stock=2)
    time.sleep(0.06)
    with app_a.app_context():
        assert [(s.id, s.stock) for s in ext_a.list_sales()] == [("a", 1), ("b", 2)]


def test_unknown_sale_is_not_cached(make_app: MakeApp, command_counter: CommandCounter) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=30)
    with app.app_context():
        assert flashsale.get_sale("ghost") is None
        assert command_counter.count(lambda: flashsale.get_sale("ghost")) != []


def test_cache_ttl_zero_reads_redis_every_time(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, flashsale = app_with_sale(make_app, FLASHSALE_CACHE_TTL=0)
    with app.app_context():
        flashsale.get_sale("tee")
        assert command_counter.count(lambda: flashsale.get_sale("tee")) != []
        assert FlashSale.state(app).cache.subscriber is not None
        assert not FlashSale.state(app).cache.subscriber.running


def test_cached_data_is_at_most_ttl_old(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=0.2)
    other, other_ext = make_app()
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.get_sale("tee").remaining == 5  # type: ignore[union-attr]
    with other.app_context():
        assert other_ext.place_order("tee", "alice").status == "queued"
    with app.app_context():
        # Orders do not publish events: the page may show 5 for up to the TTL,
        # then the next read loads it again (a bounded wait, not a timing check).
        wait_for(lambda: flashsale.get_sale("tee").remaining == 4, 2)  # type: ignore[union-attr]


def test_counters_count_hits_and_misses(make_app: MakeApp) -> None:
    app, flashsale = app_with_sale(make_app, FLASHSALE_CACHE_TTL=30)
    with app.app_context():
        for _ in range(3):
            flashsale.get_sale("tee")
    cache = FlashSale.state(app).cache
    assert (cache.misses, cache.hits) == (1, 2)


# -- HTTP caching ----------------------------------------------------------------


def test_sale_detail_etag_gives_304(make_app: MakeApp) -> None:
    app, _ = app_with_sale(make_app)
    client = app.test_client()
    r = client.get(f"{PREFIX}/tee")
    again = client.get(f"{PREFIX}/tee", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    assert again.get_data() == b""


def test_sale_list_has_etag_and_cache_control(make_app: MakeApp) -> None:
    app, _ = app_with_sale(make_app)
    client = app.test_client()
    r = client.get(PREFIX)
    assert r.headers["Cache-Control"] == "public, max-age=1"
    again = client.get(PREFIX, headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_etag_changes_when_the_sale_changes(make_app: MakeApp) -> None:
    app, flashsale = app_with_sale(make_app, FLASHSALE_CACHE_TTL=30)
    client = app.test_client()
    etag = client.get(f"{PREFIX}/tee").headers["ETag"]
    with app.app_context():
        flashsale.restock("tee", 1)
    r = client.get(f"{PREFIX}/tee", headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.get_json()["remaining"] == 6


@pytest.mark.parametrize(("max_age", "header"), [(5, "public, max-age=5"), (0, "no-cache")])
def test_cache_control_max_age_is_configurable(
    make_app: MakeApp, max_age: int, header: str
) -> None:
    app, _ = app_with_sale(make_app, FLASHSALE_CACHE_MAX_AGE=max_age)
    client = app.test_client()
    assert client.get(f"{PREFIX}/tee").headers["Cache-Control"] == header
    assert client.get(PREFIX).headers["Cache-Control"] == header


# -- invalidation ------------------------------------------------------------------


def test_local_admin_changes_are_visible_at_once(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    with app.app_context():
        flashsale.create_sale("tee", stock=5, info={"v": 1})
        assert flashsale.get_sale("tee").info == {"v": 1}  # type: ignore[union-attr]
        flashsale.create_sale("tee", stock=5, info={"v": 2})
        assert flashsale.get_sale("tee").info == {"v": 2}  # type: ignore[union-attr]
        flashsale.restock("tee", 3)
        assert flashsale.get_sale("tee").remaining == 8  # type: ignore[union-attr]
        assert [s.remaining for s in flashsale.list_sales()] == [8]
        flashsale.delete_sale("tee")
        assert flashsale.get_sale("tee") is None
        assert flashsale.list_sales() == []


@pytest.mark.parametrize("change", ["create", "restock", "delete"])
def test_admin_change_in_one_app_drops_the_entry_in_another(make_app: MakeApp, change: str) -> None:
    reader, reader_ext = make_app(FLASHSALE_CACHE_TTL=60)
    admin, admin_ext = make_app()
    with admin.app_context():
        admin_ext.create_sale("tee", stock=5, info={"v": 1})
    with reader.app_context():
        assert reader_ext.get_sale("tee") is not None
    subscribed(reader)
    with admin.app_context():
        if change == "create":
            admin_ext.create_sale("tee", stock=5, info={"v": 2})
        elif change == "restock":
            admin_ext.restock("tee", 10)
        else:
            admin_ext.delete_sale("tee")
    expected = {"create": (5, {"v": 2}), "restock": (15, {"v": 1}), "delete": None}[change]

    def seen() -> Any:
        with reader.app_context():
            sale = reader_ext.get_sale("tee")
        return None if sale is None else (sale.remaining, sale.info)

    wait_for(lambda: seen() == expected, 5)


def test_restock_in_another_os_process_is_visible_right_after_the_event(
    make_app: MakeApp, redis_url: str
) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=300)
    client = app.test_client()
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
    assert client.get(f"{PREFIX}/tee").get_json()["remaining"] == 1
    subscribed(app)

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        remaining = pool.apply_async(restock_in_child_process, (redis_url, "tee", 9)).get(60)
    assert remaining == 10
    # The TTL is 5 minutes: only the event can make the new stock visible now.
    waited = wait_for(lambda: client.get(f"{PREFIX}/tee").get_json()["remaining"] == 10, 5)
    print(f"\nrestock in another OS process visible after {waited * 1000:.1f} ms (TTL 300 s)")


def test_changed_message_published_by_anyone_drops_the_entry(
    make_app: MakeApp, redis_client: redis_lib.Redis
) -> None:
    """The contract other publishers (cancel and compensation scripts) rely on."""
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    watched_sale(app, flashsale)
    redis_client.hset("flashsale:{tee}:sale", "remaining", 7)
    with app.app_context():
        assert flashsale.get_sale("tee").remaining == 5  # type: ignore[union-attr]
    redis_client.publish("flashsale:events", "changed tee")
    with app.app_context():
        wait_for(lambda: flashsale.get_sale("tee").remaining == 7)  # type: ignore[union-attr]


def test_messages_of_unknown_kinds_are_ignored(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=60)
    cache = FlashSale.state(app).cache
    watched_sale(app, flashsale)
    for message in ("renamed tee", "changed", "", b"bogus \xff"):
        cache.apply(message)
    with app.app_context():
        flashsale.get_sale("tee")
    assert cache.hits == 1


def test_each_app_has_its_own_subscriber_started_lazily_and_stoppable(make_app: MakeApp) -> None:
    apps = [make_app(FLASHSALE_CACHE_TTL=60) for _ in range(2)]
    subscribers = [FlashSale.state(app).cache.subscriber for app, _ in apps]
    assert subscribers[0] is not subscribers[1]
    assert not any(s.running for s in subscribers if s is not None)
    for app, ext in apps:
        watched_sale(app, ext)
    for subscriber in subscribers:
        assert subscriber is not None and subscriber.running
        subscriber.stop()
        assert not subscriber.running


def test_subscriber_reconnects_after_a_redis_restart_and_drops_the_cache(
    private_redis: RedisServer,
) -> None:
    app, flashsale = build_app(private_redis.url, FLASHSALE_CACHE_TTL=60)
    watched_sale(app, flashsale)
    cache = FlashSale.state(app).cache
    subscriber = cache.subscriber
    assert subscriber is not None and subscriber.subscriptions == 1

    private_redis.kill()
    wait_for(lambda: not subscriber.subscribed.is_set(), 5)
    private_redis.start()
    wait_for(lambda: subscriber.subscriptions == 2, 10)

    # Events may have been missed while it was away: nothing cached is trusted.
    misses = cache.misses
    with app.app_context():
        assert flashsale.get_sale("tee").remaining == 5  # type: ignore[union-attr]
    assert cache.misses == misses + 1
    # And it hears events again.
    redis_lib.Redis.from_url(private_redis.url).publish("flashsale:events", "changed tee")
    wait_for(lambda: cache.invalidations >= 2, 5)


def test_memory_mode_caches_and_invalidates_too() -> None:
    app = Flask("memory-cache")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_CACHE_TTL=60)
    flashsale = FlashSale(app)
    try:
        with app.app_context():
            flashsale.create_sale("tee", stock=1)
            assert flashsale.get_sale("tee").remaining == 1  # type: ignore[union-attr]
            assert flashsale.place_order("tee", "alice").status == "queued"
            assert flashsale.place_order("tee", "bob").status == "sold_out"
            assert FlashSale.state(app).cache.sold_out("tee")
            flashsale.restock("tee", 1)
            assert flashsale.place_order("tee", "bob").status == "queued"
    finally:
        FlashSale.state(app).cache.stop()


# -- the cache object itself ----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_read_that_raced_an_invalidation_is_not_stored() -> None:
    clock = FakeClock()
    cache = SaleCache(10, clock=clock)
    calls: list[str] = []

    def slow_load(sale_id: str) -> Any:
        calls.append(sale_id)
        cache.invalidate(sale_id)  # an event arrives while Redis is being read
        return object()

    cache.sale("tee", slow_load)
    cache.sale("tee", slow_load)
    assert calls == ["tee", "tee"]


def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = SaleCache(1.0, clock=clock)
    value = object()
    assert cache.sale("tee", lambda _: value) is value  # type: ignore[arg-type,return-value]
    clock.now += 0.999
    assert cache.sale("tee", lambda _: None) is value
    clock.now += 0.002
    assert cache.sale("tee", lambda _: None) is None


def subscribed_stub() -> Any:
    """A stand-in for the events subscriber thread, subscribed (no Redis needed)."""
    stub = types.SimpleNamespace(subscribed=threading.Event(), cache=None)
    stub.subscribed.set()
    return stub


def test_a_sold_out_event_published_before_a_change_of_this_process_flags_nothing() -> None:
    """The race behind a restock: the subscriber thread delivers the sell-out's
    event after this process restocked (and cleared the flag)."""
    cache = SaleCache(30, subscriber=subscribed_stub())
    cache.own_change("tee")  # a restock this process wrote; its "changed" event is on its way
    cache.apply("sold_out tee")  # published before the restock, delivered after it
    assert not cache.sold_out("tee")
    cache.apply("changed tee")  # the restock's own event comes back
    cache.apply("sold_out tee")  # a sell-out after the restock
    assert cache.sold_out("tee")


def test_a_change_whose_event_never_comes_back_holds_sold_out_events_one_second_at_most() -> None:
    now = [100.0]
    cache = SaleCache(30, clock=lambda: now[0], subscriber=subscribed_stub())
    cache.own_change("tee")
    cache.apply("sold_out tee")
    assert not cache.sold_out("tee")
    now[0] += 1.01
    cache.apply("sold_out tee")
    assert cache.sold_out("tee")


def test_a_change_made_before_subscribing_holds_no_sold_out_event() -> None:
    """Its event is not coming back (nobody was listening): nothing to wait for."""
    unsubscribed = subscribed_stub()
    unsubscribed.subscribed.clear()
    cache = SaleCache(30, subscriber=unsubscribed)
    cache.own_change("tee")
    cache.apply("sold_out tee")
    assert cache.sold_out("tee")
