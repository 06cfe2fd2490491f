"""Token-bucket arithmetic of ``ratelimit.lua`` on a real Redis.

Most tests drive the clock through ``now_ms`` (the test-only override of Redis
``TIME``) so the arithmetic is exact; the last ones run on Redis ``TIME``.
"""

from __future__ import annotations

import time

import redis as redis_lib

from flask_flashsale import FlashSale
from flask_flashsale.ratelimit import Limit, RateLimiter, RateLimitResult, parse_rate

T0 = 1_800_000_000_000  # an arbitrary instant, in ms


def hit(limit: Limit, now_ms: int, key: str = "k") -> RateLimitResult:
    result = limit.hit(key, now_ms=now_ms)
    assert result is not None
    return result


def test_a_full_bucket_lets_the_whole_burst_through_at_once(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=5", scope="t")
    results = [hit(limit, T0) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0]
    assert all(r.limit == 5 for r in results)


def test_retry_after_is_the_time_to_the_next_token(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=3", scope="t")
    for _ in range(3):
        assert hit(limit, T0).allowed
    refused = hit(limit, T0 + 1_000)
    assert (refused.allowed, refused.retry_after) == (False, 59.0)
    assert hit(limit, T0 + 59_999).retry_after == 0.001
    assert hit(limit, T0 + 60_000).allowed
    assert hit(limit, T0 + 60_000).retry_after == 60.0


def test_the_bucket_refills_at_the_rate(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=4", scope="t")
    for _ in range(4):
        assert hit(limit, T0).allowed
    # Two and a half intervals later: two tokens are back, the third is 30 s away.
    later = T0 + 150_000
    assert [hit(limit, later).allowed for _ in range(3)] == [True, True, False]
    assert hit(limit, later).retry_after == 30.0


def test_an_idle_bucket_never_holds_more_than_its_burst(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=2", scope="t")
    assert hit(limit, T0).allowed
    much_later = T0 + 3_600_000
    assert [hit(limit, much_later).allowed for _ in range(3)] == [True, True, False]


def test_a_refused_request_takes_no_token(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=2", scope="t")
    assert hit(limit, T0).allowed and hit(limit, T0).allowed
    assert not any(hit(limit, T0 + 1_000).allowed for _ in range(10))
    # One interval after the burst: exactly one token, as if nobody had knocked.
    assert [hit(limit, T0 + 60_000).allowed for _ in range(2)] == [True, False]


def test_a_fractional_wait_is_never_reported_as_zero(flashsale: FlashSale) -> None:
    # 7/minute: one token every 8571.43 ms; 8571 ms after a hit, 0.43 ms remain.
    limit = flashsale.limit("7/minute;burst=1", scope="t")
    assert hit(limit, T0).allowed
    refused = hit(limit, T0 + 8_571)
    assert (refused.allowed, refused.retry_after) == (False, 0.001)
    assert hit(limit, T0 + 8_572).allowed


def test_reset_is_the_time_until_the_bucket_is_full_again(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=3", scope="t")
    assert hit(limit, T0).reset == 60.0
    assert hit(limit, T0).reset == 120.0
    assert hit(limit, T0 + 30_000).reset == 150.0
    refused = hit(limit, T0 + 30_000)
    assert (refused.allowed, refused.reset, refused.remaining) == (False, 150.0, 0)


def test_each_key_has_its_own_bucket(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/minute;burst=1", scope="t")
    assert hit(limit, T0, "alice").allowed
    assert hit(limit, T0, "bob").allowed
    assert not hit(limit, T0, "alice").allowed


def test_bucket_key_layout_is_prefix_rl_scope_key(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    result = flashsale.limit("1/minute", scope="search").hit("u:alice")
    assert result is not None
    assert result.key == "flashsale:rl:search:u:alice"
    assert redis_client.exists("flashsale:rl:search:u:alice")


def test_braces_and_long_key_parts_are_made_safe(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    limit = flashsale.limit("1/minute", scope="t")
    braced = limit.hit("a{b}%")
    assert braced is not None and braced.key == "flashsale:rl:t:a%7Bb%7D%25"
    long = limit.hit("x" * 5000)
    assert long is not None and long.key.startswith("flashsale:rl:t:#")
    assert len(long.key) < 100
    assert all("{" not in k and "}" not in k for k in redis_client.keys("flashsale:rl:*"))


def test_buckets_of_one_check_are_taken_together_or_not_at_all(flashsale: FlashSale) -> None:
    limiter = flashsale.state().limiter
    roomy, tight = parse_rate("1/minute;burst=5"), parse_rate("1/minute;burst=1")
    both = [("flashsale:rl:t:roomy", roomy), ("flashsale:rl:t:tight", tight)]
    assert limiter.hit(both, now_ms=T0).allowed
    refused = limiter.hit(both, now_ms=T0)
    assert (refused.allowed, refused.key, refused.limit) == (False, "flashsale:rl:t:tight", 1)
    # The refused check took nothing from the roomy bucket: 4 of 5 tokens left.
    alone = limiter.hit([("flashsale:rl:t:roomy", roomy)], now_ms=T0)
    assert alone.remaining == 3


def test_a_passing_check_reports_the_bucket_closest_to_empty(flashsale: FlashSale) -> None:
    limiter = flashsale.state().limiter
    result = limiter.hit(
        [
            ("flashsale:rl:t:a", parse_rate("1/minute;burst=5")),
            ("flashsale:rl:t:b", parse_rate("1/minute;burst=2")),
            ("flashsale:rl:t:c", parse_rate("1/minute;burst=9")),
        ],
        now_ms=T0,
    )
    assert (result.allowed, result.key, result.limit, result.remaining) == (
        True,
        "flashsale:rl:t:b",
        2,
        1,
    )


def test_per_bucket_mode_for_cluster_stops_at_the_first_refusal(
    flashsale: FlashSale, redis_client: redis_lib.Redis
) -> None:
    # On Redis Cluster buckets live in different slots, so stacked buckets are
    # checked one call each: a bucket checked before the refusing one has given
    # its token (documented). Same behaviour otherwise.
    limiter = RateLimiter(redis_client, "flashsale", per_bucket=True)
    roomy, tight = parse_rate("1/minute;burst=5"), parse_rate("1/minute;burst=1")
    both = [("flashsale:rl:t:roomy", roomy), ("flashsale:rl:t:tight", tight)]
    assert limiter.hit(both, now_ms=T0).allowed
    refused = limiter.hit(both, now_ms=T0)
    assert (refused.allowed, refused.key, refused.retry_after) == (
        False,
        "flashsale:rl:t:tight",
        60.0,
    )
    assert limiter.hit([("flashsale:rl:t:roomy", roomy)], now_ms=T0).remaining == 2


# -- on Redis TIME ----------------------------------------------------------


def test_on_redis_time_the_burst_passes_then_waits_for_the_next_token(
    flashsale: FlashSale,
) -> None:
    limit = flashsale.limit("3/minute", scope="t")
    results = [limit.hit("k") for _ in range(4)]
    assert [r.allowed for r in results if r] == [True, True, True, False]
    refused = results[3]
    assert refused is not None and refused.retry_after is not None
    assert 15.0 < refused.retry_after <= 20.0


def test_on_redis_time_a_token_comes_back_after_retry_after(flashsale: FlashSale) -> None:
    limit = flashsale.limit("1/second", scope="t")
    assert hit_now(limit).allowed
    refused = hit_now(limit)
    assert not refused.allowed and refused.retry_after is not None
    assert 0 < refused.retry_after <= 1.0
    time.sleep(refused.retry_after + 0.01)
    assert hit_now(limit).allowed


def test_full_buckets_expire(flashsale: FlashSale, redis_client: redis_lib.Redis) -> None:
    limit = flashsale.limit("1/minute;burst=5", scope="t")
    hit_now(limit)
    # Full again one interval after one hit: the key expires then.
    assert 0 < redis_client.pttl("flashsale:rl:t:k") <= 60_000
    for _ in range(4):
        hit_now(limit)
    assert 240_000 < redis_client.pttl("flashsale:rl:t:k") <= 300_000

    fast = flashsale.limit("20/second;burst=1", scope="fast")
    hit_now(fast)
    deadline = time.monotonic() + 5
    while redis_client.exists("flashsale:rl:fast:k") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not redis_client.exists("flashsale:rl:fast:k")


def hit_now(limit: Limit) -> RateLimitResult:
    result = limit.hit("k")
    assert result is not None
    return result
