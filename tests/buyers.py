"""Buyer crowds for concurrency tests: run in threads, or in spawned processes."""

from __future__ import annotations

from typing import Any

from .helpers import build_app, released_together


def crowd(
    redis_url: str, sale_id: str, users: list[str], threads: int, config: dict[str, Any]
) -> list[tuple[str, str, str | None]]:
    """Every user in ``users`` tries to buy once, from ``threads`` threads released together.

    Returns ``(user, status, ticket_id)`` per attempt. Top-level so that a
    spawned process can run it.
    """
    app, flashsale = build_app(redis_url, **config)

    def attempt(user: str) -> tuple[str, str, str | None]:
        a = flashsale.place_order(sale_id, user)
        return user, a.status, a.ticket_id

    return released_together(app, users, threads, attempt)
