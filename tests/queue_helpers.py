"""Helpers for the waiting-room tests: Redis time, joining crowds (threads or processes)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from flask_flashsale import FlashSale, QueueStatus

from .helpers import build_app, released_together


def ready_ms(status: QueueStatus, pass_ttl: float) -> int:
    """When a ready (or expired-pass) buyer's place was let through: its pass expiry - TTL."""
    assert status.pass_expires_at is not None
    return round(status.pass_expires_at.timestamp() * 1000 - pass_ttl * 1000)


def wait_until(when: datetime | float) -> None:
    """Sleep until the Unix time ``when`` (plus a little, so Redis is past it too)."""
    target = when.timestamp() if isinstance(when, datetime) else when
    time.sleep(max(0.0, target - time.time()) + 0.02)


def join_crowd(
    redis_url: str, sale_id: str, users: list[str], threads: int, config: dict[str, Any]
) -> list[tuple[str, int | None, str | None]]:
    """Every user joins once, from ``threads`` threads released together.

    Returns ``(user, position, place_token)`` per user. Top-level so that a
    spawned process can run it.
    """
    app, flashsale = build_app(redis_url, **config)

    def join(user: str) -> tuple[str, int | None, str | None]:
        s = flashsale.join_queue(sale_id, user)
        return user, s.position, s.place_token

    return released_together(app, users, threads, join)


def join_all(flashsale: FlashSale, sale_id: str, users: list[str]) -> dict[str, QueueStatus]:
    """Join every user in order (inside an app context); their answers by user."""
    return {user: flashsale.join_queue(sale_id, user) for user in users}


def order_crowd(
    redis_url: str,
    sale_id: str,
    attempts: list[tuple[str, str | None]],
    threads: int,
    config: dict[str, Any],
) -> list[tuple[str, str | None, str, str | None]]:
    """Each ``(user, pass)`` attempt orders once, from ``threads`` threads released together.

    Returns ``(user, pass, status, ticket_id)`` per attempt. Top-level so that a
    spawned process can run it.
    """
    app, flashsale = build_app(redis_url, **config)

    def attempt(user_pass: tuple[str, str | None]) -> tuple[str, str | None, str, str | None]:
        user, token = user_pass
        a = flashsale.place_order(sale_id, user, queue_pass=token)
        return user, token, a.status, a.ticket_id

    return released_together(app, attempts, threads, attempt)
