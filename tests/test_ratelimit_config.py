"""Rate strings and limit definitions: parsed once, bad ones fail at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_flashsale import ConfigurationError, FlashSale
from flask_flashsale.ratelimit import Limit, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "limit", "period", "burst"),
    [
        ("10/second", 10, 1.0, 10),
        ("600/minute", 600, 60.0, 600),
        ("5/second;burst=10", 5, 1.0, 10),
        ("100/5m", 100, 300.0, 100),
        ("1/hour;burst=64", 1, 3600.0, 64),
        ("3 per day", 3, 86400.0, 3),
        ("10 per 2 minutes", 10, 120.0, 10),
        ("7/seconds", 7, 1.0, 7),
        ("2/min", 2, 60.0, 2),
        ("2/mins", 2, 60.0, 2),
        ("4/hr; burst = 8", 4, 3600.0, 8),
        ("  9/S  ", 9, 1.0, 9),
    ],
)
def test_rate_strings_parse_to_limit_period_and_burst(
    text: str, limit: int, period: float, burst: int
) -> None:
    assert parse_rate(text) == Rate(limit=limit, period=period, burst=burst)


def test_burst_keyword_wins_over_the_rate_string() -> None:
    assert parse_rate("5/second;burst=10", burst=3).burst == 3
    assert parse_rate("5/second", burst=20).burst == 20


def test_a_rate_object_is_accepted_as_it_is() -> None:
    rate = Rate(limit=2, period=60.0, burst=4)
    assert parse_rate(rate) is rate
    assert parse_rate(rate, burst=1) == Rate(limit=2, period=60.0, burst=1)


def test_emission_interval_is_period_over_limit() -> None:
    assert parse_rate("600/minute").interval_ms == 100.0
    assert parse_rate("1/hour").interval_ms == 3_600_000.0


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "",
        "10",
        "10/ms",  # not a unit (it used to be read as "10 per minute")
        "10/fortnight",
        "ten/second",
        "0/second",
        "10/0s",
        "10/second;burst=0",
        "10/second;burst=-1",
        "10/second;bursts=3",
        "1.5/second",
        None,
        10,
    ],
)
def test_bad_rate_strings_raise_configuration_error(text: Any) -> None:
    with pytest.raises(ConfigurationError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize("burst", [0, -3, True, 2.5, "4"])
def test_bad_burst_raises_configuration_error(burst: Any) -> None:
    with pytest.raises(ConfigurationError, match="burst"):
        parse_rate("10/second", burst=burst)


def test_errors_name_the_setting_when_given() -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_API_RATE_LIMIT: invalid rate"):
        parse_rate("often", setting="FLASHSALE_API_RATE_LIMIT")


def test_a_bad_rate_fails_when_the_view_is_decorated(make_app: Any) -> None:
    _, flashsale = make_app()
    with pytest.raises(ConfigurationError, match="invalid rate 'garbage'"):

        @flashsale.limit("garbage")
        def view() -> str:  # pragma: no cover - never defined
            return "x"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"burst": 0}, "burst"),
        ({"key": "nobody"}, "rate-limit key 'nobody'"),
        ({"key": 42}, "rate-limit key 42"),
        ({"scope": "a{b}"}, "scope"),
        ({"scope": ""}, "scope"),
    ],
)
def test_bad_limit_arguments_fail_when_the_limit_is_made(kwargs: Any, match: str) -> None:
    # Limits need no app to be made: definitions fail at import time.
    with pytest.raises(ConfigurationError, match=match):
        Limit("10/second", **kwargs)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("FLASHSALE_API_RATE_LIMIT", "lots", "FLASHSALE_API_RATE_LIMIT: invalid rate"),
        ("FLASHSALE_API_RATE_LIMIT", "10/fortnight", "FLASHSALE_API_RATE_LIMIT"),
        ("FLASHSALE_API_RATE_LIMIT_KEY", "cookie", "FLASHSALE_API_RATE_LIMIT_KEY"),
    ],
)
def test_bad_site_wide_limit_fails_at_start_up_naming_the_key(
    redis_url: str, key: str, value: str, match: str
) -> None:
    app = Flask("bad-limit")
    app.config["FLASHSALE_REDIS_URL"] = redis_url
    app.config["FLASHSALE_API_RATE_LIMIT"] = "10/second"
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=match):
        FlashSale(app)


def test_rate_limit_settings_have_documented_defaults(make_app: Any) -> None:
    app, _ = make_app()
    assert app.config["FLASHSALE_RATELIMIT_HEADERS"] is True
    assert app.config["FLASHSALE_API_RATE_LIMIT"] is None
    assert app.config["FLASHSALE_API_RATE_LIMIT_KEY"] == "user_or_ip"


def test_methods_are_normalised_to_upper_case() -> None:
    assert Limit("10/second", methods="post").methods == frozenset({"POST"})
    assert Limit("10/second", methods=["get", "Post"]).methods == frozenset({"GET", "POST"})
    assert Limit("10/second").methods is None
