"""What the waiting room costs Redis: one round trip per join, next to none per poll."""

from __future__ import annotations

import math
import time
from typing import Any

from flask_flashsale import FlashSale
from flask_flashsale.waiting import PLACE_HEADER, REFRESH_SECONDS

from .helpers import PREFIX, CommandCounter, MakeApp

BUYERS = 300


def queued_app(make_app: MakeApp) -> tuple[Any, FlashSale]:
    """An app with sale "tee" (FIFO queue), its scripts already loaded in Redis and
    its events subscriber connected (those happen once per process, not per poll)."""
    app, flashsale = make_app()
    with app.app_context():
        flashsale.create_sale("warm-up", stock=1, fairness="fifo", admit_rate=1)
        flashsale.queue_status("warm-up", flashsale.join_queue("warm-up", "x").user_id)
        flashsale.create_sale("tee", stock=10, fairness="fifo", admit_rate=10)
        flashsale.get_sale("tee")
    subscriber = FlashSale.state(app).cache.subscriber
    assert subscriber is not None and subscriber.subscribed.wait(5)
    return app, flashsale


def test_joining_is_one_round_trip(make_app: MakeApp, command_counter: CommandCounter) -> None:
    app, _ = queued_app(make_app)
    client = app.test_client()
    responses: list[Any] = []

    def join() -> None:
        for i in range(BUYERS):
            responses.append(client.post(f"{PREFIX}/tee/queue", headers={"X-User": f"u{i}"}))

    sent = command_counter.count(join)
    assert {r.status_code for r in responses} == {200}
    assert [r.get_json()["position"] for r in responses] == list(range(1, BUYERS + 1))
    assert len(sent) == BUYERS
    assert {c.split(" ", 1)[0].upper() for c in sent} == {"EVALSHA"}


def test_polls_with_the_place_token_cost_at_most_one_call_per_refresh_interval(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, _ = queued_app(make_app)
    client = app.test_client()
    tokens = {}
    for i in range(BUYERS):
        joined = client.post(f"{PREFIX}/tee/queue", headers={"X-User": f"u{i}"})
        tokens[f"u{i}"] = joined.headers[PLACE_HEADER]
    responses: list[Any] = []
    elapsed: list[float] = []

    def poll() -> None:
        started = time.monotonic()
        for _ in range(5):
            for user, token in tokens.items():
                headers = {"X-User": user, PLACE_HEADER: token}
                responses.append(client.get(f"{PREFIX}/tee/queue", headers=headers))
        elapsed.append(time.monotonic() - started)

    sent = command_counter.count(poll)
    polls = len(responses)
    print(
        f"\n{polls} polls in {elapsed[0]:.2f} s sent {len(sent)} Redis commands "
        f"({len(sent) / polls:.4f} per poll)"
    )
    assert {r.status_code for r in responses} == {200}
    assert [r.get_json()["position"] for r in responses[:BUYERS]] == list(range(1, BUYERS + 1))
    assert len(sent) <= 1 + math.ceil(elapsed[0] / REFRESH_SECONDS)
    assert len(sent) < polls / 20
    assert {c.split(" ", 1)[0].upper() for c in sent} <= {"EVALSHA"}


def test_a_poll_without_the_place_token_is_one_round_trip(
    make_app: MakeApp, command_counter: CommandCounter
) -> None:
    app, _ = queued_app(make_app)
    client = app.test_client()
    for i in range(20):
        client.post(f"{PREFIX}/tee/queue", headers={"X-User": f"u{i}"})
    client.delete_cookie("flashsale_place", path=f"{PREFIX}/tee/queue")
    responses: list[Any] = []

    def poll() -> None:
        for i in range(20):
            responses.append(client.get(f"{PREFIX}/tee/queue", headers={"X-User": f"u{i}"}))
            client.delete_cookie("flashsale_place", path=f"{PREFIX}/tee/queue")

    sent = command_counter.count(poll)
    assert [r.get_json()["position"] for r in responses] == list(range(1, 21))
    assert len(sent) == 20
