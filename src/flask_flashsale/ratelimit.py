"""Token-bucket rate limits (GCRA, atomic in Redis, one key per bucket).

A :class:`Limit` (made by :meth:`FlashSale.limit <flask_flashsale.FlashSale.limit>`)
is a small object that works as a view decorator, a blueprint (or app) hook
through :meth:`Limit.apply_to`, and a context manager. Every bucket a request
must pass is checked and taken by one run of ``ratelimit.lua``: one round trip,
one key per bucket (``<prefix>:rl:<scope>:<key>``), Redis ``TIME`` as the clock,
and keys that expire once their bucket is full again.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

import redis
from flask import current_app, has_request_context, request

from . import signals
from .errors import BackendUnavailable, ConfigurationError, RateLimited
from .keys import Keys
from .scripts import register

if TYPE_CHECKING:
    from flask import Blueprint, Flask, Response

    from .extension import FlashSaleState
    from .protocols import RedisClient

P = ParamSpec("P")
R = TypeVar("R")

#: A key function: returns the bucket key of the current request (for
#: example the buyer's id), or ``None`` when the limit does not apply to it.
KeyFunc = Callable[[], "str | None"]

#: Name of the extension's own blueprint (see :func:`~flask_flashsale.views.create_blueprint`).
BLUEPRINT = "flashsale"

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_RATE = re.compile(
    r"\s*(\d+)\s*(?:/|per)\s*(\d*)\s*([a-z]+)\s*(?:;\s*burst\s*=\s*(\d+)\s*)?", re.IGNORECASE
)
_ENVIRON_KEY = "flashsale.ratelimit"
_MAX_KEY = 200


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


def parse_rate(text: str | Rate, *, burst: int | None = None, setting: str | None = None) -> Rate:
    """Parse ``"10/second"``, ``"600/minute"``, ``"5/second;burst=10"``, ``"100/5m"``.

    Units: ``s``/``sec``/``second``, ``m``/``min``/``minute``, ``h``/``hr``/``hour``,
    ``d``/``day`` (and their plurals); ``"10 per minute"`` works too. The bucket
    holds ``burst`` tokens: the keyword wins over ``;burst=`` in the text, which
    wins over the default, ``limit``. A :class:`Rate` is returned as it is (with
    ``burst`` applied). ``setting`` names the config key in error messages.

    Raises :class:`~flask_flashsale.ConfigurationError` for anything else, so a
    bad rate fails when the app starts (or the view is decorated), not at
    request time.
    """
    where = f"{setting}: " if setting else ""
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst <= 0):
        raise ConfigurationError(f"{where}burst must be a positive integer, got {burst!r}")
    if isinstance(text, Rate):
        return text if burst is None else Rate(text.limit, text.period, burst)
    m = _RATE.fullmatch(text) if isinstance(text, str) else None
    unit = _UNITS.get(m.group(3).lower()) if m else None
    if m is None or unit is None:
        raise ConfigurationError(
            f"{where}invalid rate {text!r}: use e.g. '10/second', '600/minute' "
            "or '5/second;burst=10'"
        )
    limit = int(m.group(1))
    period = unit * (int(m.group(2)) if m.group(2) else 1)
    size = burst if burst is not None else (int(m.group(4)) if m.group(4) else limit)
    if limit <= 0 or size <= 0 or period <= 0:
        raise ConfigurationError(
            f"{where}invalid rate {text!r}: limit, period and burst must be positive"
        )
    return Rate(limit=limit, period=period, burst=size)


# -- key functions ----------------------------------------------------------


def _state() -> FlashSaleState:
    """The current app's state (:meth:`FlashSale.state`; imported late: it imports us)."""
    from .extension import FlashSale

    return FlashSale.state()


def by_user() -> str | None:
    """Key of the current buyer (the identity loader); ``None`` (no limit) if anonymous."""
    user = _state().ext.current_user_id()
    return None if user is None else "u:" + user


def by_ip() -> str:
    """Key of the client's address, :attr:`request.remote_addr <flask.Request.remote_addr>`.

    Behind a reverse proxy that is the proxy's address, unless the app is
    wrapped in :class:`werkzeug.middleware.proxy_fix.ProxyFix`, which rewrites
    ``remote_addr`` from ``X-Forwarded-For`` for the number of proxies you
    trust. We never read ``X-Forwarded-For`` ourselves: any client can send it.
    Requests without an address share one bucket.
    """
    return "ip:" + (request.remote_addr or "unknown")


def by_user_or_ip() -> str:
    """The buyer's key when there is one, else the client address's (the default)."""
    return by_user() or by_ip()


def global_bucket() -> str:
    """One bucket shared by every request (per scope)."""
    return "global"


#: Names accepted for ``key=`` (and by :data:`FLASHSALE_API_RATE_LIMIT_KEY`).
KEY_FUNCTIONS: dict[str, KeyFunc] = {
    "user": by_user,
    "ip": by_ip,
    "user_or_ip": by_user_or_ip,
    "global": global_bucket,
}


def key_function(key: KeyFunc | str, *, setting: str | None = None) -> KeyFunc:
    """Resolve ``key`` (a callable or one of :data:`KEY_FUNCTIONS`' names)."""
    if callable(key):
        return key
    func = KEY_FUNCTIONS.get(key) if isinstance(key, str) else None
    if func is None:
        where = f"{setting}: " if setting else ""
        raise ConfigurationError(
            f"{where}invalid rate-limit key {key!r}: use a callable or one of "
            f"{', '.join(map(repr, KEY_FUNCTIONS))}"
        )
    return func


def _safe(part: str) -> str:
    """Make a user-supplied key part safe: no braces (Cluster hash tags), bounded length."""
    if len(part) > _MAX_KEY:
        return "#" + hashlib.sha256(part.encode()).hexdigest()
    if "{" in part or "}" in part or "%" in part:
        return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return part


def _valid_scope(scope: object) -> bool:
    return isinstance(scope, str) and bool(scope) and "{" not in scope and "}" not in scope


# -- results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The outcome of one rate-limit check: the bucket closest to empty."""

    #: Whether the request may pass (every bucket had a token, and gave one).
    allowed: bool
    #: Size of the reported bucket (its burst), ``RateLimit-Limit``.
    limit: int
    #: Tokens left in it, ``RateLimit-Remaining``.
    remaining: int
    #: Seconds until the bucket is full again, ``RateLimit-Reset`` (rounded up).
    reset: float
    #: Seconds until the next token, when refused (``Retry-After``); else ``None``.
    retry_after: float | None
    #: The Redis key of the reported bucket.
    key: str

    def headers(self) -> dict[str, str]:
        """The ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` headers.

        These are the fields of the IETF "RateLimit header fields for HTTP"
        drafts. ``Retry-After`` is not among them: it is sent only on 429
        (and 503) responses.
        """
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }


def _binding(a: RateLimitResult | None, b: RateLimitResult) -> RateLimitResult:
    """The result to report of two checks of one request: a refusal, else the fewest tokens."""
    if a is None or not b.allowed:
        return b
    if not a.allowed:
        return a
    return b if b.remaining < a.remaining else a


# -- the limiter (per app) --------------------------------------------------


class RateLimiter:
    """Runs ``ratelimit.lua`` for one app; lives in its :class:`FlashSaleState`.

    Holds the app's registered script, its key prefix, the header switch
    (:data:`FLASHSALE_RATELIMIT_HEADERS`) and the site-wide API limit
    (:data:`FLASHSALE_API_RATE_LIMIT`).
    """

    def __init__(
        self,
        client: RedisClient,
        key_prefix: str,
        *,
        headers: bool = True,
        api_rate_limit: str | None = None,
        api_rate_limit_key: KeyFunc | str = "user_or_ip",
        per_bucket: bool | None = None,
    ) -> None:
        self._script = register(client, "clock", "gcra", "ratelimit")
        #: Start of every bucket key: ``<prefix>:rl:``.
        self.prefix = Keys(key_prefix).view_buckets()
        #: Whether successful responses carry ``RateLimit-*`` headers.
        self.headers = headers
        if per_bucket is None:
            from redis.cluster import RedisCluster

            per_bucket = isinstance(client, RedisCluster)
        #: Check stacked buckets one call each (Redis Cluster: buckets live in
        #: different slots, so one script cannot take them all).
        self.per_bucket = per_bucket
        #: The site-wide limit in front of the blueprint, or ``None`` (off).
        self.api_limit: Limit | None = None
        if api_rate_limit:
            self.api_limit = Limit(
                parse_rate(api_rate_limit, setting="FLASHSALE_API_RATE_LIMIT"),
                key=key_function(api_rate_limit_key, setting="FLASHSALE_API_RATE_LIMIT_KEY"),
                scope="api",
            )

    def install(self, app: Flask) -> None:
        """Add the app's hooks: response headers, and the site-wide API limit."""
        if self.headers:
            app.after_request(_add_headers)
        if self.api_limit is not None:
            self.api_limit.apply_to(app, blueprint=BLUEPRINT)

    def hit(
        self, buckets: Sequence[tuple[str, Rate]], *, now_ms: int | None = None
    ) -> RateLimitResult:
        """Take one token from every bucket ``(key, rate)``, or from none.

        ``now_ms`` replaces Redis ``TIME`` as the clock (for tests only).
        """
        if self.per_bucket and len(buckets) > 1:
            # Redis Cluster: one call per bucket, stopping at the first refusal
            # (buckets checked before it have given their token).
            result: RateLimitResult | None = None
            for bucket in buckets:
                result = _binding(result, self.hit([bucket], now_ms=now_ms))
                if not result.allowed:
                    break
            assert result is not None
            return result
        keys: list[str] = []
        args: list[str] = ["" if now_ms is None else str(now_ms)]
        for key, rate in buckets:
            keys.append(key)
            args.append(repr(rate.interval_ms))
            args.append(str(rate.burst))
        allowed, index, size, left, reset_ms, wait_ms = self._script(keys=keys, args=args)
        return RateLimitResult(
            allowed=bool(allowed),
            limit=int(size),
            remaining=int(left),
            reset=int(reset_ms) / 1000.0,
            retry_after=None if allowed else int(wait_ms) / 1000.0,
            key=keys[int(index) - 1],
        )


def _add_headers(response: Response) -> Response:
    result: RateLimitResult | None = request.environ.get(_ENVIRON_KEY)
    if result is not None:
        for name, value in result.headers().items():
            response.headers[name] = value
    return response


# -- limits -----------------------------------------------------------------

_LIMITS_ATTR = "_flashsale_limits"


class Limit:
    """A token-bucket rate limit: ``rate`` tokens refill a bucket of ``burst``.

    Use it as a view decorator (stacked limits are checked together, in one
    round trip), on a blueprint or an app with :meth:`apply_to`, or as a
    context manager around part of a view. A refused request raises
    :class:`~flask_flashsale.RateLimited` (429 problem+json with ``Retry-After``
    and ``RateLimit-*`` headers) and sends
    :data:`~flask_flashsale.signals.request_rate_limited`.

    ``key`` picks the bucket of a request: a callable returning a string (or
    ``None`` to skip the limit), or ``"user_or_ip"`` (default), ``"user"``,
    ``"ip"``, ``"global"``. ``scope`` names the bucket family; by default each
    endpoint (and rate) has its own, so two views never share a bucket; give
    the same ``scope`` to share one. ``exempt_when`` returning true skips the
    limit; ``methods`` restricts it to those HTTP methods.

    Everything is validated here, when the limit is made: a bad rate raises
    :class:`~flask_flashsale.ConfigurationError` at import time, not at request time.
    """

    __slots__ = ("_tag", "exempt_when", "key", "methods", "rate", "scope")

    def __init__(
        self,
        rate: str | Rate,
        *,
        burst: int | None = None,
        key: KeyFunc | str = "user_or_ip",
        scope: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        #: The parsed :class:`Rate`.
        self.rate = parse_rate(rate, burst=burst)
        #: The key function.
        self.key: KeyFunc = key_function(key)
        if scope is not None and not _valid_scope(scope):
            raise ConfigurationError(
                f"invalid rate-limit scope {scope!r}: use a non-empty string without braces"
            )
        #: Shared bucket family, or ``None`` for one per endpoint and rate.
        self.scope = scope
        #: Hook that exempts a request from this limit when it returns true.
        self.exempt_when = exempt_when
        if isinstance(methods, str):
            methods = (methods,)
        #: HTTP methods the limit applies to (``None``: all).
        self.methods = frozenset(m.upper() for m in methods) if methods is not None else None
        self._tag = f"{self.rate.limit}/{self.rate.period:g}s"

    def __repr__(self) -> str:
        return f"<Limit {self.rate} scope={self.scope!r}>"

    def bucket_key(self, prefix: str, key: str) -> str:
        """The Redis key of ``key``'s bucket: ``<prefix>:rl:<scope>:<key>``."""
        scope = self.scope
        if scope is None:
            endpoint = request.endpoint if has_request_context() else None
            scope = f"{_safe(endpoint or '-')}@{self._tag}"
        return f"{prefix}{scope}:{_safe(key)}"

    def applies(self) -> bool:
        """Whether this limit applies to the current request (methods, ``exempt_when``)."""
        if self.methods is not None and request.method not in self.methods:
            return False
        return not (self.exempt_when is not None and self.exempt_when())

    def hit(self, key: str | None = None, *, now_ms: int | None = None) -> RateLimitResult | None:
        """Take a token from ``key``'s bucket (default: the key function's) and report.

        Raises nothing when the bucket is empty: check
        :attr:`RateLimitResult.allowed`. Returns ``None`` when the key function
        says the limit does not apply. ``now_ms`` overrides Redis ``TIME``
        (tests only). Needs an app context.
        """
        bucket = key if key is not None else self.key()
        if bucket is None:
            return None
        limiter = _state().limiter
        return limiter.hit(
            [(self.bucket_key(limiter.prefix, str(bucket)), self.rate)], now_ms=now_ms
        )

    # -- the three ways to use a limit --

    def __call__(self, view: Callable[P, R]) -> Callable[P, R]:
        """Decorate a view; limits stacked directly on each other share one round trip."""
        inner: tuple[Callable[P, R], tuple[Limit, ...]] | None = getattr(view, _LIMITS_ATTR, None)
        original, limits = (inner[0], (self, *inner[1])) if inner else (view, (self,))

        @functools.wraps(view)
        def limited(*args: P.args, **kwargs: P.kwargs) -> R:
            enforce(limits)
            return cast(R, current_app.ensure_sync(original)(*args, **kwargs))

        setattr(limited, _LIMITS_ATTR, (original, limits))
        return limited

    def apply_to(self, target: Blueprint | Flask, *, blueprint: str | None = None) -> None:
        """Check this limit before every request of a blueprint or an app.

        ``limit.apply_to(bp)`` limits a blueprint (call it before the blueprint
        is registered); ``limit.apply_to(app)`` limits every request of the app;
        ``limit.apply_to(app, blueprint="name")`` limits a blueprint already
        registered on ``app``. With no ``scope``, each endpoint gets its own
        bucket; give a ``scope`` for one bucket across them all.
        """
        if blueprint is None:
            target.before_request(self._before_request)
        else:
            app = cast("Flask", target)
            app.before_request_funcs.setdefault(blueprint, []).append(self._before_request)

    def _before_request(self) -> None:
        enforce((self,))

    def __enter__(self) -> RateLimitResult | None:
        return enforce((self,))

    def __exit__(self, *exc_info: object) -> None:
        return None


def enforce(limits: Sequence[Limit]) -> RateLimitResult | None:
    """Check ``limits`` for the current request (one round trip); raise if refused.

    Returns the result reported in the ``RateLimit-*`` headers, or ``None``
    when no limit applies (exempt, other method, key function gave ``None``).
    Raises :class:`~flask_flashsale.RateLimited` when a bucket is empty.

    A Redis error propagates inside the extension's blueprint (which answers
    503 ``backend_unavailable``); anywhere else it becomes
    :class:`~flask_flashsale.BackendUnavailable` (503): limits fail closed.
    """
    state = _state()
    exempt = state.ext.hooks.limit_exempt_when
    if exempt is not None and exempt():
        return None
    limiter = state.limiter
    buckets: list[tuple[str, Rate]] = []
    for limit in limits:
        if not limit.applies():
            continue
        key = limit.key()
        if key is not None:
            buckets.append((limit.bucket_key(limiter.prefix, str(key)), limit.rate))
    if not buckets:
        return None
    try:
        result = limiter.hit(buckets)
    except redis.RedisError as exc:
        if has_request_context() and request.blueprint == BLUEPRINT:
            raise
        current_app.logger.warning("flashsale: rate limit check failed: %r", exc)
        raise BackendUnavailable("the rate limit backend is unavailable", retry_after=1) from exc
    if has_request_context():
        environ = request.environ
        environ[_ENVIRON_KEY] = _binding(environ.get(_ENVIRON_KEY), result)
    if not result.allowed:
        if signals.request_rate_limited.receivers:
            signals.request_rate_limited.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                key=result.key,
                retry_after=result.retry_after,
            )
        raise RateLimited(
            f"rate limit exceeded: retry in {result.retry_after:g} s",
            retry_after=result.retry_after,
            headers=result.headers(),
        )
    return result
