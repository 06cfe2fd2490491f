"""``flashsale.limit`` on a host app's views, blueprints and blocks, over HTTP."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient
from flask.views import MethodView
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_flashsale import FlashSale, RateLimited, request_rate_limited
from flask_flashsale.ratelimit import by_ip

from .helpers import ALICE, build_app, problem

BOB = {"X-User": "bob"}
RATELIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def host(make_app: Any, **config: Any) -> tuple[Flask, FlashSale]:
    return make_app(**config)  # type: ignore[no-any-return]


def search_client(make_app: Any, *rate: Any, **limit: Any) -> FlaskClient:
    """The test client of a host app whose ``GET /search`` is under
    ``flashsale.limit(*rate, **limit)``."""
    app, flashsale = host(make_app)

    @app.get("/search")
    @flashsale.limit(*rate, **limit)
    def search() -> str:
        return "results"

    return app.test_client()


# -- the decorator ------------------------------------------------------------


def test_a_limited_view_answers_429_problem_json_when_the_bucket_is_empty(make_app: Any) -> None:
    client = search_client(make_app, "1/minute;burst=2", key="user")
    assert [client.get("/search", headers=ALICE).status_code for _ in range(2)] == [200, 200]
    r = client.get("/search", headers=ALICE)
    body = problem(r, 429, "rate_limited")
    assert 55 <= int(r.headers["Retry-After"]) <= 60
    assert 55 <= body["retry_after"] <= 60
    assert r.headers["RateLimit-Limit"] == "2"
    assert r.headers["RateLimit-Remaining"] == "0"
    assert 115 <= int(r.headers["RateLimit-Reset"]) <= 120


def test_successful_responses_carry_ratelimit_headers_but_no_retry_after(make_app: Any) -> None:
    client = search_client(make_app, "1/minute;burst=3", key="user")
    responses = [client.get("/search", headers=ALICE) for _ in range(3)]
    assert [r.headers["RateLimit-Limit"] for r in responses] == ["3", "3", "3"]
    assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0"]
    resets = [int(r.headers["RateLimit-Reset"]) for r in responses]
    assert 55 <= resets[0] <= 60 and 115 <= resets[1] <= 120 and 175 <= resets[2] <= 180
    assert all("Retry-After" not in r.headers for r in responses)


def test_ratelimit_headers_on_success_can_be_switched_off(make_app: Any) -> None:
    app, flashsale = host(make_app, FLASHSALE_RATELIMIT_HEADERS=False)

    @app.get("/search")
    @flashsale.limit("1/minute;burst=1", key="user")
    def search() -> str:
        return "results"

    client = app.test_client()
    ok = client.get("/search", headers=ALICE)
    assert ok.status_code == 200
    assert not any(h in ok.headers for h in RATELIMIT_HEADERS)
    refused = client.get("/search", headers=ALICE)
    problem(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"]
    assert all(h in refused.headers for h in RATELIMIT_HEADERS)


def test_views_without_limits_get_no_ratelimit_headers(make_app: Any) -> None:
    app, _ = host(make_app)

    @app.get("/plain")
    def plain() -> str:
        return "plain"

    r = app.test_client().get("/plain")
    assert r.status_code == 200
    assert not any(h in r.headers for h in (*RATELIMIT_HEADERS, "Retry-After"))


def test_the_decorator_keeps_the_view_name_docstring_and_signature(make_app: Any) -> None:
    _, flashsale = host(make_app)

    def show(item_id: int, *, verbose: bool = False) -> str:
        """Show one item."""
        return str(item_id)

    limited = flashsale.limit("10/second")(show)
    assert limited.__name__ == "show"
    assert limited.__doc__ == "Show one item."
    assert inspect.signature(limited) == inspect.signature(show)


def test_each_view_has_its_own_bucket_by_default(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.get("/a")
    @flashsale.limit("1/minute", key="global")
    def a() -> str:
        return "a"

    @app.get("/b")
    @flashsale.limit("1/minute", key="global")
    def b() -> str:
        return "b"

    client = app.test_client()
    assert client.get("/a").status_code == 200
    assert client.get("/b").status_code == 200
    assert client.get("/a").status_code == 429


def test_views_with_the_same_scope_share_a_bucket(make_app: Any) -> None:
    app, flashsale = host(make_app)
    shared = flashsale.limit("1/minute;burst=2", key="global", scope="reports")

    @app.get("/daily")
    @shared
    def daily() -> str:
        return "daily"

    @app.get("/weekly")
    @shared
    def weekly() -> str:
        return "weekly"

    client = app.test_client()
    assert [client.get(p).status_code for p in ("/daily", "/weekly", "/daily")] == [200, 200, 429]


def test_methods_restrict_a_limit_to_those_methods(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.route("/cart", methods=["GET", "POST"])
    @flashsale.limit("1/minute", key="user", methods=["post"])
    def cart() -> str:
        return request.method

    client = app.test_client()
    assert all(client.get("/cart", headers=ALICE).status_code == 200 for _ in range(3))
    assert client.post("/cart", headers=ALICE).status_code == 200
    assert client.post("/cart", headers=ALICE).status_code == 429


def test_a_method_view_can_be_limited_through_its_decorators(make_app: Any) -> None:
    app, flashsale = host(make_app)

    class Items(MethodView):
        decorators = [flashsale.limit("1/minute", key="user")]

        def get(self) -> str:
            return "items"

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    client = app.test_client()
    assert client.get("/items", headers=ALICE).status_code == 200
    assert client.get("/items", headers=ALICE).status_code == 429


def test_an_async_view_is_limited_and_awaited(make_app: Any) -> None:
    pytest.importorskip("asgiref")
    app, flashsale = host(make_app)

    @app.get("/slow")
    @flashsale.limit("1/minute", key="user")
    async def slow() -> str:
        return "awaited"

    client = app.test_client()
    first = client.get("/slow", headers=ALICE)
    assert (first.status_code, first.get_data(as_text=True)) == (200, "awaited")
    assert first.headers["RateLimit-Remaining"] == "0"
    problem(client.get("/slow", headers=ALICE), 429, "rate_limited")


# -- keys ---------------------------------------------------------------------


def test_user_key_gives_each_buyer_a_bucket(make_app: Any) -> None:
    client = search_client(make_app, "1/minute", key="user")
    assert client.get("/search", headers=ALICE).status_code == 200
    assert client.get("/search", headers=BOB).status_code == 200
    assert client.get("/search", headers=ALICE).status_code == 429


def test_user_key_does_not_limit_anonymous_requests(make_app: Any) -> None:
    client = search_client(make_app, "1/minute", key="user")
    assert all(client.get("/search").status_code == 200 for _ in range(3))


def test_default_key_is_the_buyer_else_the_client_address(make_app: Any) -> None:
    client = search_client(make_app, "1/minute")
    same_ip = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/search", environ_base=same_ip).status_code == 200
    assert client.get("/search", environ_base=same_ip).status_code == 429
    # Signed-in buyers behind that address have their own buckets.
    assert client.get("/search", headers=ALICE, environ_base=same_ip).status_code == 200
    assert client.get("/search", headers=BOB, environ_base=same_ip).status_code == 200


def test_global_key_is_one_bucket_for_everyone(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.get("/status")
    @flashsale.limit("1/minute;burst=2", key="global")
    def status() -> str:
        return "ok"

    client = app.test_client()
    assert client.get("/status", headers=ALICE).status_code == 200
    assert client.get("/status", headers=BOB).status_code == 200
    assert client.get("/status").status_code == 429


def test_a_callable_key_picks_the_bucket(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.get("/tenant/<name>")
    @flashsale.limit("1/minute", key=lambda: request.view_args["name"])  # type: ignore[index]
    def tenant(name: str) -> str:
        return name

    client = app.test_client()
    assert client.get("/tenant/acme").status_code == 200
    assert client.get("/tenant/initech").status_code == 200
    assert client.get("/tenant/acme").status_code == 429


def _ip_app(make_app: Any) -> tuple[Flask, Any]:
    app, flashsale = host(make_app)

    @app.get("/search")
    @flashsale.limit("1/minute", key=by_ip)
    def search() -> str:
        return request.remote_addr or "-"

    return app, app.test_client()


def test_ip_key_ignores_x_forwarded_for_without_proxyfix(make_app: Any) -> None:
    _, client = _ip_app(make_app)
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    first = client.get("/search", environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.1"})
    assert (first.status_code, first.get_data(as_text=True)) == (200, "10.0.0.1")
    # A different (spoofable) X-Forwarded-For does not buy a new bucket.
    spoofed = client.get("/search", environ_base=proxy, headers={"X-Forwarded-For": "198.51.100.2"})
    assert spoofed.status_code == 429


def test_ip_key_behind_proxyfix_uses_the_forwarded_client_address(make_app: Any) -> None:
    app, client = _ip_app(make_app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    proxy = {"REMOTE_ADDR": "10.0.0.1"}

    def get(forwarded_for: str) -> Any:
        return client.get("/search", environ_base=proxy, headers={"X-Forwarded-For": forwarded_for})

    first = get("198.51.100.1")
    assert (first.status_code, first.get_data(as_text=True)) == (200, "198.51.100.1")
    assert get("198.51.100.2").status_code == 200
    assert get("198.51.100.1").status_code == 429
    # ProxyFix(x_for=1) trusts only the last hop: a client-forged first entry is ignored.
    assert get("198.51.100.9, 198.51.100.1").status_code == 429


# -- stacking, exemptions ---------------------------------------------------


def _stacked_app(make_app: Any) -> tuple[Flask, FlashSale]:
    app, flashsale = host(make_app)

    @app.get("/search")
    @flashsale.limit("1/minute;burst=2", key="user")
    @flashsale.limit("1/minute;burst=3", key="global")
    def search() -> str:
        return "results"

    return app, flashsale


def test_stacked_limits_are_all_enforced(make_app: Any) -> None:
    app, _ = _stacked_app(make_app)
    client = app.test_client()
    assert [client.get("/search", headers=ALICE).status_code for _ in range(3)] == [200, 200, 429]
    # Alice's refused request took no token from the global bucket: Bob gets the last one.
    assert client.get("/search", headers=BOB).status_code == 200
    r = client.get("/search", headers=BOB)
    problem(r, 429, "rate_limited")
    assert r.headers["RateLimit-Limit"] == "3"


def test_stacked_limits_cost_one_round_trip(make_app: Any, command_counter: Any) -> None:
    app, _ = _stacked_app(make_app)
    client = app.test_client()
    client.get("/search", headers=ALICE)  # warm up: script loaded, connection open
    sent = command_counter.count(lambda: client.get("/search", headers=ALICE))
    assert len(sent) == 1 and sent[0].startswith("EVALSHA"), sent


def test_headers_report_the_stacked_bucket_closest_to_empty(make_app: Any) -> None:
    app, _ = _stacked_app(make_app)
    r = app.test_client().get("/search", headers=ALICE)
    assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("2", "1")


def test_exempt_when_skips_one_limit(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.get("/search")
    @flashsale.limit(
        "1/minute", key="user", exempt_when=lambda: request.headers.get("X-Staff") == "1"
    )
    def search() -> str:
        return "results"

    client = app.test_client()
    staff = {**ALICE, "X-Staff": "1"}
    assert all(client.get("/search", headers=staff).status_code == 200 for _ in range(3))
    assert client.get("/search", headers=ALICE).status_code == 200
    assert client.get("/search", headers=ALICE).status_code == 429


def test_the_exempt_hook_exempts_a_request_from_every_limit(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @flashsale.limit_exempt_when
    def is_staff() -> bool:
        return request.headers.get("X-Staff") == "1"

    @app.get("/search")
    @flashsale.limit("1/minute", key="user")
    @flashsale.limit("1/minute", key="global")
    def search() -> str:
        return "results"

    client = app.test_client()
    staff = {**ALICE, "X-Staff": "1"}
    responses = [client.get("/search", headers=staff) for _ in range(3)]
    assert all(r.status_code == 200 for r in responses)
    assert not any("RateLimit-Limit" in r.headers for r in responses)
    assert client.get("/search", headers=BOB).status_code == 200
    assert client.get("/search", headers=BOB).status_code == 429


def test_a_refusal_sends_request_rate_limited(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.get("/search")
    @flashsale.limit("1/minute", key="user", scope="search")
    def search() -> str:
        return "results"

    heard: list[dict[str, Any]] = []

    def receiver(sender: Flask, **kwargs: Any) -> None:
        heard.append({"sender": sender, **kwargs})

    client = app.test_client()
    with request_rate_limited.connected_to(receiver, app):
        client.get("/search", headers=ALICE)
        assert heard == []
        client.get("/search", headers=ALICE)
    assert len(heard) == 1
    assert heard[0]["sender"] is app
    assert heard[0]["key"] == "flashsale:rl:search:u:alice"
    assert 55 <= heard[0]["retry_after"] <= 60


# -- blueprints, apps, blocks -----------------------------------------------


def test_apply_to_a_blueprint_limits_each_of_its_views(make_app: Any) -> None:
    app, flashsale = host(make_app)
    bp = Blueprint("shop", __name__)
    flashsale.limit("1/minute", key="user").apply_to(bp)

    @bp.get("/a")
    def a() -> str:
        return "a"

    @bp.get("/b")
    def b() -> str:
        return "b"

    @app.get("/outside")
    def outside() -> str:
        return "outside"

    app.register_blueprint(bp, url_prefix="/shop")
    client = app.test_client()
    assert client.get("/shop/a", headers=ALICE).status_code == 200
    assert client.get("/shop/b", headers=ALICE).status_code == 200
    problem(client.get("/shop/a", headers=ALICE), 429, "rate_limited")
    assert all(client.get("/outside", headers=ALICE).status_code == 200 for _ in range(3))


def test_apply_to_a_blueprint_with_a_scope_shares_one_bucket(make_app: Any) -> None:
    app, flashsale = host(make_app)
    bp = Blueprint("shop", __name__)
    flashsale.limit("1/minute;burst=2", key="user", scope="shop").apply_to(bp)

    @bp.get("/a")
    def a() -> str:
        return "a"

    @bp.get("/b")
    def b() -> str:
        return "b"

    app.register_blueprint(bp, url_prefix="/shop")
    client = app.test_client()
    codes = [client.get(p, headers=ALICE).status_code for p in ("/shop/a", "/shop/b", "/shop/b")]
    assert codes == [200, 200, 429]


def test_apply_to_an_app_limits_every_request(make_app: Any) -> None:
    app, flashsale = host(make_app)
    flashsale.limit("1/minute;burst=2", key="user", scope="site").apply_to(app)

    @app.get("/a")
    def a() -> str:
        return "a"

    client = app.test_client()
    assert client.get("/a", headers=ALICE).status_code == 200
    assert client.get("/api/flash-sales", headers=ALICE).status_code == 200
    problem(client.get("/a", headers=ALICE), 429, "rate_limited")


def test_apply_to_a_registered_blueprint_by_name(make_app: Any) -> None:
    app, flashsale = host(make_app)
    flashsale.limit("1/minute", key="user", scope="api").apply_to(app, blueprint="flashsale")
    client = app.test_client()
    assert client.get("/api/flash-sales", headers=ALICE).status_code == 200
    problem(client.get("/api/flash-sales", headers=ALICE), 429, "rate_limited")


def test_a_limit_is_a_context_manager_for_part_of_a_view(make_app: Any) -> None:
    app, flashsale = host(make_app)
    export_limit = flashsale.limit("1/minute", key="user", scope="export")

    @app.get("/report")
    def report() -> str:
        if request.args.get("export"):
            with export_limit as result:
                assert result is not None and result.allowed
                return "exported"
        return "report"

    client = app.test_client()
    assert client.get("/report?export=1", headers=ALICE).status_code == 200
    assert client.get("/report", headers=ALICE).status_code == 200
    r = client.get("/report?export=1", headers=ALICE)
    problem(r, 429, "rate_limited")
    assert r.headers["Retry-After"]


def test_a_limit_raises_rate_limited_that_a_host_can_handle(make_app: Any) -> None:
    app, flashsale = host(make_app)

    @app.errorhandler(RateLimited)
    def slow_down(exc: RateLimited) -> tuple[str, int]:
        return f"slow down, retry in {exc.retry_after:g} s", 429

    @app.get("/search")
    @flashsale.limit("1/minute", key="user")
    def search() -> str:
        return "results"

    client = app.test_client()
    client.get("/search", headers=ALICE)
    r = client.get("/search", headers=ALICE)
    assert r.status_code == 429
    assert r.get_data(as_text=True).startswith("slow down, retry in")


# -- the site-wide API limit ------------------------------------------------


def test_site_wide_api_limit_is_off_by_default_and_costs_no_round_trip(
    make_app: Any, command_counter: Any
) -> None:
    app, flashsale = host(make_app)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
    client = app.test_client()
    client.get("/api/flash-sales/tee")
    sent = command_counter.count(lambda: client.get("/api/flash-sales/tee", headers=ALICE))
    assert not any("rl:" in c for c in sent), sent
    r = client.get("/api/flash-sales/tee", headers=ALICE)
    assert "RateLimit-Limit" not in r.headers


def test_site_wide_api_limit_throttles_each_buyer_across_the_api(make_app: Any) -> None:
    app, flashsale = host(make_app, FLASHSALE_API_RATE_LIMIT="1/minute;burst=3")

    @app.get("/host")
    def host_view() -> str:
        return "host"

    with app.app_context():
        flashsale.create_sale("tee", stock=5)
    client = app.test_client()
    first = client.get("/api/flash-sales", headers=ALICE)
    assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == ("3", "2")
    assert client.get("/api/flash-sales/tee", headers=ALICE).status_code == 200
    admitted = client.post("/api/flash-sales/tee/order", headers=ALICE)
    assert (admitted.status_code, admitted.get_json()["remaining"]) == (202, 4)
    r = client.post("/api/flash-sales/tee/order", headers=ALICE)
    problem(r, 429, "rate_limited")
    assert r.headers["Retry-After"]
    assert client.get("/api/flash-sales", headers=BOB).status_code == 200
    # The host's own views are not behind it.
    assert all(client.get("/host", headers=ALICE).status_code == 200 for _ in range(3))
    with app.app_context():  # the throttled attempt took nothing (read past the cache)
        state = flashsale.state()
        assert state.client.hget(state.keys.sale("tee"), "remaining") == "4"


def test_site_wide_api_limit_keys_anonymous_requests_by_address(make_app: Any) -> None:
    app, _ = host(make_app, FLASHSALE_API_RATE_LIMIT="1/minute")
    client = app.test_client()
    a, b = {"REMOTE_ADDR": "203.0.113.1"}, {"REMOTE_ADDR": "203.0.113.2"}
    assert client.get("/api/flash-sales", environ_base=a).status_code == 200
    assert client.get("/api/flash-sales", environ_base=b).status_code == 200
    problem(client.get("/api/flash-sales", environ_base=a), 429, "rate_limited")


def test_site_wide_api_limit_key_is_configurable(make_app: Any) -> None:
    app, _ = host(
        make_app, FLASHSALE_API_RATE_LIMIT="1/minute", FLASHSALE_API_RATE_LIMIT_KEY="global"
    )
    client = app.test_client()
    assert client.get("/api/flash-sales", headers=ALICE).status_code == 200
    problem(client.get("/api/flash-sales", headers=BOB), 429, "rate_limited")


def test_site_wide_api_limit_adds_one_round_trip(make_app: Any, command_counter: Any) -> None:
    app, flashsale = host(make_app, FLASHSALE_API_RATE_LIMIT="100/second")
    with app.app_context():
        flashsale.create_sale("tee", stock=5, per_user_limit=5)
    client = app.test_client()
    # Twice: the admission keeps the first connection for itself (the fast
    # path), so the second request's limit check opens the pool's next one.
    for _ in range(2):
        client.post("/api/flash-sales/tee/order", headers=ALICE)
    sent = command_counter.count(lambda: client.post("/api/flash-sales/tee/order", headers=ALICE))
    assert len(sent) == 2 and all(c.startswith("EVALSHA") for c in sent), sent


# -- outages ------------------------------------------------------------------


def _dead_redis_app(**config: Any) -> tuple[Flask, FlashSale]:
    from .redis_server import free_port

    return build_app(f"redis://127.0.0.1:{free_port()}/0", **config)


def test_redis_outage_in_a_host_view_limit_fails_closed_with_503() -> None:
    app, flashsale = _dead_redis_app()

    @app.get("/search")
    @flashsale.limit("10/second", key="user")
    def search() -> str:  # pragma: no cover - never reached
        return "results"

    r = app.test_client().get("/search", headers=ALICE)
    problem(r, 503, "backend_unavailable")
    assert r.headers["Retry-After"] == "1"


def test_redis_outage_in_the_site_wide_api_limit_is_503_not_500() -> None:
    app, _ = _dead_redis_app(FLASHSALE_API_RATE_LIMIT="10/second")
    r = app.test_client().get("/api/flash-sales", headers=ALICE)
    problem(r, 503, "backend_unavailable")
    assert r.headers["Retry-After"]


# -- memory mode --------------------------------------------------------------


def test_limits_work_in_memory_mode() -> None:
    app = Flask("memory-limits")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    flashsale = FlashSale(app)

    @app.get("/search")
    @flashsale.limit("1/minute;burst=2", key="global")
    def search() -> str:
        return "results"

    client = app.test_client()
    codes = [client.get("/search").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
