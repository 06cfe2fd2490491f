"""The :class:`FlashSale` extension object."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, current_app

from . import config, signals
from .admission import admit_checked, check_order
from .autoscale import Supervisor
from .breaker import breaker_for
from .cache import SaleCache, Subscriber
from .connection import Backend, backend_from_settings
from .dashboard import create_dashboard
from .errors import ConfigurationError, NotInitializedError, TicketNotFound
from .keys import Keys, check_sale_id, join_ticket_id, split_ticket_id
from .lock import FencedLock
from .metrics import Metrics
from .models import Admission, Order, Sale, Ticket, from_millis
from .orders import OrderQueue
from .payments import Payments
from .ratelimit import KeyFunc, Limit, Rate, RateLimiter, parse_rate
from .reconcile import Reconciler, ReconcileSource, SaleReconciliation
from .sales import SaleStore
from .scripts import register
from .status import Status, read_status
from .strategies import InventoryStrategy, build_strategy
from .waiting import QueueStatus, WaitingRoom
from .worker import InlineWorker, Worker

if TYPE_CHECKING:
    from .protocols import Script

IdentityLoader = Callable[[], "str | int | None"]
OrderHandler = Callable[[Order], None]
#: The batch hook: the orders of one read, handled in one call (one transaction).
OrderBatchHandler = Callable[[list[Order]], None]
ExpiryHandler = Callable[[Ticket], None]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Hooks:
    """The host's functions registered on a :class:`FlashSale` (``None``: not registered).

    A read-only snapshot, from :attr:`FlashSale.hooks`; register with the
    decorators of the same names.
    """

    #: :meth:`FlashSale.identity_loader`.
    identity_loader: IdentityLoader | None
    #: :meth:`FlashSale.order_handler`.
    order_handler: OrderHandler | None
    #: :meth:`FlashSale.order_batch_handler` (at most one of the two is registered).
    order_batch_handler: OrderBatchHandler | None
    #: :meth:`FlashSale.expiry_handler`.
    expiry_handler: ExpiryHandler | None
    #: :meth:`FlashSale.limit_exempt_when`.
    limit_exempt_when: Callable[[], bool] | None
    #: :meth:`FlashSale.reconcile_source`.
    reconcile_source: ReconcileSource | None
    #: :meth:`FlashSale.dashboard_access`.
    dashboard_access: Callable[[], bool] | None


def ticket_secret(app: Flask, settings: config.Settings, backend: Backend) -> bytes:
    """The secret of idempotent ticket ids: ``FLASHSALE_SECRET``, else ``SECRET_KEY``.

    A ticket id for an ``Idempotency-Key`` is an HMAC under it, so it must be
    the same in every process and survive Redis losing its data. Without
    either key, ``memory://`` (one process, a throwaway store) gets a random
    secret of its own; any other URL raises
    :class:`~flask_flashsale.ConfigurationError`.
    """
    secret = settings.secret or app.config.get("SECRET_KEY")
    if secret:
        return secret if isinstance(secret, bytes) else str(secret).encode()
    if backend.process_local:
        return secrets.token_bytes(32)
    raise ConfigurationError(
        "set FLASHSALE_SECRET or SECRET_KEY: idempotent ticket ids are signed with it, "
        "and a secret made up at start-up would change when Redis loses its data"
    )


class FlashSaleState:
    """Everything the extension holds for one app, kept in ``app.extensions["flashsale"]``."""

    def __init__(self, ext: FlashSale, app: Flask, settings: config.Settings) -> None:
        #: The :class:`FlashSale` object this state belongs to.
        self.ext = ext
        #: Validated configuration.
        self.settings = settings
        #: Key builder for ``FLASHSALE_KEY_PREFIX``.
        self.keys = Keys(settings.key_prefix)
        #: Circuit breaker in front of every Redis command (``None`` if turned off).
        self.breaker = breaker_for(app, settings)
        #: What ``FLASHSALE_REDIS_URL`` names: makes the clients, knows what they can do.
        self.backend: Backend = backend_from_settings(settings)
        #: The app's Redis client (one shared, blocking connection pool).
        self.client = self.backend.client(self.breaker)
        #: Registered Lua scripts, by name.
        self.scripts: dict[str, Script] = {
            "admission": register(self.client, "clock", "gcra", "admission"),
            "sale_create": register(self.client, "sale_create"),
            "sale_restock": register(self.client, "sale_restock"),
        }
        self.scripts["lock_acquire"] = register(self.client, "lock_acquire")
        self.scripts["reconcile_fix"] = register(self.client, "reconcile_fix")
        #: Sale definitions.
        self.sales = SaleStore(self.client, self.keys, self.scripts)
        user_rate = settings.order_rate_per_user
        sale_rate = settings.order_rate_per_sale
        #: Admission throttles by bucket (``"user"``, ``"sale"``), ``None`` when off.
        self.order_rates: dict[str, Rate | None] = {
            "user": parse_rate(user_rate) if user_rate else None,
            "sale": parse_rate(sale_rate) if sale_rate else None,
        }
        #: The inventory strategy that admits orders (``FLASHSALE_INVENTORY_STRATEGY``).
        self.strategy: InventoryStrategy = build_strategy(
            settings, self.client, self.keys, self.scripts, self.order_rates
        )
        #: In-process cache of sale data and sold-out flags, invalidated by pub/sub.
        self.cache = SaleCache(
            settings.cache_ttl,
            client=self.client,
            channel=self.keys.events_channel(),
            subscriber=Subscriber(
                self.backend.events_client(self.client), self.keys.events_channel()
            ),
        )
        #: The order queue (cancel, dead letters, queue stats) on the app's client.
        self.orders = OrderQueue(
            self.client,
            self.keys,
            ticket_ttl=settings.ticket_ttl,
            on_change=self.cache.own_change,
        )
        #: Payments of tickets and their counters (:meth:`FlashSale.mark_paid`).
        self.payments = Payments(self.client, self.keys, on_change=self.cache.own_change)
        #: The in-process worker thread (``FLASHSALE_INLINE_WORKER``), else ``None``;
        #: ``state.inline_worker.stop()`` stops it.
        self.inline_worker: InlineWorker | None = None
        #: View rate limits (:meth:`FlashSale.limit`) and the site-wide API limit.
        self.limiter = RateLimiter(
            self.client,
            settings.key_prefix,
            headers=settings.ratelimit_headers,
            api_rate_limit=settings.api_rate_limit,
            api_rate_limit_key=settings.api_rate_limit_key,
        )
        #: Secret of idempotent ticket ids (see :func:`ticket_secret`).
        self.secret: bytes = ticket_secret(app, settings, self.backend)
        #: The sales' waiting rooms: joins, polls and passes (signed with :attr:`secret`).
        self.scripts["queue_join"] = register(self.client, "clock", "queue", "queue_join")
        self.scripts["queue_poll"] = register(self.client, "clock", "queue", "queue_poll")
        self.waiting = WaitingRoom(
            self.client,
            self.keys,
            join_script=self.scripts["queue_join"],
            poll_script=self.scripts["queue_poll"],
            secret=self.secret,
            pass_ttl=settings.pass_ttl,
            cache=self.cache,
        )
        #: Prometheus metrics on the app's own registry (``FLASHSALE_METRICS``), else ``None``.
        self.metrics: Metrics | None = Metrics(self) if settings.metrics else None


def _ticket(ticket_id: str, sale_id: str, data: dict[str, Any]) -> Ticket:
    """A :class:`Ticket` from the fields of its Redis hash."""
    return Ticket(
        id=ticket_id,
        sale_id=sale_id,
        user_id=data["u"],
        quantity=int(data["q"]),
        status=data["s"],
        reason=data.get("r") or None,
        pay_by=from_millis(int(data["d"])) if data.get("d") else None,
    )


class FlashSale:
    """Flash sales for a Flask app.

    ``FlashSale(app)`` or ``FlashSale()`` then :meth:`init_app` (one object may
    serve several apps). Everything is usable outside a request, inside an app
    context; the per-app state lives in ``app.extensions["flashsale"]``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._identity_loader: IdentityLoader | None = None
        self._order_handler: OrderHandler | None = None
        self._order_batch_handler: OrderBatchHandler | None = None
        self._expiry_handler: ExpiryHandler | None = None
        self._limit_exempt_when: Callable[[], bool] | None = None
        self._reconcile_source: ReconcileSource | None = None
        self._dashboard_access: Callable[[], bool] | None = None
        self._hooks: Hooks | None = None  # the snapshot, made again after a registration
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read ``FLASHSALE_*`` config, connect, and register the blueprint on ``app``."""
        from .views import create_blueprint, install_error_handlers

        settings = config.load(app.config)
        app.extensions["flashsale"] = FlashSaleState(self, app, settings)
        app.register_blueprint(create_blueprint(self), url_prefix=settings.url_prefix)
        install_error_handlers(app, settings.url_prefix)
        if settings.dashboard_path:
            app.register_blueprint(create_dashboard(self), url_prefix=settings.dashboard_path)
        app.extensions["flashsale"].limiter.install(app)
        if settings.inline_worker:
            app.extensions["flashsale"].inline_worker = InlineWorker(app)
        metrics = app.extensions["flashsale"].metrics
        if metrics is not None:
            metrics.connect(app)
            if settings.metrics_path:
                app.add_url_rule(
                    settings.metrics_path, "flashsale_metrics", lambda: metrics.response()
                )

    def identity_loader(self, fn: F) -> F:
        """Register the function that returns the current buyer's id (``None``: 401).

        Without one, Flask-Login's ``current_user`` is used when installed.
        """
        self._identity_loader = fn
        self._hooks = None
        return fn

    def order_handler(self, fn: F) -> F:
        """Register the host's hook that persists an admitted :class:`Order`.

        It runs in the worker inside an app context. Raising means "retry later";
        ``order.id`` is stable, so a unique key on it makes the hook idempotent.
        Register this or :meth:`order_batch_handler`, not both
        (:class:`~flask_flashsale.ConfigurationError`).
        """
        if self._order_batch_handler is not None:
            raise ConfigurationError(
                "an order_batch_handler is registered: register order_handler or "
                "order_batch_handler, not both"
            )
        self._order_handler = fn
        self._hooks = None
        return fn

    def order_batch_handler(self, fn: F) -> F:
        """Register the host's hook that persists several admitted orders in one call.

        ``fn(orders)`` gets a ``list[Order]``: the orders of one read of the
        worker (up to :data:`FLASHSALE_WORKER_BATCH` per sale, possibly of
        several sales) whose tickets still need the hook, so the host can
        write them in one transaction with one multi-row insert. It runs in
        the worker inside an app context. Returning confirms every order of
        the list; raising confirms none: the worker then calls ``fn`` again
        with each order alone (a list of one), so only an order that fails
        by itself counts a failure (retry, and compensation after
        ``FLASHSALE_MAX_ATTEMPTS``). Orders claimed from a dead worker and
        retries come one at a time too. A unique key on ``order.id`` makes
        it idempotent. Register this or :meth:`order_handler`, not both
        (:class:`~flask_flashsale.ConfigurationError`). See :doc:`/worker`.
        """
        if self._order_handler is not None:
            raise ConfigurationError(
                "an order_handler is registered: register order_handler or "
                "order_batch_handler, not both"
            )
        self._order_batch_handler = fn
        self._hooks = None
        return fn

    def dashboard_access(self, fn: F) -> F:
        """Register the function that says whether the current request may see the dashboard.

        It runs inside the request (read your session, ``current_user``...) and
        returns True for operators. Without one, every request to
        :data:`FLASHSALE_DASHBOARD_PATH` gets 403 ``dashboard_forbidden``.
        See :doc:`/dashboard`.
        """
        self._dashboard_access = fn
        self._hooks = None
        return fn

    def dashboard_allowed(self) -> bool:
        """True if the current request may see the dashboard (:meth:`dashboard_access`)."""
        return self._dashboard_access is not None and self._dashboard_access() is True

    def expiry_handler(self, fn: F) -> F:
        """Register the host's hook for unpaid holds that expired (see :doc:`/payments`).

        Called in the worker, inside an app context, with the expired
        :class:`Ticket` (``ticket.id`` is the ``order.id`` the order hook
        saw) once its stock is back on sale: cancel your own row. At least
        once, like the order hook: raising means "retry later", and after
        ``FLASHSALE_MAX_ATTEMPTS`` failures the call is dead-lettered.
        """
        self._expiry_handler = fn
        self._hooks = None
        return fn

    @property
    def hooks(self) -> Hooks:
        """The functions registered so far (:class:`Hooks`): what the worker and limits call."""
        hooks = self._hooks
        if hooks is None:
            hooks = self._hooks = Hooks(
                identity_loader=self._identity_loader,
                order_handler=self._order_handler,
                order_batch_handler=self._order_batch_handler,
                expiry_handler=self._expiry_handler,
                limit_exempt_when=self._limit_exempt_when,
                reconcile_source=self._reconcile_source,
                dashboard_access=self._dashboard_access,
            )
        return hooks

    @staticmethod
    def state(app: Flask | None = None) -> FlashSaleState:
        """The :class:`~flask_flashsale.extension.FlashSaleState` of ``app`` (or ``current_app``).

        The extension's internals for that app (clients, scripts, the inline
        worker...): for tests and tools, not a stable API.
        """
        target = app if app is not None else current_app
        try:
            state: FlashSaleState = target.extensions["flashsale"]
        except KeyError:
            raise NotInitializedError(
                "FlashSale is not initialised for this app: call FlashSale(app) or "
                "flashsale.init_app(app) first"
            ) from None
        return state

    def current_user_id(self) -> str | None:
        """The buyer of the current request, from the identity loader (or Flask-Login)."""
        if self._identity_loader is not None:
            user = self._identity_loader()
            return None if user is None else str(user)
        try:
            from flask_login import current_user
        except ImportError:
            return None
        if current_user is not None and getattr(current_user, "is_authenticated", False):
            return str(current_user.get_id())
        return None

    # -- sales ----------------------------------------------------------------

    def create_sale(
        self,
        sale_id: str,
        *,
        stock: int,
        price: Decimal | str | int | None = None,
        starts_at: datetime | float | None = None,
        ends_at: datetime | float | None = None,
        per_user_limit: int = 1,
        info: dict[str, Any] | None = None,
        payment_timeout: float | None = None,
        fairness: str = "none",
        admit_rate: float | None = None,
        queue_opens_at: datetime | float | None = None,
    ) -> Sale:
        """Define or replace a sale and return it.

        ``starts_at``/``ends_at`` are aware datetimes or Unix seconds (``None``:
        open-ended); ``price`` is a ``Decimal``, ``str`` or ``int``. Replacing a
        sale keeps what was already sold: ``remaining = stock - sold``.

        ``payment_timeout`` (seconds, ``None``: off) gives each buyer that long
        from admission to pay: once the order hook ran, the ticket is
        ``awaiting_payment`` with ``pay_by``; :meth:`mark_paid` makes it
        ``paid``; unpaid, the worker expires it and its stock goes back on
        sale. See :doc:`/payments`.
        ``fairness="fifo"`` or ``"lottery"`` puts a waiting room in front of the
        sale (see :doc:`/fairness`): buyers :meth:`join_queue`, and may order
        only with the pass they get once let through, ``admit_rate`` buyers per
        second (required). ``queue_opens_at`` (default: 15 minutes before
        ``starts_at``) is when joining opens. A lottery needs ``starts_at``.
        Replacing a sale keeps its queue unless the fairness mode changes.
        """
        state = self.state()
        sale = state.sales.create(
            sale_id,
            stock=stock,
            price=price,
            starts_at=starts_at,
            ends_at=ends_at,
            per_user_limit=per_user_limit,
            info=info,
            payment_timeout=payment_timeout,
            fairness=fairness,
            admit_rate=admit_rate,
            queue_opens_at=queue_opens_at,
        )
        state.cache.changed(sale_id)
        return sale

    def get_sale(self, sale_id: str) -> Sale | None:
        """Return the sale, or ``None`` if there is none with this id.

        Served from the in-process cache for up to ``FLASHSALE_CACHE_TTL``.
        """
        state = self.state()
        return state.cache.sale(sale_id, state.sales.get)

    def list_sales(self) -> list[Sale]:
        """Return every sale, ordered by id (cached like :meth:`get_sale`)."""
        state = self.state()
        return state.cache.sales(state.sales.list_known)

    def restock(self, sale_id: str, quantity: int) -> int:
        """Add ``quantity`` units (negative withdraws some); return ``remaining``.

        A withdrawal may take more than remains (never more than the stock):
        tickets already admitted stay valid, ``remaining`` shows 0, and no order
        is admitted until enough units come back. Raises ``ValueError`` if the
        stock would go below 0.
        """
        state = self.state()
        remaining = state.sales.restock(sale_id, quantity)
        state.cache.changed(sale_id)
        return remaining

    def delete_sale(self, sale_id: str) -> bool:
        """Delete a sale and its keys; True if it existed."""
        state = self.state()
        existed = state.sales.delete(sale_id)
        state.cache.changed(sale_id)
        return existed

    # -- orders ---------------------------------------------------------------

    def place_order(
        self,
        sale_id: str,
        user_id: str | int,
        quantity: int = 1,
        idempotency_key: str | None = None,
        *,
        queue_pass: str | None = None,
    ) -> Admission:
        """Try to admit an order: one round trip to Redis.

        Returns an :class:`Admission` whose ``status`` says what happened; only
        bad arguments raise (:class:`~flask_flashsale.InvalidRequest`).

        A sale with a waiting room needs ``queue_pass``, the pass of the buyer's
        :class:`QueueStatus` (the ``FlashSale-Pass`` header over HTTP): it is
        verified here, without Redis; without one the status is
        ``pass_required``, with one that is not valid for this buyer and sale
        (forged, expired, another buyer's) ``pass_invalid``. A pass may be used
        for several orders while it lives; ``per_user_limit`` still applies.

        Once admission has answered that a sale has no unit left, this process
        answers ``sold_out`` from memory, without Redis, until a ``changed``
        event (restock, cancel...) or ``FLASHSALE_CACHE_TTL`` clears it.
        Attempts with an ``idempotency_key`` always go to Redis, so a retry
        still gets its ticket back (``duplicate``).
        """
        state = self.state()
        uid = check_order(sale_id, user_id, quantity, state.settings.max_quantity)
        return admit_checked(state, sale_id, uid, quantity, idempotency_key, queue_pass)

    # -- waiting room -----------------------------------------------------------

    def join_queue(self, sale_id: str, user_id: str | int) -> QueueStatus:
        """Join the sale's waiting room, or get the place already held: one round trip.

        A buyer has one place: joining again returns it (and its position),
        unless its pass lapsed unused (``expired``): then the buyer queues
        again, at the back. Raises :class:`~flask_flashsale.SaleNotFound`,
        :class:`~flask_flashsale.NoQueue` (``fairness="none"``) or
        :class:`~flask_flashsale.QueueNotOpen` (before ``queue_opens_at``); a
        sale that sold out or ended answers with that status and no new place.
        Sends :data:`~flask_flashsale.buyer_queued` for a new place.
        """
        return self.state().waiting.join(sale_id, user_id)

    def queue_status(
        self, sale_id: str, user_id: str | int, *, place_token: str | None = None
    ) -> QueueStatus:
        """The buyer's place in the sale's waiting room now.

        With the ``place_token`` of an earlier answer, no Redis call (this
        process re-reads the queue at most every 100 ms); without it, one.
        Raises :class:`~flask_flashsale.SaleNotFound`,
        :class:`~flask_flashsale.NoQueue`, or
        :class:`~flask_flashsale.NotInQueue` for a buyer who never joined.
        """
        return self.state().waiting.status(sale_id, user_id, place_token)

    def get_ticket(self, ticket_id: str) -> Ticket | None:
        """Return the ticket (order status), or ``None`` if unknown or expired."""
        try:
            sale_id, token = split_ticket_id(ticket_id)
        except TicketNotFound:
            return None
        state = self.state()
        data = state.client.hgetall(state.keys.ticket(sale_id, token))
        if not data:
            return None
        return _ticket(ticket_id, sale_id, data)

    def user_tickets(self, sale_id: str, user_id: str | int) -> list[Ticket]:
        """Return the buyer's tickets for the sale, oldest first (expired ones skipped).

        For a buyer whose answer was lost (a timeout, a ``503`` after Redis took
        the order): the admitted order is here, whatever its status. Served by
        ``GET <prefix>/<sale_id>/orders``. Each admission records its ticket in
        the buyer's list (a field of the sale's ``buyers`` hash) in the same round
        trip; the list keeps the buyer's last
        ``per_user_limit + 20`` tickets
        (:data:`~flask_flashsale.admission.BUYER_INDEX_SLACK`), so a live ticket
        drops out only after more than 20 newer ones were given back. Two round
        trips (the list, then the tickets, pipelined).
        """
        check_sale_id(sale_id)
        uid = str(user_id)
        state = self.state()
        keys = state.keys
        listed: str | None = state.client.hget(keys.buyers(sale_id), uid)
        # A re-admitted expired key appears twice.
        tokens = list(dict.fromkeys(listed.split())) if listed else []
        if not tokens:
            return []
        pipe = state.client.pipeline(transaction=False)
        for token in tokens:
            pipe.hgetall(keys.ticket(sale_id, token))
        return [
            _ticket(join_ticket_id(sale_id, token), sale_id, data)
            for token, data in zip(tokens, pipe.execute(), strict=True)
            if data and data.get("u") == uid
        ]

    # -- monitoring -----------------------------------------------------------

    def status(self) -> Status:
        """Every sale's stock, queue and payments, and the live workers, read from Redis.

        What ``flask flashsale status`` prints and the operator dashboard
        shows (one reading for both): a :class:`~flask_flashsale.status.Status`.
        """
        return read_status(self.state())

    def metrics_response(self) -> Any:
        """The Prometheus text exposition of the app's metrics, as a response.

        For a host that serves metrics from its own view (e.g. behind its own
        guard, with ``FLASHSALE_METRICS_PATH = None``). Raises
        :class:`~flask_flashsale.ConfigurationError` if ``FLASHSALE_METRICS`` is off.
        See :doc:`metrics`.
        """
        metrics = self.state().metrics
        if metrics is None:
            raise ConfigurationError("metrics are off: set FLASHSALE_METRICS = True")
        return metrics.response()

    # -- rate limits ----------------------------------------------------------

    def limit(
        self,
        rate: str | Rate,
        *,
        burst: int | None = None,
        key: KeyFunc | str = "user_or_ip",
        scope: str | None = None,
        exempt_when: Callable[[], bool] | None = None,
        methods: Iterable[str] | None = None,
    ) -> Limit:
        """A token-bucket rate limit (GCRA in Redis) for any view: a :class:`~.ratelimit.Limit`.

        ``rate`` is e.g. ``"10/second"``, ``"600/minute"`` or
        ``"5/second;burst=10"``; ``burst`` (default: the rate's count) is how
        many requests may pass at once. ``key`` picks the bucket:
        ``"user_or_ip"`` (default), ``"user"`` (the identity loader), ``"ip"``
        (``request.remote_addr``), ``"global"`` or a callable. Use the result
        as a decorator (``@flashsale.limit("10/second")``), on a blueprint
        (``.apply_to(bp)``) or as a context manager. A bad rate raises
        :class:`~flask_flashsale.ConfigurationError` here, not at request time.
        See :doc:`ratelimit`.
        """
        return Limit(
            rate, burst=burst, key=key, scope=scope, exempt_when=exempt_when, methods=methods
        )

    def limit_exempt_when(self, fn: F) -> F:
        """Register a hook that exempts the current request from every view limit.

        When ``fn()`` returns true, no :meth:`limit` (nor the site-wide
        :data:`FLASHSALE_API_RATE_LIMIT`) is checked; admission throttles
        (:data:`FLASHSALE_ORDER_RATE_PER_USER`) still apply.
        """
        self._limit_exempt_when = fn
        self._hooks = None
        return fn

    # -- consistency ----------------------------------------------------------

    def lock(
        self, name: str, *, timeout: float, blocking_timeout: float | None = None
    ) -> FencedLock:
        """A distributed lock on the app's Redis whose ``with`` yields a fencing token.

        ``timeout`` is the lease in seconds; ``blocking_timeout`` bounds the wait
        (``None``: forever), then :class:`~flask_flashsale.LockNotAcquired` is
        raised. Releasing or extending an expired lease raises
        :class:`~flask_flashsale.LockLost`. See :doc:`/consistency` for the
        fencing pattern::

            with flashsale.lock("nightly-import", timeout=30) as token:
                db.execute("UPDATE ... SET ..., fence = ? WHERE id = ? AND fence < ?",
                           (token, row_id, token))
        """
        state = self.state()
        key, fence_key = state.keys.host_lock(name)
        return FencedLock(
            state.client,
            key,
            fence_key,
            script=state.scripts["lock_acquire"],
            timeout=timeout,
            blocking_timeout=blocking_timeout,
        )

    def reconcile_source(self, fn: F) -> F:
        """Register the host's hook for reconciliation.

        ``fn(sale_id)`` returns the units of the host's confirmed orders per
        buyer, ``{user_id: units}``, or the orders themselves as
        ``(order_id, user_id, units)`` rows; :meth:`reconcile` compares them
        with Redis. With order ids, a repair also restores the tickets Redis
        forgot (e.g. after it restarted from an older append-only file).
        """
        self._reconcile_source = fn
        self._hooks = None
        return fn

    def reconcile(
        self, sale_id: str | None = None, *, fix: bool = False
    ) -> list[SaleReconciliation]:
        """Compare Redis with the host's orders for one sale (default: every sale).

        With ``fix``, differences are repaired in Redis while holding the
        sale's lock. Needs a :meth:`reconcile_source`.
        """
        if self._reconcile_source is None:
            raise ConfigurationError(
                "reconciliation needs the host's orders: register a function with "
                "@flashsale.reconcile_source"
            )
        state = self.state()
        reconciler = Reconciler(
            state.client,
            state.keys,
            state.scripts["reconcile_fix"],
            state.scripts["lock_acquire"],
            ticket_ttl=state.settings.ticket_ttl,
        )
        sale_ids = [sale_id] if sale_id is not None else state.sales.ids()
        return [
            reconciler.run(check_sale_id(sid), self._reconcile_source, fix=fix) for sid in sale_ids
        ]

    def mark_paid(self, ticket_id: str) -> Ticket:
        """Record that the buyer paid: return the :class:`Ticket`, now ``paid``.

        For a sale with a payment timeout (:doc:`/payments`); call it from
        your payment webhook. Idempotent: on a ``paid`` ticket it returns it
        again. It also works on a ``queued`` ticket (the webhook beat the
        worker): the order hook still runs and the ticket stays ``paid``.
        Atomic with the worker's expiry and with :meth:`cancel`: exactly one
        of paid, expired and cancelled wins.

        Raises :class:`~flask_flashsale.PaymentTooLate` once ``pay_by`` has
        passed (judged on Redis time, even before a worker expired the hold)
        or on an ``expired`` ticket, :class:`~flask_flashsale.PaymentRefused`
        (its base class) on a ``cancelled`` or ``failed`` one, and
        :class:`~flask_flashsale.TicketNotFound` for an unknown ticket. On a
        sale without a payment timeout, a ``queued`` or ``confirmed`` ticket
        becomes ``paid`` at any time.
        """
        return self.state().payments.mark_paid(ticket_id)

    def cancel(self, ticket_id: str, *, reason: str = "cancelled") -> bool:
        """Cancel an order and give its stock and the buyer's count back, exactly once.

        For a refund, or a payment timeout of your own. Works on every live
        ticket: ``queued``, ``confirmed``, ``awaiting_payment`` and ``paid`` (a
        refund). Returns True if this call gave the stock back, False if the
        order was already cancelled, had failed or expired (concurrent calls,
        and calls racing :meth:`mark_paid` or the expiry: exactly one gives
        the stock back). The ticket becomes
        ``cancelled`` with ``reason``, and the worker never turns it back into
        ``confirmed``; an order cancelled while still queued is not handed to
        the hook (unless a worker already has it in hand). Raises
        :class:`~flask_flashsale.TicketNotFound` for an unknown or expired ticket.
        """
        cancelled = self.state().orders.cancel(ticket_id, reason)
        if cancelled and signals.order_cancelled.receivers:
            signals.order_cancelled.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                ticket_id=ticket_id,
                reason=reason,
            )
        return cancelled

    # -- worker ---------------------------------------------------------------

    def run_worker(
        self,
        *,
        burst: bool = False,
        concurrency: int = 1,
        name: str | None = None,
        autoscale: tuple[int, int] | None = None,
    ) -> int:
        """Process the order queue in this process; return how many orders it settled.

        Reads every sale's stream (new sales are found without a restart),
        calls :meth:`order_handler` (or :meth:`order_batch_handler`) inside an
        app context, then confirms the tickets and acknowledges the orders in
        one script. ``burst=True`` drains
        the queue and returns; otherwise it runs until SIGTERM/SIGINT (the order
        in hand is finished first; a second signal stops at once).
        ``concurrency`` consumer threads share the work. See :doc:`worker`.

        ``autoscale=(MIN, MAX)`` makes this process a supervisor instead
        (:class:`~flask_flashsale.autoscale.Supervisor`): it runs between MIN
        and MAX worker processes, named after ``name``, scaled on the queue
        lag (``FLASHSALE_AUTOSCALE_*``), and returns the orders they settled
        once stopped. Not with ``burst``, nor under ``memory://``.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if autoscale is not None:
            if burst:
                raise ValueError("autoscale and burst do not mix: a supervisor runs until stopped")
            minimum, maximum = autoscale
            return Supervisor(app, minimum, maximum, name=name, concurrency=concurrency).run()
        return Worker(app, name=name, burst=burst, concurrency=concurrency).run()
