"""Fair access under real concurrency: FIFO order, a uniform lottery, the outflow bound,
abandoned places, and sold out reaching everyone in the queue."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import redis as redis_lib

from flask_flashsale import FlashSale, QueueStatus
from flask_flashsale.waiting import REFRESH_SECONDS, lottery_positions

from .helpers import MakeApp, build_app, redis_now, wait_for
from .queue_helpers import join_all, join_crowd, ready_ms, wait_until

PASS_TTL = 120.0


def statuses_descending(
    flashsale: FlashSale, sale_id: str, tokens: dict[str, str], order: list[str]
) -> dict[str, QueueStatus]:
    """Everyone's status, the last place first.

    Each answer is worked out at its own moment; asking the later places
    first means a lower place is never asked earlier than a higher one, so a
    ready place behind a waiting one can only mean the order is wrong.
    """
    return {
        user: flashsale.queue_status(sale_id, user, place_token=tokens[user])
        for user in reversed(order)
    }


# -- FIFO --------------------------------------------------------------------------


@pytest.mark.slow
def test_fifo_500_buyers_from_4_processes_get_places_1_to_500_and_are_let_through_in_order(
    redis_url: str,
) -> None:
    app, flashsale = build_app(redis_url)
    with app.app_context():
        flashsale.create_sale("hot", stock=1000, fairness="fifo", admit_rate=250)
    users = [f"user{i}" for i in range(500)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        parts = pool.starmap(join_crowd, [(redis_url, "hot", users[i::4], 8, {}) for i in range(4)])
    joined = [r for part in parts for r in part]
    positions = {user: position for user, position, _ in joined}
    assert sorted(p for p in positions.values() if p is not None) == list(range(1, 501))
    tokens = {user: token for user, _, token in joined if token is not None}
    order = sorted(users, key=lambda u: positions[u])  # type: ignore[arg-type, return-value]

    let_through: list[int] = []
    with app.app_context():
        while True:
            now = statuses_descending(flashsale, "hot", tokens, order)
            ready = [positions[u] for u, s in now.items() if s.status == "ready"]
            assert sorted(ready) == list(range(1, len(ready) + 1))  # a prefix of the places
            let_through.append(len(ready))
            if len(ready) == 500:
                break
            time.sleep(0.05)
    assert let_through == sorted(let_through) and len(set(let_through)) > 3
    # The ready times themselves follow the places.
    times = [ready_ms(now[u], PASS_TTL) for u in order]
    assert times == sorted(times)


# -- lottery -----------------------------------------------------------------------

RUNS = 1000
EARLY = 10
#: scipy.stats.chi2.isf(1e-6, 9): a uniform draw fails this test once in a million runs.
CHI2_9DF_1E6 = 44.81
#: scipy.stats.chi2.isf(1e-6, 81), for the 10 x 10 table of join order x drawn place.
CHI2_81DF_1E6 = 156.45


def chi_square(observed: list[int], expected: float) -> float:
    return sum((o - expected) ** 2 / expected for o in observed)


@pytest.mark.slow
def test_lottery_first_places_are_uniform_over_the_early_joiners(make_app: MakeApp) -> None:
    """1,000 lotteries of 10 early joiners: who gets place 1 does not depend on when
    they joined (chi-square, 9 degrees of freedom, threshold at p = 1e-6)."""
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=0)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    sales = [f"draw{i}" for i in range(RUNS)]
    users = [f"u{k}" for k in range(EARLY)]  # joined in this order in every sale

    def prepare(sale_id: str) -> dict[str, str]:
        with app.app_context():
            flashsale.create_sale(
                sale_id,
                stock=1,
                fairness="lottery",
                admit_rate=1,
                starts_at=later,
                queue_opens_at=time.time(),
            )
            answers = join_all(flashsale, sale_id, users)
            assert {a.position for a in answers.values()} == {None}
            # Same mode: the queue is kept; the start is now, so the next poll draws.
            flashsale.create_sale(
                sale_id, stock=1, fairness="lottery", admit_rate=1, starts_at=time.time()
            )
            return {u: a.place_token for u, a in answers.items()}  # type: ignore[misc]

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(prepare, sales))
    time.sleep(0.01)
    first_place: Counter[int] = Counter()
    table = [[0] * EARLY for _ in range(EARLY)]  # table[join index][place - 1]
    with app.app_context():
        for sale_id, sale_tokens in zip(sales, tokens, strict=True):
            places = [
                flashsale.queue_status(sale_id, u, place_token=sale_tokens[u]).position
                for u in users
            ]
            assert sorted(places) == list(range(1, EARLY + 1))  # type: ignore[type-var]
            first_place[places.index(1)] += 1
            for joined, place in enumerate(places):
                table[joined][place - 1] += 1  # type: ignore[operator]
    counts = [first_place[k] for k in range(EARLY)]
    stat = chi_square(counts, RUNS / EARLY)
    full = chi_square([c for row in table for c in row], RUNS / EARLY)
    print(f"\nplace 1 by join order: {counts}, chi2 = {stat:.1f}; 10x10 chi2 = {full:.1f}")
    assert stat < CHI2_9DF_1E6
    assert full < CHI2_81DF_1E6


def test_every_process_derives_the_same_draw_from_the_seed() -> None:
    assert list(lottery_positions("seed-a", 10)) == list(lottery_positions("seed-a", 10))
    assert list(lottery_positions("seed-a", 10)) != list(lottery_positions("seed-b", 10))
    assert sorted(lottery_positions("seed-a", 1000)) == list(range(1, 1001))
    assert list(lottery_positions("x", 0)) == [] and list(lottery_positions("x", 1)) == [1]


def test_the_shuffle_alone_is_uniform_over_many_seeds() -> None:
    """20,000 draws of 10 (no Redis): each join index equally likely at each place."""
    table = [[0] * EARLY for _ in range(EARLY)]
    for n in range(20_000):
        for joined, place in enumerate(lottery_positions(f"s{n}", EARLY)):
            table[joined][place - 1] += 1
    assert chi_square([row[0] for row in table], 20_000 / EARLY) < CHI2_9DF_1E6
    assert chi_square([c for row in table for c in row], 20_000 / EARLY) < CHI2_81DF_1E6


def test_late_joiners_queue_fifo_behind_every_early_joiner(flashsale: FlashSale) -> None:
    starts = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    flashsale.create_sale("tee", stock=100, fairness="lottery", admit_rate=5, starts_at=starts)
    early = join_all(flashsale, "tee", [f"early{i}" for i in range(10)])
    assert all(a.position is None and a.status == "waiting" for a in early.values())
    assert all(a.eta_seconds is not None and a.eta_seconds <= 0.5 for a in early.values())
    wait_until(starts)
    late = join_all(flashsale, "tee", [f"late{i}" for i in range(5)])
    assert [a.position for a in late.values()] == [11, 12, 13, 14, 15]
    drawn = {
        u: flashsale.queue_status("tee", u, place_token=a.place_token) for u, a in early.items()
    }
    assert sorted(s.position for s in drawn.values()) == list(range(1, 11))  # type: ignore[type-var]
    # A burst of admit_rate (5) at the start: the drawn places 1..5 are ready.
    assert {s.position for s in drawn.values() if s.status == "ready"} == {1, 2, 3, 4, 5}
    assert all(a.status == "waiting" and a.ahead is not None for a in late.values())


def test_an_early_joiner_who_joins_a_hundred_times_keeps_one_place(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    starts = datetime.now(timezone.utc) + timedelta(seconds=0.3)
    flashsale.create_sale("tee", stock=100, fairness="lottery", admit_rate=5, starts_at=starts)
    join_all(flashsale, "tee", ["ann", "bob", "cid"])
    before = [flashsale.join_queue("tee", "bob").position for _ in range(100)]
    wait_until(starts)
    after = {flashsale.join_queue("tee", "bob").position for _ in range(100)}
    assert set(before) == {None}
    assert len(after) == 1 and after <= {1, 2, 3}
    assert redis_client.hget("flashsale:{tee}:queue", "n") == "3"


# -- outflow -----------------------------------------------------------------------


@pytest.mark.slow
def test_at_most_rate_times_t_plus_burst_buyers_are_let_through_in_any_t_seconds(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    rate, buyers = 50, 150  # burst = rate
    flashsale.create_sale("tee", stock=1000, fairness="fifo", admit_rate=rate)
    users = [f"u{i}" for i in range(buyers)]
    joined = join_all(flashsale, "tee", users)
    tokens = {u: a.place_token for u, a in joined.items()}
    assert [a.position for a in joined.values()] == list(range(1, buyers + 1))
    first = ready_ms(joined["u0"], PASS_TTL)
    samples = []
    while True:  # counted while the queue drains, against Redis time
        now = statuses_descending(flashsale, "tee", tokens, users)  # type: ignore[arg-type]
        at = redis_now(redis_client) * 1000
        ready = sum(s.status == "ready" for s in now.values())
        samples.append((at - first, ready))
        assert ready <= rate * (at - first + 2) / 1000 + rate  # 2 ms: clock estimates
        if ready == buyers:
            break
        time.sleep(0.03)
    assert len(samples) > 10
    times = [ready_ms(now[u], PASS_TTL) for u in users]
    # Any window [R_i, R_j] holds at most rate * t + burst ready times (1 ms of rounding).
    for i in range(buyers):
        for j in range(i, buyers):
            assert j - i + 1 <= rate * (times[j] - times[i] + 1) / 1000 + rate
    # ... and the queue does move at that rate: 150 buyers in (150 - 50) / 50 = 2 s.
    assert times[-1] - times[0] <= 2000 + 100


def test_a_quiet_queue_banks_no_more_than_one_burst(flashsale: FlashSale) -> None:
    flashsale.create_sale("tee", stock=1000, fairness="fifo", admit_rate=10)
    flashsale.join_queue("tee", "first")
    time.sleep(1.2)  # nobody waits: the bucket refills, up to the burst only
    crowd = join_all(flashsale, "tee", [f"u{i}" for i in range(30)])
    assert sum(a.status == "ready" for a in crowd.values()) == 10


@pytest.mark.slow
def test_buyers_who_never_order_hold_back_nobody(make_app: MakeApp) -> None:
    """60 buyers, admit_rate 20, passes of 1 s: every second buyer never polls
    or orders; the others are let through on schedule and all get their order."""
    rate, ttl = 20, 1.0
    app, flashsale = make_app(FLASHSALE_PASS_TTL=ttl)
    users = [f"u{i}" for i in range(60)]
    with app.app_context():
        flashsale.create_sale("tee", stock=1000, fairness="fifo", admit_rate=rate)
        joined = join_all(flashsale, "tee", users)
    first = ready_ms(joined["u0"], ttl)
    diligent = {u: joined[u].place_token for u in users[::2]}
    done: dict[str, tuple[int, str]] = {}
    with app.app_context():
        while len(done) < len(diligent):
            for user, token in diligent.items():
                if user in done:
                    continue
                status = flashsale.queue_status("tee", user, place_token=token)
                if status.status == "ready":
                    admission = flashsale.place_order("tee", user, queue_pass=status.pass_token)
                    done[user] = (ready_ms(status, ttl), admission.status)
                assert status.status in ("waiting", "ready"), (user, status)
            time.sleep(0.02)
        assert {s for _, s in done.values()} == {"queued"}
        for user, (ready, _) in done.items():
            place = joined[user].position
            assert place is not None
            on_schedule = first + max(0, place - rate) * 1000 / rate
            assert ready <= on_schedule + 100, (user, ready - on_schedule)
        last_ready = first + (len(users) - rate) * 1000 / rate
        wait_until((last_ready + 100) / 1000 + ttl)
        abandoned = users[1::2]
        lapsed = [flashsale.queue_status("tee", u) for u in abandoned]
        assert {s.status for s in lapsed} == {"expired"}
        assert flashsale.join_queue("tee", abandoned[0]).position == 61


# -- sold out ----------------------------------------------------------------------


def sell_out_through(flashsale: FlashSale, stock: int, buyers: int) -> dict[str, QueueStatus]:
    flashsale.create_sale("tee", stock=stock, fairness="fifo", admit_rate=1000)
    joined = join_all(flashsale, "tee", [f"u{i}" for i in range(buyers)])
    assert {a.status for a in joined.values()} == {"ready"}
    return joined


def test_waiting_buyers_in_another_process_see_sold_out_on_their_next_poll(
    make_app: MakeApp,
) -> None:
    shop, shop_ext = make_app(FLASHSALE_CACHE_TTL=60)
    other, other_ext = make_app(FLASHSALE_CACHE_TTL=60)
    with shop.app_context():
        joined = sell_out_through(shop_ext, stock=3, buyers=30)
    with other.app_context():
        other_ext.queue_status("tee", "u0", place_token=joined["u0"].place_token)
    subscriber = FlashSale.state(other).cache.subscriber
    assert subscriber is not None and subscriber.subscribed.wait(5)
    with shop.app_context():
        for user in ("u0", "u1", "u2"):
            ordered = shop_ext.place_order("tee", user, queue_pass=joined[user].pass_token)
            assert ordered.status == "queued"
    wait_for(lambda: FlashSale.state(other).cache.sold_out("tee"), timeout=2)
    with other.app_context():
        seen = {
            u: other_ext.queue_status("tee", u, place_token=a.place_token)
            for u, a in joined.items()
        }
    assert {s.status for s in seen.values()} == {"sold_out"}
    assert {s.pass_token for s in seen.values()} == {None}


def test_without_events_the_next_refresh_tells_everyone_sold_out(make_app: MakeApp) -> None:
    shop, shop_ext = make_app(FLASHSALE_CACHE_TTL=0)
    other, other_ext = make_app(FLASHSALE_CACHE_TTL=0)
    with shop.app_context():
        joined = sell_out_through(shop_ext, stock=2, buyers=10)
        for user in ("u0", "u1"):
            shop_ext.place_order("tee", user, queue_pass=joined[user].pass_token)
    time.sleep(REFRESH_SECONDS)
    with other.app_context():
        seen = [
            other_ext.queue_status("tee", u, place_token=a.place_token) for u, a in joined.items()
        ]
    assert {s.status for s in seen} == {"sold_out"}
