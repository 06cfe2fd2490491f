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
from .extension import FlashSale, FlashSaleState
from .models import Admission, Order, Sale, Ticket
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
from .waiting import QueueStatus

__version__ = "0.1.0"

__all__ = [
    "Admission",
    "BackendUnavailable",
    "CircuitOpen",
    "ConfigurationError",
    "CrossOrigin",
    "Ended",
    "FlashSale",
    "FlashSaleError",
    "FlashSaleState",
    "IdempotencyMismatch",
    "IdentityRequired",
    "InvalidRequest",
    "InvalidSaleId",
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
    "RateLimited",
    "Sale",
    "SaleNotFound",
    "SoldOut",
    "Ticket",
    "TicketNotFound",
    "UnsupportedMediaType",
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
