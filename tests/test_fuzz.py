"""Whatever a client sends, the answer is never a 500 and stock stays consistent."""

from __future__ import annotations

import json
from typing import Any

import redis as redis_lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_flashsale import FlashSale

from .helpers import PREFIX

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"quantity": json_values}).map(lambda v: json.dumps(v).encode()),
    st.integers(-5, 5).map(lambda q: b'{"quantity": %d}' % q),
)
path_parts = st.one_of(
    st.just("tee"),
    st.text(min_size=1, max_size=80).filter(
        lambda s: "/" not in s and "?" not in s and "#" not in s
    ),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "X-User": st.text(min_size=1, max_size=40).filter(
            lambda s: s.isprintable() and s.strip() == s and s.isascii()
        ),
        "Idempotency-Key": st.text(max_size=300).filter(
            lambda s: s.isascii() and "\n" not in s and "\r" not in s
        ),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "x/y"]),
    },
)


def books_balance(client: redis_lib.Redis) -> None:
    sale = client.hgetall("flashsale:{tee}:sale")
    held = sum(int(v) for v in client.hgetall("flashsale:{tee}:users").values())
    assert int(sale["remaining"]) >= 0
    assert int(sale["remaining"]) + held == int(sale["stock"])
    assert client.xlen("flashsale:{tee}:orders") <= int(sale["stock"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    part=path_parts,
    suffix=st.sampled_from(["", "/order", "/orders", "/order/x", "/../order"]),
    body=bodies,
    hdrs=headers,
)
def test_no_request_gets_a_500_or_corrupts_stock(
    flashsale: FlashSale,
    client: Any,
    redis_client: redis_lib.Redis,
    method: str,
    part: str,
    suffix: str,
    body: bytes,
    hdrs: dict[str, str],
) -> None:
    if flashsale.get_sale("tee") is None:
        flashsale.create_sale("tee", stock=1000, per_user_limit=3)
    from urllib.parse import quote

    response = client.open(
        f"{PREFIX}/{quote(part, safe='')}{suffix}", method=method, data=body, headers=hdrs
    )
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"
        assert isinstance(response.get_json(force=True)["code"], str)
    books_balance(redis_client)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ticket=st.text(min_size=1, max_size=120), user=st.sampled_from(["alice", "bob", None]))
def test_no_ticket_lookup_gets_a_500(client: Any, ticket: str, user: str | None) -> None:
    from urllib.parse import quote

    hdrs = {"X-User": user} if user else {}
    response = client.get(f"{PREFIX}/orders/{quote(ticket, safe='')}", headers=hdrs)
    # "%2F" decodes to "/", and werkzeug redirects "//" to "/" (308): fine.
    assert response.status_code in (308, 401, 404), response.get_data(as_text=True)
    if response.status_code != 308:
        assert response.mimetype == "application/problem+json"
