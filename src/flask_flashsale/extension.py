"""The :class:`FlashSale` extension object."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from flask import Flask, current_app

from . import config, signals
from .admission import LuaStrategy, check_order, ticket_token
from .connection import client_from_settings
from .errors import NotInitializedError, TicketNotFound
from .keys import Keys, split_ticket_id
from .models import Admission, Order, Sale, Ticket
from .orders import OrderQueue
from .ratelimit import parse_rate
from .sales import SaleStore
from .scripts import register
from .worker import InlineWorker, Worker

IdentityLoader = Callable[[], "str | int | None"]
OrderHandler = Callable[[Order], None]
F = TypeVar("F", bound=Callable[..., Any])


class FlashSaleState:
    """Everything the extension holds for one app, kept in ``app.extensions["flashsale"]``."""

    def __init__(self, ext: FlashSale, app: Flask, settings: config.Settings) -> None:
        #: The :class:`FlashSale` object this state belongs to.
        self.ext = ext
        #: Validated configuration.
        self.settings = settings
        #: Key builder for ``FLASHSALE_KEY_PREFIX``.
        self.keys = Keys(settings.key_prefix)
        #: The app's Redis client (one shared, blocking connection pool).
        self.client = client_from_settings(settings)
        #: Registered Lua scripts, by name.
        self.scripts: dict[str, Any] = {
            "admission": register(self.client, "gcra", "admission"),
            "sale_create": register(self.client, "sale_create"),
            "sale_restock": register(self.client, "sale_restock"),
        }
        #: Sale definitions.
        self.sales = SaleStore(self.client, self.keys, self.scripts)
        user_rate = settings.order_rate_per_user
        sale_rate = settings.order_rate_per_sale
        #: The inventory strategy that admits orders.
        self.strategy = LuaStrategy(
            self.client,
            self.keys,
            self.scripts["admission"],
            ticket_ttl=settings.ticket_ttl,
            user_rate=parse_rate(user_rate) if user_rate else None,
            sale_rate=parse_rate(sale_rate) if sale_rate else None,
        )
        #: The order queue (cancel, dead letters, queue stats) on the app's client.
        self.orders = OrderQueue(self.client, self.keys, ticket_ttl=settings.ticket_ttl)
        #: The in-process worker thread (``FLASHSALE_INLINE_WORKER``), else ``None``;
        #: ``state.inline_worker.stop()`` stops it.
        self.inline_worker: InlineWorker | None = None
        secret = settings.secret or app.config.get("SECRET_KEY")
        self._secret: bytes | None = (
            (secret if isinstance(secret, bytes) else str(secret).encode()) if secret else None
        )

    @property
    def secret(self) -> bytes:
        """Secret for idempotent ticket ids: ``FLASHSALE_SECRET``, ``SECRET_KEY``, or
        a random one stored once in Redis and shared by every process."""
        if self._secret is None:
            key = self.keys.secret()
            self.client.set(key, secrets.token_hex(32), nx=True)
            self._secret = str(self.client.get(key)).encode()
        return self._secret


class FlashSale:
    """Flash sales for a Flask app.

    ``FlashSale(app)`` or ``FlashSale()`` then :meth:`init_app` (one object may
    serve several apps). Everything is usable outside a request, inside an app
    context; the per-app state lives in ``app.extensions["flashsale"]``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._identity_loader: IdentityLoader | None = None
        self._order_handler: OrderHandler | None = None
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
        if settings.inline_worker:
            app.extensions["flashsale"].inline_worker = InlineWorker(app)

    def identity_loader(self, fn: F) -> F:
        """Register the function that returns the current buyer's id (``None``: 401).

        Without one, Flask-Login's ``current_user`` is used when installed.
        """
        self._identity_loader = fn
        return fn

    def order_handler(self, fn: F) -> F:
        """Register the host's hook that persists an admitted :class:`Order`.

        It runs in the worker inside an app context. Raising means "retry later";
        ``order.id`` is stable, so a unique key on it makes the hook idempotent.
        """
        self._order_handler = fn
        return fn

    @staticmethod
    def state(app: Flask | None = None) -> FlashSaleState:
        """The :class:`FlashSaleState` of ``app`` (default: ``current_app``)."""
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
        starts_at: Any = None,
        ends_at: Any = None,
        per_user_limit: int = 1,
        info: dict[str, Any] | None = None,
    ) -> Sale:
        """Define or replace a sale and return it.

        ``starts_at``/``ends_at`` are aware datetimes or Unix seconds (``None``:
        open-ended); ``price`` is a ``Decimal``, ``str`` or ``int``. Replacing a
        sale keeps what was already sold: ``remaining = stock - sold``.
        """
        return self.state().sales.create(
            sale_id,
            stock=stock,
            price=price,
            starts_at=starts_at,
            ends_at=ends_at,
            per_user_limit=per_user_limit,
            info=info,
        )

    def get_sale(self, sale_id: str) -> Sale | None:
        """Return the sale, or ``None`` if there is none with this id."""
        return self.state().sales.get(sale_id)

    def list_sales(self) -> list[Sale]:
        """Return every sale, ordered by id."""
        return self.state().sales.list()

    def restock(self, sale_id: str, quantity: int) -> int:
        """Add ``quantity`` units (negative withdraws unsold ones); return ``remaining``."""
        return self.state().sales.restock(sale_id, quantity)

    def delete_sale(self, sale_id: str) -> bool:
        """Delete a sale and its keys; True if it existed."""
        return self.state().sales.delete(sale_id)

    # -- orders ---------------------------------------------------------------

    def place_order(
        self,
        sale_id: str,
        user_id: str | int,
        quantity: int = 1,
        idempotency_key: str | None = None,
    ) -> Admission:
        """Try to admit an order: one round trip to Redis.

        Returns an :class:`Admission` whose ``status`` says what happened; only
        bad arguments raise (:class:`~flask_flashsale.InvalidRequest`).
        """
        state = self.state()
        uid = check_order(sale_id, user_id, quantity, state.settings.max_quantity)
        secret = state.secret if idempotency_key is not None else b""
        token = ticket_token(secret, sale_id, uid, idempotency_key)
        admission = state.strategy.admit(sale_id, uid, quantity, token)
        if admission.status == "queued":
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            if signals.order_admitted.receivers:
                signals.order_admitted.send(
                    app,
                    sale_id=sale_id,
                    user_id=uid,
                    ticket_id=admission.ticket_id,
                    quantity=quantity,
                    remaining=admission.remaining,
                )
            if admission.remaining == 0 and signals.sale_sold_out.receivers:
                signals.sale_sold_out.send(app, sale_id=sale_id)
        elif admission.status == "rate_limited" and signals.request_rate_limited.receivers:
            signals.request_rate_limited.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                key=f"order:{sale_id}:{uid}",
                retry_after=admission.retry_after,
            )
        return admission

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
        return Ticket(
            id=ticket_id,
            sale_id=sale_id,
            user_id=data["u"],
            quantity=int(data["q"]),
            status=data["s"],
            reason=data.get("r") or None,
        )

    def cancel(self, ticket_id: str, *, reason: str = "cancelled") -> bool:
        """Cancel an order and give its stock and the buyer's count back, exactly once.

        For a payment timeout or a refund. Returns True if this call gave the
        stock back, False if the order was already cancelled or had failed
        (concurrent calls: exactly one returns True). The ticket becomes
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
        self, *, burst: bool = False, concurrency: int = 1, name: str | None = None
    ) -> int:
        """Process the order queue in this process; return how many orders it settled.

        Reads every sale's stream (new sales are found without a restart),
        calls :meth:`order_handler` inside an app context, then confirms the
        ticket and acknowledges the order in one script. ``burst=True`` drains
        the queue and returns; otherwise it runs until SIGTERM/SIGINT (the order
        in hand is finished first; a second signal stops at once).
        ``concurrency`` consumer threads share the work. See :doc:`worker`.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return Worker(app, name=name, burst=burst, concurrency=concurrency).run()
