"""Helpers for the waiting-room tests: Redis time, joining crowds (threads or processes)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from flask_flashsale import FlashSale, QueueStatus

from .helpers import build_app


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
    barrier = threading.Barrier(threads)

    def join(chunk: list[str]) -> list[tuple[str, int | None, str | None]]:
        out = []
        with app.app_context():
            barrier.wait()
            for user in chunk:
                s = flashsale.join_queue(sale_id, user)
                out.append((user, s.position, s.place_token))
        return out

    chunks = [users[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for rs in pool.map(join, chunks) for r in rs]


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
    barrier = threading.Barrier(threads)

    def attempt(
        chunk: list[tuple[str, str | None]],
    ) -> list[tuple[str, str | None, str, str | None]]:
        out = []
        with app.app_context():
            barrier.wait()
            for user, token in chunk:
                a = flashsale.place_order(sale_id, user, queue_pass=token)
                out.append((user, token, a.status, a.ticket_id))
        return out

    chunks = [attempts[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for rs in pool.map(attempt, chunks) for r in rs]
