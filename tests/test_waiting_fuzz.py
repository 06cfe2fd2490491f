"""Whatever a client sends to the queue endpoints (and orders with passes), no 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_flashsale import FlashSale, FlashSaleError

from .helpers import PREFIX

printable = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=120
)
tokens = st.one_of(
    printable,
    st.just("WyJ0ZWUiLDEsOTk5OTk5OTk5OTk5OSwiZXBvY2giXQ.forged-signature"),
    st.builds(lambda a, b: f"{a}.{b}", printable, printable),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "X-User": st.sampled_from(["alice", "bob", "x" * 256, "y" * 300]),
        "FlashSale-Pass": tokens,
        "FlashSale-Place": tokens,
        "Cookie": tokens.map(lambda t: f"flashsale_place={t}"),
        "Content-Type": st.sampled_from(["application/json", "text/plain"]),
        "Origin": st.sampled_from(["http://localhost", "https://evil.example", "null"]),
        "Idempotency-Key": printable,
    },
)
bodies = st.one_of(
    st.binary(max_size=100),
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=3).map(
        lambda d: json.dumps(d).encode()
    ),
)
sales = st.one_of(
    st.sampled_from(["queued", "lottery", "plain", "nope"]),
    st.text(min_size=1, max_size=70).filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s
    ),
)


def setup(flashsale: FlashSale) -> None:
    if flashsale.get_sale("queued") is None:
        flashsale.create_sale("queued", stock=1000, per_user_limit=3, fairness="fifo", admit_rate=5)
        flashsale.create_sale(
            "lottery",
            stock=1000,
            fairness="lottery",
            admit_rate=5,
            starts_at=2_000_000_000,
            queue_opens_at=1,
        )
        flashsale.create_sale("plain", stock=1000)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    sale=sales,
    suffix=st.sampled_from(["/queue", "/order", "/queue/x"]),
    body=bodies,
    hdrs=headers,
)
def test_no_request_to_the_queue_or_with_a_pass_gets_a_500(
    flashsale: FlashSale,
    client: Any,
    redis_client: redis_lib.Redis,
    method: str,
    sale: str,
    suffix: str,
    body: bytes,
    hdrs: dict[str, str],
) -> None:
    setup(flashsale)
    response = client.open(
        f"{PREFIX}/{quote(sale, safe='')}{suffix}", method=method, data=body, headers=hdrs
    )
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"
        assert isinstance(response.get_json(force=True)["code"], str)
    # Only a real pass lets an order into a queued sale: none of these is one.
    assert redis_client.xlen("flashsale:{queued}:orders") == 0


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sale=sales,
    user=st.one_of(st.text(max_size=300), st.integers(), st.none()),
    token=st.one_of(st.none(), tokens),
)
def test_the_python_api_raises_only_flashsale_errors(
    flashsale: FlashSale, sale: str, user: Any, token: str | None
) -> None:
    setup(flashsale)
    for call in (
        lambda: flashsale.join_queue(sale, user),
        lambda: flashsale.queue_status(sale, user, place_token=token),
        lambda: flashsale.place_order(sale, user, queue_pass=token),
    ):
        try:
            call()
        except FlashSaleError as exc:
            assert 400 <= exc.code < 500
