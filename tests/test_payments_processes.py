"""Payments against expiry across processes: worker subprocesses, payers in spawned
processes, one real Redis. Exactly one of paid and expired wins; stock comes back
exactly once, also when a worker is killed in the middle of an expiry batch."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale

from . import payers
from .helpers import build_app, run_benchmark, wait_for
from .payment_host import Worker, init_db
from .redis_server import require_redis_binary
from .worker_host import FAST, rows


def worker(tmp_path: Path, redis_url: str, name: str, **env: str) -> Worker:
    db = tmp_path / "host.sqlite3"
    init_db(db)
    return Worker(
        {"TEST_REDIS_URL": redis_url, "HOST_DB": str(db), **env},
        tmp_path / f"{name}.log",
        "--name",
        name,
    )


def statuses(client: redis_lib.Redis, sale: str, tickets: list[str]) -> dict[str, str]:
    pipe = client.pipeline(transaction=False)
    for t in tickets:
        pipe.hget(f"flashsale:{{{sale}}}:t:{t.split('~')[1]}", "s")
    return dict(zip(tickets, pipe.execute(), strict=True))


def settled(client: redis_lib.Redis, sale: str) -> bool:
    """No hold left to expire, and no order or expiry hook call left in the queue."""
    return client.zcard(f"flashsale:{{{sale}}}:holds") == 0 and (
        client.xlen(f"flashsale:{{{sale}}}:orders") == 0
    )


@pytest.mark.slow
def test_200_holds_paid_or_expired_racing_across_processes(
    redis_url: str, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    holds = 200
    app, ext = build_app(redis_url)
    with app.app_context():
        ext.create_sale("race", stock=holds, payment_timeout=1)
    ctx = multiprocessing.get_context("spawn")
    workers = [worker(tmp_path, redis_url, f"w{i}") for i in range(2)]
    try:
        with ctx.Pool(3, initializer=payers.init, initargs=(redis_url,)) as pool:
            pool.map(time.sleep, [0.01] * 3)  # the payers are up (their app built)
            first = payers.redis_ms(redis_client)
            tickets = []
            with app.app_context():
                for i in range(holds):  # admissions, hence deadlines, spread over ~0.8 s
                    admission = ext.place_order("race", f"buyer{i}")
                    assert admission.ticket_id is not None
                    tickets.append(admission.ticket_id)
                    time.sleep(0.004)
            # Pay from just before the first deadline, through the last one.
            args = [(redis_url, tickets, first + 900, 0.004, seed) for seed in range(3)]
            calls = [c for part in pool.starmap(payers.pay_all, args) for c in part]
        wait_for(lambda: settled(redis_client, "race"), timeout=15)
    finally:
        for w in workers:
            w.stop()

    db = tmp_path / "host.sqlite3"
    final = statuses(redis_client, "race", tickets)
    paid = {t for t, outcome in calls if outcome == "paid"}
    late = {t for t, outcome in calls if outcome == "too_late"}
    expired = {t for t, s in final.items() if s == "expired"}
    hooked = Counter(order_id for (order_id,) in rows(db, "SELECT order_id FROM expiry_calls"))
    books = redis_client.hgetall("flashsale:{race}:payments")
    remaining = int(redis_client.hget("flashsale:{race}:sale", "remaining") or 0)
    print(
        f"\n{holds} holds, 3 payer processes, 2 workers: paid {len(paid)}, expired "
        f"{len(expired)}, pay calls {dict(Counter(o for _, o in calls))}"
    )
    assert set(final.values()) == {"paid", "expired"}  # both outcomes happened
    assert {t for t, s in final.items() if s == "paid"} == paid
    assert paid.isdisjoint(late)  # never both
    assert paid | late == set(tickets)
    assert expired == set(tickets) - paid
    assert remaining == len(expired)  # units given back == holds expired
    assert sum(int(v) for v in redis_client.hgetall("flashsale:{race}:users").values()) == len(paid)
    assert books == {"paid": str(len(paid)), "expired": str(len(expired))}
    assert set(hooked) == expired  # the expiry hook ran for every expired hold, no other
    assert len(rows(db, "SELECT id FROM orders")) == holds  # every order's hook ran


@pytest.mark.slow
def test_a_worker_killed_mid_expiry_batch_expires_nothing_twice_and_leaves_nothing_stuck(
    redis_url: str, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    holds = 30
    app, ext = build_app(redis_url, **FAST)
    with app.app_context():
        ext.create_sale("drop", stock=holds, payment_timeout=0.5)
        tickets = [ext.place_order("drop", f"buyer{i}").ticket_id or "" for i in range(holds)]
    marker = tmp_path / "stuck"
    doomed = worker(tmp_path, redis_url, "doomed", STUCK_MARKER=str(marker))
    try:
        wait_for(marker.exists, timeout=20)  # in the expiry hook of its batch's first hold
        assert doomed.kill() < 0
    finally:
        doomed.stop()
    db = tmp_path / "host.sqlite3"
    stream = "flashsale:{drop}:orders"
    # Each batch was one atomic step: as many units back as holds expired, and
    # each of their hook calls queued (one in the dead worker's hands).
    expired_at_kill = Counter(statuses(redis_client, "drop", tickets).values())["expired"]
    left = redis_client.xlen(stream)
    assert expired_at_kill > 0
    assert redis_client.hget("flashsale:{drop}:sale", "remaining") == str(expired_at_kill)
    assert left == expired_at_kill

    rescuer = worker(tmp_path, redis_url, "rescuer")
    try:
        wait_for(lambda: settled(redis_client, "drop"), timeout=20)
    finally:
        rescuer.stop()
    hooked = Counter(order_id for (order_id,) in rows(db, "SELECT order_id FROM expiry_calls"))
    print(
        f"\nSIGKILL mid expiry batch: {expired_at_kill} of {holds} holds expired before the "
        f"kill, hook calls {sum(hooked.values())} for {len(hooked)} holds"
    )
    assert set(hooked) == set(tickets)  # nothing stuck: every hold's hook ran
    assert max(hooked.values()) <= 2  # the one in hand when the worker died ran twice
    assert set(statuses(redis_client, "drop", tickets).values()) == {"expired"}
    assert redis_client.hget("flashsale:{drop}:sale", "remaining") == str(holds)  # not twice
    assert redis_client.hget("flashsale:{drop}:payments", "expired") == str(holds)
    assert redis_client.xpending(stream, "workers")["pending"] == 0
    assert redis_client.xlen("flashsale:{drop}:dead") == 0
    assert rows(db, "SELECT COUNT(*) FROM orders WHERE expired = 0") == [(0,)]


@pytest.mark.slow
def test_no_oversell_while_holds_expire_and_are_bought_again(
    redis_url: str, redis_client: redis_lib.Redis, tmp_path: Path
) -> None:
    """4 buyer processes keep buying and paying while 2 workers expire unpaid holds."""
    stock = 20
    app, ext = build_app(redis_url, **FAST)
    with app.app_context():
        ext.create_sale("hot", stock=stock, payment_timeout=0.3)
    users = [f"user{i}" for i in range(200)]
    broken: list[str] = []
    stop = threading.Event()

    def audit() -> None:
        """Units held + remaining == stock, read atomically, while it all runs."""
        client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        while not stop.is_set():
            pipe = client.pipeline(transaction=True)
            pipe.hget("flashsale:{hot}:sale", "remaining")
            pipe.hvals("flashsale:{hot}:users")
            remaining, held = pipe.execute()
            units = sum(int(v) for v in held)
            if int(remaining) < 0 or int(remaining) + units != stock:
                broken.append(f"remaining {remaining}, held {units}")
            stop.wait(0.005)
        client.close()

    auditor = threading.Thread(target=audit)
    workers = [worker(tmp_path, redis_url, f"w{i}") for i in range(2)]
    auditor.start()
    try:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(4) as pool:
            args = [(redis_url, "hot", users, 4, 3.0, seed) for seed in range(4)]
            parts = pool.starmap(payers.shop_crowd, args)
        wait_for(lambda: settled(redis_client, "hot"), timeout=15)
    finally:
        stop.set()
        auditor.join(10)
        for w in workers:
            w.stop()
    counts: Counter[str] = Counter()
    for part in parts:
        counts.update(part["counts"])
    paid = [t for part in parts for t in part["paid"]]
    tickets = [
        "hot~" + key.rsplit(":", 1)[1]
        for key in redis_client.scan_iter(match="flashsale:{hot}:t:*", count=1000)
    ]
    final = Counter(statuses(redis_client, "hot", tickets).values())
    remaining = int(redis_client.hget("flashsale:{hot}:sale", "remaining") or 0)
    print(f"\nbuyers: {dict(counts)}; tickets: {dict(final)}; remaining {remaining}")
    assert broken == []
    assert counts["queued"] + counts["paid"] + counts["too_late"] > stock  # units sold again
    assert final["expired"] > 0 and final["paid"] > 0
    assert set(final) <= {"paid", "expired"}
    assert final["paid"] == len(paid) <= stock
    assert remaining + len(paid) == stock
    books = redis_client.hgetall("flashsale:{hot}:payments")
    assert books == {"paid": str(final["paid"]), "expired": str(final["expired"])}
    with app.app_context():
        assert FlashSale.state(app).payments.stats(["hot"])[0].awaiting_payment == 0


@pytest.mark.slow
@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_the_expiry_benchmark_expires_every_hold_once(tmp_path: Path) -> None:
    """``python -m benchmarks expiry`` runs end to end and checks its own books."""
    _, result = run_benchmark(
        "expiry", "--rounds", "1", "--holds", "300", "--timeout", "2.5",
        json_path=tmp_path / "expiry.json",
    )
    assert [(r["mode"], r["expired"], r["all_expired_once"]) for r in result["runs"]] == [
        ("no hook", 300, True),
        ("no-op expiry hook", 300, True),
    ]
