"""The waiting room as a buyer and a host see it: joining, polling, statuses, errors."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask, request

from flask_flashsale import (
    FlashSale,
    NoQueue,
    NotInQueue,
    QueueNotOpen,
    SaleNotFound,
    buyer_queued,
    buyer_ready,
)
from flask_flashsale.cli import flashsale_cli
from flask_flashsale.waiting import PLACE_COOKIE, PLACE_HEADER

from .helpers import ALICE, PREFIX, MakeApp, build_app, problem
from .queue_helpers import join_all, wait_until


def soon(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


# -- creating a sale with a waiting room ------------------------------------------


def test_a_sale_shows_its_fairness_admit_rate_and_when_the_queue_opens(
    flashsale: FlashSale, client: Any
) -> None:
    starts = datetime(2031, 5, 1, 9, 0, tzinfo=timezone.utc)
    sale = flashsale.create_sale(
        "tee", stock=5, starts_at=starts, fairness="lottery", admit_rate=50
    )
    assert (sale.fairness, sale.admit_rate) == ("lottery", 50)
    assert sale.queue_opens_at == starts - timedelta(minutes=15)
    shown = client.get(f"{PREFIX}/tee").get_json()
    assert shown["fairness"] == "lottery"
    assert shown["admit_rate"] == 50
    assert shown["queue_opens_at"] == "2031-05-01T08:45:00+00:00"


def test_a_sale_without_a_queue_says_fairness_none(flashsale: FlashSale) -> None:
    sale = flashsale.create_sale("tee", stock=5)
    assert (sale.fairness, sale.admit_rate, sale.queue_opens_at) == ("none", None, None)
    assert sale.to_dict()["fairness"] == "none"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fairness": "fifo"}, "admit_rate"),
        ({"fairness": "fifo", "admit_rate": 0}, "admit_rate"),
        ({"fairness": "fifo", "admit_rate": True}, "admit_rate"),
        ({"fairness": "fifo", "admit_rate": float("inf")}, "admit_rate"),
        ({"fairness": "lottery", "admit_rate": 5}, "starts_at"),
        ({"fairness": "first-come"}, "fairness"),
        ({"admit_rate": 5}, "need fairness"),
        ({"queue_opens_at": 2_000_000_000}, "need fairness"),
        (
            {
                "fairness": "fifo",
                "admit_rate": 5,
                "starts_at": 2_000_000_000,
                "queue_opens_at": 2_000_000_001,
            },
            "queue_opens_at",
        ),
    ],
)
def test_bad_waiting_room_settings_are_refused_at_create_time(
    flashsale: FlashSale, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        flashsale.create_sale("tee", stock=5, **kwargs)
    assert flashsale.get_sale("tee") is None


# -- joining and polling -------------------------------------------------------------


def test_joining_gives_places_in_order_of_joining(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    answers = join_all(flashsale, "tee", ["ann", "bob", "cid"])
    assert [a.position for a in answers.values()] == [1, 2, 3]
    assert answers["ann"].status == "ready" and answers["ann"].pass_token
    assert [answers["bob"].status, answers["cid"].status] == ["waiting", "waiting"]
    assert [answers["bob"].ahead, answers["cid"].ahead] == [0, 1]
    assert 0 < answers["bob"].eta_seconds <= 1 < answers["cid"].eta_seconds <= 2  # type: ignore[operator]


def test_a_buyer_joining_a_hundred_times_keeps_one_place(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    flashsale.join_queue("tee", "ann")
    answers = [flashsale.join_queue("tee", "bob") for _ in range(100)]
    assert {a.position for a in answers} == {2}
    assert redis_client.hlen("flashsale:{tee}:places") == 2
    assert redis_client.hget("flashsale:{tee}:queue", "n") == "2"


def test_polling_answers_the_same_place_with_or_without_the_place_token(
    flashsale: FlashSale,
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    join_all(flashsale, "tee", ["ann", "bob"])
    joined = flashsale.join_queue("tee", "cid")
    with_token = flashsale.queue_status("tee", "cid", place_token=joined.place_token)
    without = flashsale.queue_status("tee", "cid")
    assert with_token.position == without.position == 3
    assert with_token.status == without.status == "waiting"


def test_a_place_token_of_another_buyer_is_not_taken_for_ones_own(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    ann = flashsale.join_queue("tee", "ann")
    flashsale.join_queue("tee", "bob")
    assert flashsale.queue_status("tee", "bob", place_token=ann.place_token).position == 2


def test_a_buyer_who_never_joined_gets_not_in_queue(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    with pytest.raises(NotInQueue):
        flashsale.queue_status("tee", "ann")


def test_the_queue_of_a_sale_without_one_answers_no_queue(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10)
    with pytest.raises(NoQueue):
        flashsale.join_queue("tee", "ann")
    with pytest.raises(NoQueue):
        flashsale.queue_status("tee", "ann")
    with pytest.raises(SaleNotFound):
        flashsale.join_queue("nope", "ann")


def test_joining_before_the_queue_opens_is_refused_with_retry_after(
    flashsale: FlashSale, client: Any
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=5, starts_at=soon(3600))
    with pytest.raises(QueueNotOpen) as refused:
        flashsale.join_queue("tee", "ann")
    assert 44 * 60 < refused.value.retry_after <= 45 * 60  # type: ignore[operator]
    r = client.post(f"{PREFIX}/tee/queue", headers=ALICE)
    doc = problem(r, 409, "queue_not_open")
    assert int(r.headers["Retry-After"]) == 45 * 60
    assert doc["opens_at"]


def test_fifo_buyers_who_join_before_the_start_wait_for_it(flashsale: FlashSale) -> None:
    starts = soon(0.6)
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=2, starts_at=starts)
    answers = join_all(flashsale, "tee", ["ann", "bob", "cid"])
    assert [a.status for a in answers.values()] == ["waiting"] * 3
    assert [a.ahead for a in answers.values()] == [0, 1, 2]
    wait_until(starts)
    now = [flashsale.queue_status("tee", u, place_token=a.place_token) for u, a in answers.items()]
    # A burst of admit_rate (2) at the start, then one every 1/admit_rate s.
    assert [s.status for s in now] == ["ready", "ready", "waiting"]


def test_when_the_sale_ends_everyone_sees_ended_and_nobody_joins(flashsale: FlashSale) -> None:
    ends = soon(0.5)
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1, ends_at=ends)
    answers = join_all(flashsale, "tee", ["ann", "bob"])
    wait_until(ends)
    for user, answer in answers.items():
        status = flashsale.queue_status("tee", user, place_token=answer.place_token)
        assert (status.status, status.pass_token, status.poll_after) == ("ended", None, None)
    late = flashsale.join_queue("tee", "cid")
    assert (late.status, late.position) == ("ended", None)


def test_a_sold_out_sale_takes_no_new_place(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=1, fairness="fifo", admit_rate=10)
    ann = flashsale.join_queue("tee", "ann")
    assert flashsale.place_order("tee", "ann", queue_pass=ann.pass_token).status == "queued"
    late = flashsale.join_queue("tee", "bob")
    assert (late.status, late.position, late.place_token) == ("sold_out", None, None)


# -- expiry and joining again --------------------------------------------------------


def test_a_pass_that_lapsed_unused_shows_expired_and_joining_again_queues_at_the_back(
    make_app: MakeApp,
) -> None:
    app, flashsale = make_app(FLASHSALE_PASS_TTL=0.3)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=2)
        answers = join_all(flashsale, "tee", ["ann", "bob", "cid"])
        assert answers["ann"].status == "ready"
        time.sleep(0.35)
        lapsed = flashsale.queue_status("tee", "ann", place_token=answers["ann"].place_token)
        assert (lapsed.status, lapsed.pass_token, lapsed.position) == ("expired", None, 1)
        assert flashsale.join_queue("tee", "ann").position == 4
        assert flashsale.join_queue("tee", "ann").position == 4


def test_an_early_lottery_place_that_lapsed_is_replaced_at_the_back(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_PASS_TTL=0.3)
    starts = soon(0.5)
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="lottery", admit_rate=50, starts_at=starts)
        join_all(flashsale, "tee", ["ann", "bob"])
        wait_until(starts)
        assert flashsale.queue_status("tee", "ann").status == "ready"
        time.sleep(0.35)
        assert flashsale.queue_status("tee", "ann").status == "expired"
        assert flashsale.join_queue("tee", "ann").position == 3


# -- the sale's queue over its life --------------------------------------------------


def test_recreating_a_sale_in_the_same_mode_keeps_its_queue(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    join_all(flashsale, "tee", ["ann", "bob"])
    flashsale.create_sale("tee", stock=20, fairness="fifo", admit_rate=5)
    assert flashsale.queue_status("tee", "bob").position == 2
    assert flashsale.join_queue("tee", "cid").position == 3


def test_switching_the_mode_starts_a_new_queue(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    join_all(flashsale, "tee", ["ann", "bob"])
    flashsale.create_sale("tee", stock=10, fairness="lottery", admit_rate=1, starts_at=soon(60))
    with pytest.raises(NotInQueue):
        flashsale.queue_status("tee", "bob")


def test_deleting_a_sale_removes_its_queue(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    join_all(flashsale, "tee", ["ann", "bob"])
    assert flashsale.delete_sale("tee")
    assert redis_client.keys("flashsale:{tee}:*") == []


def test_turning_the_queue_off_lets_orders_in_without_a_pass(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    assert flashsale.place_order("tee", "ann").status == "pass_required"
    flashsale.create_sale("tee", stock=10)
    assert flashsale.place_order("tee", "ann").status == "queued"


# -- signals ------------------------------------------------------------------------


def test_buyer_queued_is_sent_for_a_new_place_only(app: Flask, flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    seen: list[dict[str, Any]] = []

    def on_queued(sender: Flask, **kw: Any) -> None:
        assert sender is app
        seen.append(kw)

    with buyer_queued.connected_to(on_queued):
        join_all(flashsale, "tee", ["ann", "bob", "ann"])
    assert seen == [
        {"sale_id": "tee", "user_id": "ann", "position": 1},
        {"sale_id": "tee", "user_id": "bob", "position": 2},
    ]


def test_buyer_ready_is_sent_once_to_a_buyer_who_keeps_the_place_token(
    app: Flask, flashsale: FlashSale
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=20)
    seen: list[dict[str, Any]] = []
    with buyer_ready.connected_to(lambda sender, **kw: seen.append(kw)):
        token = flashsale.join_queue("tee", "ann").place_token
        for _ in range(5):
            token = flashsale.queue_status("tee", "ann", place_token=token).place_token
    assert [(s["user_id"], s["position"]) for s in seen] == [("ann", 1)]
    assert seen[0]["pass_expires_at"] > datetime.now(timezone.utc)


# -- over HTTP -----------------------------------------------------------------------


def queue_json(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    doc: dict[str, Any] = response.get_json()
    assert set(doc) == {
        "status",
        "position",
        "ahead",
        "eta_seconds",
        "poll_after",
        "pass",
        "pass_expires_at",
    }
    return doc


def test_http_join_and_poll(flashsale: FlashSale, client: Any) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    first = queue_json(client.post(f"{PREFIX}/tee/queue", headers=ALICE))
    assert (first["status"], first["position"]) == ("ready", 1)
    assert first["pass"] and datetime.fromisoformat(first["pass_expires_at"])
    joined = client.post(f"{PREFIX}/tee/queue", headers={"X-User": "bob"})
    bob = queue_json(joined)
    assert (bob["status"], bob["position"], bob["ahead"], bob["pass"]) == ("waiting", 2, 0, None)
    assert bob["poll_after"] > 0
    token = joined.headers[PLACE_HEADER]
    polled = queue_json(
        client.get(f"{PREFIX}/tee/queue", headers={"X-User": "bob", PLACE_HEADER: token})
    )
    assert polled["position"] == 2


def test_the_place_token_comes_as_a_cookie_scoped_to_the_queue(
    flashsale: FlashSale, client: Any
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    r = client.post(f"{PREFIX}/tee/queue", headers=ALICE)
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{PLACE_COOKIE}={r.headers[PLACE_HEADER]};")
    assert f"Path={PREFIX}/tee/queue" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get_cookie(PLACE_COOKIE, path=f"{PREFIX}/tee/queue") is not None
    again = client.get(f"{PREFIX}/tee/queue", headers=ALICE)  # the cookie goes back
    assert queue_json(again)["position"] == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("POST", "/tee/queue", {}, 401, "identity_required"),
        ("GET", "/tee/queue", {}, 401, "identity_required"),
        ("GET", "/tee/queue", ALICE, 404, "not_in_queue"),
        ("POST", "/plain/queue", ALICE, 409, "no_queue"),
        ("GET", "/plain/queue", ALICE, 409, "no_queue"),
        ("POST", "/nope/queue", ALICE, 404, "sale_not_found"),
        ("GET", "/bad%20id/queue", ALICE, 404, "sale_not_found"),
        ("POST", "/tee/queue", {**ALICE, "Origin": "https://evil.example"}, 403, "cross_origin"),
        (
            "POST",
            "/tee/queue",
            {**ALICE, "Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        ("PUT", "/tee/queue", ALICE, 405, "method_not_allowed"),
        ("POST", "/tee/order", ALICE, 403, "pass_required"),
        ("POST", "/tee/order", {**ALICE, "FlashSale-Pass": "x"}, 403, "pass_invalid"),
    ],
)
def test_every_refusal_is_problem_json(
    flashsale: FlashSale,
    client: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    flashsale.create_sale("plain", stock=10)
    problem(client.open(f"{PREFIX}{path}", method=method, headers=headers), status, code)


def test_a_405_on_the_queue_lists_get_and_post(flashsale: FlashSale, client: Any) -> None:
    flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    r = client.delete(f"{PREFIX}/tee/queue", headers=ALICE)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {"GET", "HEAD", "POST", "OPTIONS"}


def test_the_api_rate_limit_applies_to_the_queue(make_app: MakeApp) -> None:
    app, flashsale = make_app(FLASHSALE_API_RATE_LIMIT="2/minute")
    with app.app_context():
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=1)
    client = app.test_client()
    assert client.post(f"{PREFIX}/tee/queue", headers=ALICE).status_code == 200
    assert client.get(f"{PREFIX}/tee/queue", headers=ALICE).status_code == 200
    problem(client.get(f"{PREFIX}/tee/queue", headers=ALICE), 429, "rate_limited")


def test_redis_down_is_a_503_on_the_queue(redis_url: str) -> None:
    app, _ = build_app("redis://127.0.0.1:1/0", FLASHSALE_REDIS_SOCKET_TIMEOUT=0.2)
    problem(
        app.test_client().post(f"{PREFIX}/tee/queue", headers=ALICE), 503, "backend_unavailable"
    )


# -- memory:// and the CLI -----------------------------------------------------------


def test_the_waiting_room_works_in_memory_mode() -> None:
    app = Flask("memory-queue")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    flashsale = FlashSale(app)
    flashsale.identity_loader(lambda: request.headers.get("X-User"))
    with app.app_context():
        flashsale.create_sale("tee", stock=1, fairness="fifo", admit_rate=1)
    client = app.test_client()
    ann = queue_json(client.post(f"{PREFIX}/tee/queue", headers=ALICE))
    bob = queue_json(client.post(f"{PREFIX}/tee/queue", headers={"X-User": "bob"}))
    assert (ann["status"], bob["status"], bob["position"]) == ("ready", "waiting", 2)
    problem(client.post(f"{PREFIX}/tee/order", headers=ALICE), 403, "pass_required")
    ordered = client.post(f"{PREFIX}/tee/order", headers={**ALICE, "FlashSale-Pass": ann["pass"]})
    assert ordered.status_code == 202


def test_cli_create_with_a_lottery_and_status_shows_the_queue(make_app: MakeApp) -> None:
    app, flashsale = make_app()
    runner = app.test_cli_runner()
    starts = soon(0.4)
    created = runner.invoke(
        flashsale_cli,
        [
            "create",
            "tee",
            "--stock",
            "5",
            "--fairness",
            "lottery",
            "--admit-rate",
            "50",
            "--starts-at",
            starts.isoformat(),
        ],
    )
    assert created.exit_code == 0, created.output
    with app.app_context():
        sale = flashsale.get_sale("tee")
        assert sale is not None and (sale.fairness, sale.admit_rate) == ("lottery", 50)
        answers = join_all(flashsale, "tee", ["ann", "bob", "cid"])
        wait_until(starts)
        ann = flashsale.queue_status("tee", "ann", place_token=answers["ann"].place_token)
        assert flashsale.place_order("tee", "ann", queue_pass=ann.pass_token).ok
    shown = runner.invoke(flashsale_cli, ["status"])
    assert shown.exit_code == 0, shown.output
    [line] = [x for x in shown.output.splitlines() if "queue" in x and "lottery" in x]
    assert "joined 3" in line and "let through 3" in line and "waiting 0" in line
    assert "passes used 1" in line
    as_json = runner.invoke(flashsale_cli, ["status", "--json"])
    [doc] = __import__("json").loads(as_json.output)["sales"]
    assert doc["queue"] == {
        "fairness": "lottery",
        "admit_rate": 50,
        "joined": 3,
        "waiting": 0,
        "let_through": 3,
        "passes_used": 1,
        "drawn": True,
    }


def test_cli_create_refuses_a_queue_without_admit_rate(make_app: MakeApp) -> None:
    app, _ = make_app()
    result = app.test_cli_runner().invoke(
        flashsale_cli, ["create", "tee", "--stock", "5", "--fairness", "fifo"]
    )
    assert result.exit_code != 0
    assert "admit_rate" in result.output and "Traceback" not in result.output


def test_the_openapi_document_describes_the_queue_and_the_pass(client: Any) -> None:
    doc = client.get(f"{PREFIX}/openapi.json").get_json()
    queue = doc["paths"][f"{PREFIX}/{{sale_id}}/queue"]
    assert queue["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/QueueStatus"
    }
    assert {"401", "403", "404", "409", "429", "503"} <= set(queue["post"]["responses"])
    assert {"401", "404", "409", "503"} <= set(queue["get"]["responses"])
    assert PLACE_HEADER in queue["get"]["responses"]["200"]["headers"]
    assert [p["name"] for p in queue["get"]["parameters"] if p["in"] == "header"] == [PLACE_HEADER]
    fields = doc["components"]["schemas"]["QueueStatus"]["properties"]
    assert set(fields) == {
        "status",
        "position",
        "ahead",
        "eta_seconds",
        "poll_after",
        "pass",
        "pass_expires_at",
    }
    order = doc["paths"][f"{PREFIX}/{{sale_id}}/order"]["post"]
    assert {"FlashSalePass": []} in order["security"] and {} in order["security"]
    scheme = doc["components"]["securitySchemes"]["FlashSalePass"]
    assert (scheme["in"], scheme["name"]) == ("header", "FlashSale-Pass")
    codes = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {"pass_required", "pass_invalid", "no_queue", "not_in_queue", "queue_not_open"} <= codes
    assert "fairness" in doc["components"]["schemas"]["Sale"]["properties"]


def test_cli_create_takes_when_the_queue_opens(make_app: MakeApp) -> None:
    app, _ = make_app()
    result = app.test_cli_runner().invoke(
        flashsale_cli,
        [
            "create",
            "tee",
            "--stock",
            "5",
            "--fairness",
            "fifo",
            "--admit-rate",
            "2.5",
            "--starts-at",
            "2031-05-01T09:00:00+00:00",
            "--queue-opens-at",
            "2031-05-01T08:00:00+00:00",
        ],
    )
    assert result.exit_code == 0, result.output
    printed = __import__("json").loads(result.output)
    assert (printed["fairness"], printed["admit_rate"]) == ("fifo", 2.5)
    assert printed["queue_opens_at"] == "2031-05-01T08:00:00+00:00"
