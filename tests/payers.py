"""Payers and buyers for payment races, run in spawned processes (top-level functions)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, PaymentRefused, PaymentTooLate

from .helpers import build_app, redis_ms

#: The app of this payer process, built once by :func:`init` (a pool initializer).
_APP: list[tuple[Flask, FlashSale]] = []


def init(redis_url: str) -> None:
    """Build this process's app once, before any work is handed to it."""
    _APP.append(build_app(redis_url))


def pay_all(
    redis_url: str, tickets: list[str], start_ms: int, pause: float, seed: int
) -> list[tuple[str, str]]:
    """From Redis time ``start_ms`` on, ``mark_paid`` every ticket once, in a random order.

    Returns ``(ticket_id, outcome)``: ``paid``, ``too_late`` or ``refused``.
    """
    app, ext = _APP[0]
    order = list(tickets)
    random.Random(seed).shuffle(order)
    client = redis_lib.Redis.from_url(redis_url)
    while redis_ms(client) < start_ms:
        time.sleep(0.001)
    client.close()
    out = []
    with app.app_context():
        for ticket_id in order:
            try:
                ext.mark_paid(ticket_id)
                out.append((ticket_id, "paid"))
            except PaymentTooLate:
                out.append((ticket_id, "too_late"))
            except PaymentRefused:
                out.append((ticket_id, "refused"))
            time.sleep(pause)
    return out


def shop_crowd(
    redis_url: str, sale_id: str, users: list[str], threads: int, seconds: float, seed: int
) -> dict[str, Any]:
    """Buyers who keep trying for ``seconds``; about a third of those admitted pay.

    A buyer whose hold expired (or whose payment came too late) may buy again.
    Returns counts of admissions and payment outcomes, and the tickets paid.
    """
    app, ext = build_app(redis_url)
    counts: dict[str, int] = {}
    paid: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def buyer(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with app.app_context():
            while time.monotonic() < deadline:
                admission = ext.place_order(sale_id, rng.choice(users))
                outcome = admission.status
                if admission.status == "queued" and rng.random() < 0.35:
                    assert admission.ticket_id is not None
                    time.sleep(rng.uniform(0, 0.4))  # the buyer takes a while to pay
                    try:
                        ext.mark_paid(admission.ticket_id)
                        outcome = "paid"
                        with lock:
                            paid.append(admission.ticket_id)
                    except PaymentTooLate:
                        outcome = "too_late"
                with lock:
                    counts[outcome] = counts.get(outcome, 0) + 1
                time.sleep(rng.uniform(0, 0.01))

    pool = [threading.Thread(target=buyer, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 30)
    return {"counts": counts, "paid": paid}
