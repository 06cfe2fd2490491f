"""Buyer crowds for concurrency tests: run in threads, or in spawned processes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .helpers import build_app


def crowd(
    redis_url: str, sale_id: str, users: list[str], threads: int, config: dict[str, Any]
) -> list[tuple[str, str, str | None]]:
    """Every user in ``users`` tries to buy once, from ``threads`` threads released together.

    Returns ``(user, status, ticket_id)`` per attempt. Top-level so that a
    spawned process can run it.
    """
    app, flashsale = build_app(redis_url, **config)
    barrier = threading.Barrier(threads)

    def attempt(chunk: list[str]) -> list[tuple[str, str, str | None]]:
        out = []
        with app.app_context():
            barrier.wait()
            for user in chunk:
                a = flashsale.place_order(sale_id, user)
                out.append((user, a.status, a.ticket_id))
        return out

    chunks = [users[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for rs in pool.map(attempt, chunks) for r in rs]
