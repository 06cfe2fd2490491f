"""An order that kills its worker every time (a poison order) under a supervisor.

A segfault or an OOM kill inside the host's hook for one order, with a
supervisor (systemd, supervisord) restarting the worker each time: the poison
order is given up after it was the order in hand when its worker died
``FLASHSALE_MAX_ATTEMPTS`` times (plus the first death, inside a batch, which
cannot be pinned on one order), and only then; every other order (its
batch-mates included) is confirmed; an order whose hook returned is never
compensated; so the stock given back is exactly the poison order's, and late
buyers who take it never push the host's rows above the stock.

Real ``flask flashsale worker`` processes on the real test Redis, with the
host app of ``tests/worker_host.py`` (SQLite rows keyed on ``order.id``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale
from flask_flashsale.worker import Worker

from .worker_host import check_poison_given_up_alone, host_with_orders, rows, supervise

STOCK = 60
POISON = 10  # index of the buyer whose order kills the worker
MAX_ATTEMPTS = 3
STREAM = "flashsale:{drop}:orders"


def poison_env(batch: int) -> dict[str, str]:
    """The environment of workers whose hook kills them on buyer ``POISON``'s order."""
    return {
        "POISON_USER": f"user{POISON}",
        "MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "WORKER_BATCH": str(batch),
    }


@pytest.fixture
def host(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, FlashSale, list[str]]]:
    """The host app (in this process, no poison here) with STOCK orders admitted."""
    monkeypatch.setenv("MAX_ATTEMPTS", str(MAX_ATTEMPTS))
    yield host_with_orders(tmp_path, redis_url, monkeypatch, STOCK)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [32, 1], ids=["batch32", "batch1"])
def test_a_poison_order_is_given_up_alone_and_the_host_never_exceeds_stock(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
    batch: int,
) -> None:
    app, ext, tickets = host
    db = tmp_path / "host.sqlite3"
    poison = tickets[POISON]

    exits = supervise(tmp_path, redis_url, redis_client, poison_env(batch))

    print(f"\npoison order, batch {batch}: exits={exits}")
    # The worker died on the poison order: once in a batch (which cannot pin
    # the death on one order: the batch's orders are then claimed and run one
    # at a time), then MAX_ATTEMPTS times as the marked order in hand, then it
    # was given up without its hook being called again.
    assert exits == [17] * (MAX_ATTEMPTS + 1) + [0]
    check_poison_given_up_alone(
        app, ext, tickets, poison, redis_client, db, stock=STOCK, hook_calls=MAX_ATTEMPTS + 1
    )


def test_an_order_whose_hook_returned_is_never_compensated_for_its_worker_dying(
    host: tuple[Flask, FlashSale, list[str]],
    tmp_path: Path,
    redis_url: str,
    redis_client: redis_lib.Redis,
) -> None:
    """Orders read by workers that died before confirming them, again and again."""
    app, ext, tickets = host
    # Workers that read the whole queue and die before confirming anything,
    # more times than FLASHSALE_MAX_ATTEMPTS: as if each had crashed right
    # after its hooks returned, or before starting them.
    redis_client.xgroup_create(STREAM, "workers", id="0")
    for i in range(MAX_ATTEMPTS + 2):
        redis_client.xautoclaim(STREAM, "workers", f"ghost{i}", 0, "0-0", count=STOCK)
        redis_client.xreadgroup("workers", f"ghost{i}", {STREAM: ">"}, count=STOCK)
    time.sleep(0.6)  # past FLASHSALE_CLAIM_IDLE (0.5 s): the ghosts' orders are claimable

    Worker(app, name="rescuer", burst=True).run()

    with app.app_context():
        status = Counter(ext.get_ticket(t).status for t in tickets)  # type: ignore[union-attr]
    assert status == Counter({"confirmed": STOCK})
    assert redis_client.xlen("flashsale:{drop}:dead") == 0
    assert len(rows(tmp_path / "host.sqlite3", "SELECT id FROM orders")) == STOCK
