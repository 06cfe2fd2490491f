"""The extension under ``gevent.monkey.patch_all()``, in a fresh interpreter.

``python -m tests.gevent_probe SCENARIO REDIS_URL`` patches first (before
anything else is imported, as gevent requires), runs one scenario with many
greenlets through the Flask test client and the public API, and prints one
line ``RESULT <json>`` of what it saw; tests/test_gevent.py asserts on it.
Monkey patching is for good: it must never happen in the pytest process.
"""

from __future__ import annotations

import os
import sys

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, request  # noqa: E402

from flask_flashsale import FlashSale  # noqa: E402

PREFIX = "/api/flash-sales"


def build(redis_url: str, **config: Any) -> tuple[Flask, FlashSale]:
    """A host app; the buyer comes from ``X-User``."""
    app = Flask("gevent-probe")
    app.config.update({"SECRET_KEY": "probe", "FLASHSALE_REDIS_URL": redis_url,
                       "FLASHSALE_INLINE_WORKER": False, **config})
    ext = FlashSale(app)
    ext.identity_loader(lambda: request.headers.get("X-User"))
    return app, ext


def poll(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` (yielding to other greenlets) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def crowd(redis_url: str) -> dict[str, Any]:
    """200 greenlets order 20 units over a pool of 2 connections (they queue for it)."""
    import gevent.pool

    strategy = os.environ.get("PROBE_STRATEGY", "lua")
    app, ext = build(redis_url, FLASHSALE_REDIS_POOL_SIZE=2, FLASHSALE_REDIS_SOCKET_TIMEOUT=5,
                     FLASHSALE_REDIS_POOL_TIMEOUT=5, FLASHSALE_INVENTORY_STRATEGY=strategy,
                     FLASHSALE_LOCK_WAIT=30, FLASHSALE_OPTIMISTIC_RETRIES=500)
    with app.app_context():
        ext.create_sale("tee", stock=20)
    client = app.test_client()

    def order(n: int) -> str:
        r = client.post(f"{PREFIX}/tee/order", headers={"X-User": f"buyer{n}"})
        return f"{r.status_code} {r.get_json().get('code', '')}".strip()

    statuses = Counter(gevent.pool.Pool(200).map(order, range(200)))
    remaining = FlashSale.state(app).client.hget("flashsale:{tee}:sale", "remaining")
    return {"statuses": dict(statuses), "remaining": remaining}


def subscriber(redis_url: str) -> dict[str, Any]:
    """A sold-out flag kept for 60 s is dropped by a restock made by another app."""
    app, _ = build(redis_url, FLASHSALE_CACHE_TTL=60)
    admin_app, admin = build(redis_url, FLASHSALE_CACHE_TTL=0)
    with admin_app.app_context():
        admin.create_sale("tee", stock=1)
    client = app.test_client()
    first = client.post(f"{PREFIX}/tee/order", headers={"X-User": "a"}).status_code
    second = client.post(f"{PREFIX}/tee/order", headers={"X-User": "b"}).status_code
    subscribed = FlashSale.state(app).cache.subscriber.subscribed.wait(10)
    with admin_app.app_context():
        admin.restock("tee", 5)
    seen = poll(lambda: client.post(f"{PREFIX}/tee/order",
                                    headers={"X-User": "c"}).status_code == 202)
    return {"first": first, "second": second, "subscribed": subscribed,
            "restock_seen": seen}


def lock(redis_url: str) -> dict[str, Any]:
    """A greenlet waiting for a held lock lets the others serve orders meanwhile."""
    import gevent
    import gevent.event

    app, ext = build(redis_url)
    with app.app_context():
        ext.create_sale("tee", stock=100)
    held, release = gevent.event.Event(), gevent.event.Event()

    def holder() -> None:
        with app.app_context(), ext.lock("shared", timeout=30):
            held.set()
            release.wait(30)

    def waiter() -> int:
        with app.app_context(), ext.lock("shared", timeout=30, blocking_timeout=30) as token:
            return token

    first = gevent.spawn(holder)
    held.wait(10)
    second = gevent.spawn(waiter)
    gevent.sleep(0.05)  # the waiter is in its polling loop
    client = app.test_client()
    orders = [client.post(f"{PREFIX}/tee/order", headers={"X-User": f"u{n}"}).status_code
              for n in range(10)]
    waiting_meanwhile = not second.ready()
    release.set()
    token = second.get(timeout=30)
    first.join(10)
    return {"orders": orders, "waiter_still_waiting": waiting_meanwhile, "token": token}


def breaker(redis_url: str) -> dict[str, Any]:
    """Redis unreachable: every greenlet gets a 503 and the breaker opens."""
    import gevent.pool

    from tests.redis_server import free_port

    app, _ = build(f"redis://127.0.0.1:{free_port()}/0", FLASHSALE_BREAKER_FAIL_MAX=3)
    client = app.test_client()

    def order(n: int) -> str:
        r = client.post(f"{PREFIX}/tee/order", headers={"X-User": f"buyer{n}"})
        return f"{r.status_code} {r.get_json().get('code', '')}"

    statuses = Counter(gevent.pool.Pool(20).map(order, range(40)))
    state = FlashSale.state(app).breaker
    return {"statuses": dict(statuses), "breaker": state.state if state else None}


def memory(redis_url: str) -> dict[str, Any]:
    """``memory://``: the inline worker (a greenlet) confirms orders taken meanwhile."""
    app, ext = build("memory://", FLASHSALE_INLINE_WORKER=True)
    handled: list[str] = []
    ext.order_handler(lambda order: handled.append(order.id))
    with app.app_context():
        ext.create_sale("tee", stock=10)
    client = app.test_client()
    tickets = [client.post(f"{PREFIX}/tee/order", headers={"X-User": f"u{n}"}).get_json()
               ["ticket_id"] for n in range(10)]

    def confirmed() -> int:
        with app.app_context():
            found = [ext.get_ticket(t) for t in tickets]
        return sum(1 for f in found if f is not None and f.status == "confirmed")

    done = poll(lambda: confirmed() == len(tickets))
    return {"confirmed": confirmed(), "all_confirmed": done, "handled": len(set(handled))}


def ratelimit(redis_url: str) -> dict[str, Any]:
    """A ``limit`` decorated view keeps its bucket exact under 20 greenlets."""
    import gevent.pool

    app, ext = build(redis_url)

    @app.get("/search")
    @ext.limit("5/minute", key="user")
    def search() -> str:
        return "ok"

    client = app.test_client()
    statuses = Counter(gevent.pool.Pool(20).map(
        lambda _: client.get("/search", headers={"X-User": "alice"}).status_code, range(20)))
    return {"statuses": dict(statuses)}


def waiting(redis_url: str) -> dict[str, Any]:
    """50 greenlets join a waiting room at once: 50 distinct places."""
    import gevent.pool

    app, ext = build(redis_url)
    with app.app_context():
        ext.create_sale("tee", stock=5, fairness="fifo", admit_rate=1)

    def join(n: int) -> int | None:
        with app.app_context():
            return ext.join_queue("tee", f"u{n}").position

    positions = gevent.pool.Pool(50).map(join, range(50))
    return {"positions": sorted(p or 0 for p in positions)}


def metrics(redis_url: str) -> dict[str, Any]:
    """Metrics count admissions made by concurrent greenlets, and a scrape answers."""
    import gevent.pool

    app, ext = build(redis_url, FLASHSALE_METRICS=True, FLASHSALE_METRICS_PATH="/metrics")
    with app.app_context():
        ext.create_sale("tee", stock=1000)
    client = app.test_client()
    gevent.pool.Pool(30).map(
        lambda n: client.post(f"{PREFIX}/tee/order", headers={"X-User": f"u{n}"}), range(30))
    scrape = client.get("/metrics")
    line = next((x for x in scrape.get_data(as_text=True).splitlines()
                 if x.startswith('flashsale_admissions_total{result="queued",sale="tee"}')), "")
    return {"status": scrape.status_code, "admitted": float(line.split()[-1]) if line else None}


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    f.__name__: f for f in (crowd, subscriber, lock, breaker, memory, ratelimit, waiting, metrics)
}


def main() -> None:
    """Run the scenario named on the command line; print ``RESULT <json>``."""
    name, redis_url = sys.argv[1], sys.argv[2]
    result = SCENARIOS[name](redis_url)
    result["patched"] = monkey.is_module_patched("threading")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
