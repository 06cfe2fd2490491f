"""Immutable value objects returned by the public API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

SaleStatus = Literal["upcoming", "active", "sold_out", "ended"]
#: How a sale lets buyers in: no waiting room, a FIFO queue, or a lottery then FIFO.
Fairness = Literal["none", "fifo", "lottery"]
AdmissionStatus = Literal[
    "queued",
    "duplicate",
    "idempotency_mismatch",
    "sold_out",
    "limit_reached",
    "not_started",
    "ended",
    "rate_limited",
    "not_found",
    "busy",
    "pass_required",
    "pass_invalid",
]
TicketStatus = Literal[
    "queued",
    "confirmed",
    "failed",
    "cancelled",
    # with a payment timeout (see docs/payments.rst):
    "awaiting_payment",
    "paid",
    "expired",
]


def to_millis(value: datetime | float | int | None) -> int | None:
    """Convert an aware ``datetime`` or Unix seconds to Unix milliseconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("sale times must be timezone-aware datetimes or Unix seconds")
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a datetime or Unix seconds, got {type(value).__name__}")
    return int(value * 1000)


def from_millis(value: int | None) -> datetime | None:
    """Convert Unix milliseconds to an aware UTC ``datetime``."""
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)


def to_price(value: Decimal | str | int | None) -> Decimal | None:
    """Validate a price: ``Decimal``, ``str`` or ``int``; never ``float``."""
    if value is None:
        return None
    if isinstance(value, (float, bool)):
        raise TypeError("prices must be Decimal, str or int, never float")
    try:
        price = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"invalid price {value!r}") from None
    if not price.is_finite() or price < 0:
        raise ValueError(f"invalid price {value!r}")
    return price


@dataclass(frozen=True, slots=True)
class Sale:
    """A flash sale as stored in Redis."""

    #: Sale id (``[A-Za-z0-9_.-]{1,64}``).
    id: str
    #: Units offered: the stock the sale was created with, plus restocks.
    stock: int
    #: Units still available for admission; never below 0. After an admin cut
    #: the stock below what buyers hold (re-create, negative restock), it shows
    #: 0 until enough units come back (cancelled, failed).
    remaining: int
    #: Unit price, or ``None``.
    price: Decimal | None
    #: When the sale opens (aware UTC datetime), ``None`` for "already open".
    starts_at: datetime | None
    #: When the sale closes, ``None`` for open-ended.
    ends_at: datetime | None
    #: How many units one buyer may hold.
    per_user_limit: int
    #: Host data (name, image...) passed to ``create_sale`` and returned by the API.
    info: dict[str, Any]
    #: Seconds a buyer has to pay once the order hook ran (``None``: no time limit,
    #: tickets go ``queued -> confirmed``). See :doc:`/payments`.
    payment_timeout: float | None = None
    #: Waiting room: ``"none"`` (orders go straight to admission), ``"fifo"`` or
    #: ``"lottery"`` (buyers queue and order with a pass; see :doc:`/fairness`).
    fairness: Fairness = "none"
    #: Buyers the waiting room lets through per second (``None`` without one).
    admit_rate: float | None = None
    #: When the waiting room opens (``None``: without one, or open from creation).
    queue_opens_at: datetime | None = None

    @property
    def status(self) -> SaleStatus:
        """``upcoming``, ``active``, ``sold_out`` or ``ended``, judged on this host's clock.

        Admission itself judges the window on Redis ``TIME``; this property is for display.
        """
        now = datetime.now(timezone.utc)
        if self.ends_at is not None and now >= self.ends_at:
            return "ended"
        if self.starts_at is not None and now < self.starts_at:
            return "upcoming"
        if self.remaining <= 0:
            return "sold_out"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the HTTP API."""
        return {
            "id": self.id,
            "status": self.status,
            "stock": self.stock,
            "remaining": self.remaining,
            "price": None if self.price is None else str(self.price),
            "starts_at": None if self.starts_at is None else self.starts_at.isoformat(),
            "ends_at": None if self.ends_at is None else self.ends_at.isoformat(),
            "per_user_limit": self.per_user_limit,
            "info": self.info,
            "payment_timeout": self.payment_timeout,
            "fairness": self.fairness,
            "admit_rate": self.admit_rate,
            "queue_opens_at": (
                None if self.queue_opens_at is None else self.queue_opens_at.isoformat()
            ),
        }


@dataclass(frozen=True, slots=True)
class Admission:
    """The outcome of one order attempt (:meth:`FlashSale.place_order`).

    Outcomes are values, not exceptions: check :attr:`status` (or :attr:`ok`).
    """

    #: ``queued``, ``duplicate``, ``idempotency_mismatch`` (the idempotency key
    #: was used before with another quantity; nothing was written),
    #: ``sold_out``, ``limit_reached``, ``not_started``, ``ended``,
    #: ``rate_limited``, ``not_found`` (or ``busy`` from the
    #: ``optimistic``/``lock`` strategies when contention outlasts their retries);
    #: for a sale with a waiting room, ``pass_required`` (no pass given) or
    #: ``pass_invalid`` (not a valid, unexpired pass for this buyer and sale).
    status: AdmissionStatus
    #: Ticket of the admitted order (``queued`` and ``duplicate``).
    ticket_id: str | None = None
    #: Units left after this attempt, where known (never below 0).
    remaining: int | None = None
    #: Seconds until a retry may succeed (``not_started``, ``rate_limited``, ``busy``).
    retry_after: float | None = None
    #: Which admission throttle refused a ``rate_limited`` attempt: ``"user"``
    #: (:data:`FLASHSALE_ORDER_RATE_PER_USER`) or ``"sale"`` (``..._PER_SALE``).
    throttled_by: Literal["user", "sale"] | None = None

    @property
    def ok(self) -> bool:
        """True when the buyer holds a ticket (``queued`` or ``duplicate``)."""
        return self.status == "queued" or self.status == "duplicate"


@dataclass(frozen=True, slots=True)
class Ticket:
    """An order's ticket: what the buyer polls."""

    #: Ticket id; also the stable :attr:`Order.id`.
    id: str
    sale_id: str
    user_id: str
    quantity: int
    #: ``queued``, ``confirmed``, ``failed`` or ``cancelled``; on a sale with a
    #: payment timeout ``awaiting_payment``, ``paid`` or ``expired`` instead of
    #: ``confirmed``.
    status: TicketStatus
    #: Why the order failed or was cancelled, else ``None``.
    reason: str | None = None
    #: When the buyer must have paid by (aware UTC datetime): set once the
    #: ticket is ``awaiting_payment`` (kept when ``paid`` or ``expired``), else ``None``.
    pay_by: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the HTTP API."""
        return {
            "ticket_id": self.id,
            "sale_id": self.sale_id,
            "quantity": self.quantity,
            "status": self.status,
            "reason": self.reason,
            "pay_by": None if self.pay_by is None else self.pay_by.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Order:
    """An admitted order, handed to the host's ``order_handler`` by the worker."""

    #: Stable id (the ticket id): the same on every redelivery, so a unique key
    #: on it makes the host's write idempotent.
    id: str
    ticket_id: str
    sale_id: str
    user_id: str
    quantity: int
    price: Decimal | None
    admitted_at: datetime
    #: 1 on first delivery, then the delivery count Redis reports.
    attempt: int = 1


#: The one :class:`Admission` the sold-out fast path answers with (shared, so
#: a refusal from memory allocates nothing).
SOLD_OUT_FROM_MEMORY = Admission(status="sold_out", remaining=0)
