"""Prometheus metrics: in-process counters, Redis gauges read at scrape time, /metrics."""

from __future__ import annotations

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_flashsale import ConfigurationError, FlashSale, Order

from .helpers import MakeApp, build_app
from .redis_server import RedisServer
from .worker_host import FAST, wait_until, worker_thread

ROUTE = {"FLASHSALE_METRICS_PATH": "/metrics"}


@pytest.fixture
def make_app(make_app: MakeApp) -> MakeApp:
    """The host-app factory, with the /metrics route turned on (it is off by default)."""

    def factory(**config: object) -> tuple[Flask, FlashSale]:
        return make_app(**{**ROUTE, **config})

    return factory


REDIS_GAUGES = {
    "flashsale_stock_remaining",
    "flashsale_queue_length",
    "flashsale_queue_pending",
    "flashsale_queue_lag",
    "flashsale_dead_letters",
    "flashsale_workers_live",
}


def value(app: Flask, name: str, **labels: str) -> float | None:
    """One sample of the app's registry (``None``: no such series)."""
    metrics = FlashSale.state(app).metrics
    assert metrics is not None
    return metrics.registry.get_sample_value(name, labels)


def scrape(app: Flask) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics as Prometheus would: {sample name: {sorted labels: value}}."""
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_admissions_are_counted_by_sale_and_result(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=2, per_user_limit=1)
        assert ext.place_order("tee", "alice").status == "queued"
        assert ext.place_order("tee", "bob").status == "queued"
        assert ext.place_order("tee", "carol").status == "sold_out"
        assert ext.place_order("tee", "dave").status == "sold_out"  # from memory
    assert value(app, "flashsale_admissions_total", sale="tee", result="queued") == 2
    assert value(app, "flashsale_admissions_total", sale="tee", result="sold_out") == 2


def test_unknown_sales_share_one_label_value(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        for i in range(5):
            assert ext.place_order(f"nope{i}", "alice").status == "not_found"
    assert value(app, "flashsale_admissions_total", sale="_unknown", result="not_found") == 5
    exposed = scrape(app)["flashsale_admissions_total"]
    assert list(exposed) == [(("result", "not_found"), ("sale", "_unknown"))]


def test_admission_histogram_counts_every_attempt(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=3, per_user_limit=1)
        for user in ["a", "b", "c", "d", "a"]:
            ext.place_order("tee", user)
        ext.place_order("ghost", "a")
    assert value(app, "flashsale_admission_seconds_count") == 6
    assert value(app, "flashsale_admission_seconds_bucket", le="+Inf") == 6


def test_settled_orders_are_counted_by_outcome(make_app: MakeApp) -> None:
    app, ext = make_app(FLASHSALE_MAX_ATTEMPTS=1, **FAST)

    @ext.order_handler
    def save(order: Order) -> None:
        if order.user_id.startswith("bad"):
            raise RuntimeError("refused")

    with app.app_context():
        ext.create_sale("tee", stock=10, per_user_limit=1)
        for user in ["u1", "u2", "u3", "bad1"]:
            assert ext.place_order("tee", user).status == "queued"
        assert ext.run_worker(burst=True) == 4
    assert value(app, "flashsale_orders_settled_total", sale="tee", outcome="confirmed") == 3
    assert value(app, "flashsale_orders_settled_total", sale="tee", outcome="failed") == 1


def test_redis_gauges_show_stock_queue_and_dead_letters(make_app: MakeApp) -> None:
    app, ext = make_app(FLASHSALE_MAX_ATTEMPTS=1, **FAST)

    @ext.order_handler
    def save(order: Order) -> None:
        raise RuntimeError("database down")

    with app.app_context():
        ext.create_sale("tee", stock=10, per_user_limit=1)
        ext.create_sale("cap", stock=5)
        ext.place_order("tee", "alice")
        ext.run_worker(burst=True)  # alice's order fails for good: one dead letter
        for user in ["bob", "carol", "dave"]:
            ext.place_order("tee", user)
    gauges = scrape(app)
    tee, cap = (("sale", "tee"),), (("sale", "cap"),)
    assert gauges["flashsale_stock_remaining"] == {tee: 7, cap: 5}
    assert gauges["flashsale_queue_length"] == {tee: 3, cap: 0}
    assert gauges["flashsale_queue_pending"] == {tee: 0, cap: 0}
    assert gauges["flashsale_queue_lag"] == {tee: 3, cap: 0}
    assert gauges["flashsale_dead_letters"] == {tee: 1, cap: 0}
    assert gauges["flashsale_workers_live"] == {(): 0}
    assert gauges["flashsale_scrape_errors_total"] == {(): 0}


def test_live_workers_gauge_counts_a_running_worker(make_app: MakeApp) -> None:
    app, ext = make_app(**FAST)
    ext.order_handler(lambda order: None)
    with worker_thread(app):
        wait_until(lambda: scrape(app)["flashsale_workers_live"] == {(): 1})
    assert scrape(app)["flashsale_workers_live"] == {(): 0}


def test_metrics_route_serves_the_text_exposition(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=1)
        ext.place_order("tee", "alice")
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {
        "flashsale_admissions",
        "flashsale_admission_seconds",
        "flashsale_orders_settled",
        "flashsale_scrape_errors",
    } | REDIS_GAUGES <= names


def test_metrics_path_can_move_or_be_left_to_the_host(make_app: MakeApp) -> None:
    moved, _ = make_app(FLASHSALE_METRICS_PATH="/internal/prom")
    assert moved.test_client().get("/internal/prom").status_code == 200
    assert moved.test_client().get("/metrics").status_code == 404

    host, ext = make_app(FLASHSALE_METRICS_PATH=None)

    @host.get("/ops/metrics")
    def ops_metrics() -> object:
        return ext.metrics_response()

    assert host.test_client().get("/metrics").status_code == 404
    response = host.test_client().get("/ops/metrics")
    assert response.status_code == 200
    assert b"flashsale_queue_lag" in response.data


def test_scrape_during_a_redis_outage_skips_the_redis_gauges(
    private_redis: RedisServer,
) -> None:
    app, ext = build_app(private_redis.url, FLASHSALE_BREAKER_FAIL_MAX=0, **ROUTE)
    with app.app_context():
        ext.create_sale("tee", stock=3)
        ext.place_order("tee", "alice")
    assert "flashsale_queue_lag" in scrape(app)
    private_redis.stop()

    gauges = scrape(app)

    assert REDIS_GAUGES.isdisjoint(gauges)
    assert gauges["flashsale_scrape_errors_total"] == {(): 1}
    assert gauges["flashsale_admissions_total"] == {(("result", "queued"), ("sale", "tee")): 1}


def test_scrape_with_the_breaker_open_skips_the_redis_gauges(
    private_redis: RedisServer,
) -> None:
    app, _ = build_app(private_redis.url, FLASHSALE_BREAKER_FAIL_MAX=1, **ROUTE)
    private_redis.stop()
    for _ in range(3):
        gauges = scrape(app)
        assert REDIS_GAUGES.isdisjoint(gauges)
    assert gauges["flashsale_scrape_errors_total"] == {(): 3}


def test_metrics_off_leaves_no_route_and_no_registry(make_app: MakeApp) -> None:
    app, ext = make_app(FLASHSALE_METRICS=False)
    assert FlashSale.state(app).metrics is None
    assert app.test_client().get("/metrics").status_code == 404
    assert "flashsale_metrics" not in app.view_functions
    with app.app_context():
        ext.create_sale("tee", stock=1)
        assert ext.place_order("tee", "alice").status == "queued"
        with pytest.raises(ConfigurationError):
            ext.metrics_response()


def test_metrics_on_without_prometheus_client_names_the_extra(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_flashsale.metrics.available", lambda: False)
    with pytest.raises(ConfigurationError, match=r"Flask-FlashSale\[metrics\]"):
        make_app(FLASHSALE_METRICS=True)
    app, _ = make_app()  # the default follows the package: off without it
    assert FlashSale.state(app).metrics is None


def test_metrics_path_must_be_absolute(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_METRICS_PATH"):
        make_app(FLASHSALE_METRICS_PATH="metrics")


def test_an_order_attempt_with_metrics_on_is_one_round_trip(
    make_app: MakeApp, command_counter
) -> None:
    app, ext = make_app(FLASHSALE_METRICS=True)
    with app.app_context():
        ext.create_sale("tee", stock=10, per_user_limit=10)
        ext.place_order("tee", "warm-up", idempotency_key="warm")
        sent = command_counter.count(lambda: ext.place_order("tee", "alice"))
    assert [c.split()[0] for c in sent] == ["EVALSHA"]
    assert value(app, "flashsale_admissions_total", sale="tee", result="queued") == 2


def test_no_metrics_route_unless_the_host_asks_for_one(redis_url: str) -> None:
    app, ext = build_app(redis_url)
    assert FlashSale.state(app).metrics is not None  # recorded, but not served
    assert app.test_client().get("/metrics").status_code == 404
    with app.app_context():
        assert b"flashsale_admissions" in ext.metrics_response().get_data()
