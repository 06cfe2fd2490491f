"""Flask-FlashSale: flash sales for Flask that never oversell.

Atomic admission in Redis (one Lua script per order attempt), a Redis Streams
order queue processed by ``flask flashsale worker``, and a JSON blueprint.
"""

from __future__ import annotations

from .breaker import CircuitOpen
from .errors import (
    BackendUnavailable,
    ConfigurationError,
    CrossOrigin,
    Ended,
    FlashSaleError,
    IdempotencyMismatch,
    IdentityRequired,
    InvalidRequest,
    InvalidSaleId,
    LimitReached,
    LockLost,
    LockNotAcquired,
    NoQueue,
    NotInitializedError,
    NotInQueue,
    NotStarted,
    PassInvalid,
    PassRequired,
    PayloadTooLarge,
    PaymentRefused,
    PaymentTooLate,
    QueueNotOpen,
    RateLimited,
    SaleNotFound,
    SoldOut,
    TicketNotFound,
    UnsupportedMediaType,
)
from .extension import FlashSale, Hooks
from .lock import FencedLock
from .models import Admission, Order, Sale, Ticket
from .ratelimit import Limit, Rate, RateLimitResult
from .reconcile import SaleReconciliation
from .registry import WorkerInfo
from .signals import (
    breaker_state_changed,
    buyer_queued,
    buyer_ready,
    order_admitted,
    order_cancelled,
    order_confirmed,
    order_expired,
    order_failed,
    request_rate_limited,
    sale_sold_out,
)
from .status import SaleStatus, Status
from .waiting import QueueStatus

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "BackendUnavailable",
    "CircuitOpen",
    "ConfigurationError",
    "CrossOrigin",
    "Ended",
    "FencedLock",
    "FlashSale",
    "FlashSaleError",
    "Hooks",
    "IdempotencyMismatch",
    "IdentityRequired",
    "InvalidRequest",
    "InvalidSaleId",
    "Limit",
    "LimitReached",
    "LockLost",
    "LockNotAcquired",
    "NoQueue",
    "NotInQueue",
    "NotInitializedError",
    "NotStarted",
    "Order",
    "PassInvalid",
    "PassRequired",
    "PayloadTooLarge",
    "PaymentRefused",
    "PaymentTooLate",
    "QueueNotOpen",
    "QueueStatus",
    "Rate",
    "RateLimitResult",
    "RateLimited",
    "Sale",
    "SaleNotFound",
    "SaleReconciliation",
    "SaleStatus",
    "SoldOut",
    "Status",
    "Ticket",
    "TicketNotFound",
    "UnsupportedMediaType",
    "WorkerInfo",
    "breaker_state_changed",
    "buyer_queued",
    "buyer_ready",
    "order_admitted",
    "order_cancelled",
    "order_confirmed",
    "order_expired",
    "order_failed",
    "request_rate_limited",
    "sale_sold_out",
]
