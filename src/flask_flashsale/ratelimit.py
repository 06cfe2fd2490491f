"""Token-bucket rate limits (GCRA, atomic in Redis, one key per bucket)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigurationError

_UNITS = {
    "s": 1.0,
    "second": 1.0,
    "m": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(
    r"\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+?)s?\s*(?:;\s*burst\s*=\s*(\d+)\s*)?", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Rate:
    """A refill rate and a bucket size: ``limit`` tokens per ``period`` seconds."""

    #: Tokens added per ``period``.
    limit: int
    #: Period in seconds.
    period: float
    #: Bucket size: how many requests may pass at once. Defaults to ``limit``.
    burst: int

    @property
    def interval_ms(self) -> float:
        """Milliseconds between two tokens (GCRA's emission interval)."""
        return self.period * 1000.0 / self.limit

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}s;burst={self.burst}"


def parse_rate(text: str, *, burst: int | None = None) -> Rate:
    """Parse ``"10/second"``, ``"600/minute"``, ``"5/second;burst=10"``, ``"100/5m"``.

    Raises :class:`~flask_flashsale.ConfigurationError` for anything else, so a
    bad rate fails when the app starts, not at request time.
    """
    m = _RATE.fullmatch(text) if isinstance(text, str) else None
    unit = _UNITS.get(m.group(3).lower()) if m else None
    if m is None or unit is None:
        raise ConfigurationError(
            f"invalid rate {text!r}: use e.g. '10/second', '600/minute' or '5/second;burst=10'"
        )
    limit = int(m.group(1))
    period = unit * (int(m.group(2)) if m.group(2) else 1)
    size = burst if burst is not None else (int(m.group(4)) if m.group(4) else limit)
    if limit <= 0 or size <= 0:
        raise ConfigurationError(f"invalid rate {text!r}: limit and burst must be positive")
    return Rate(limit=limit, period=period, burst=size)
