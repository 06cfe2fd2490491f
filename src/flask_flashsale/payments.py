"""Reservations: a buyer pays within a time limit, or the hold expires.

On a sale created with ``payment_timeout`` (seconds, stored on the sale hash
as ``pay`` in ms), a ticket goes::

    queued --(order hook ran)--> awaiting_payment --(mark_paid)--> paid
                                        |
                                        +--(pay_by passed, worker)--> expired

and ``cancel()`` takes any live ticket (queued, confirmed, awaiting_payment,
paid) to ``cancelled``. Every transition is one Lua script that checks the
ticket's current status and Redis ``TIME``, so exactly one of paid, expired
and cancelled wins, and stock comes back exactly once:

* ``order_confirm.lua`` (the worker, after the order hook): ``queued ->
  awaiting_payment`` with ``pay_by = admission time + payment_timeout``,
  indexed in the sale's deadline index (``holds`` zset: token -> pay_by ms);
* ``order_pay.lua`` (:meth:`Payments.mark_paid`): ``queued``/``awaiting_payment``
  -> ``paid`` before ``pay_by``, out of the index;
* ``order_expire.lua`` (every worker, :meth:`Payments.expire_due`): due holds,
  a bounded batch per call: stock and the buyer's count back, ticket
  ``expired``, out of the index, and the expiry hook's call queued on the
  sale's orders stream (so it is delivered like an order: at least once,
  retried, claimed from a dead worker, dead-lettered after
  ``FLASHSALE_MAX_ATTEMPTS`` failures);
* ``order_cancel.lua``: any live ticket -> ``cancelled``, out of the index.

See ``docs/payments.rst``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PaymentRefused, PaymentTooLate, TicketNotFound
from .events import CHANGED, event
from .keys import Keys, join_ticket_id, split_ticket_id
from .models import Ticket, from_millis
from .scripts import register

if TYPE_CHECKING:
    from .protocols import RedisClient

#: Holds one expiry script call takes at most (per sale).
EXPIRY_BATCH = 100
#: The longest payment timeout ``create_sale`` accepts (s): one year.
MAX_PAYMENT_TIMEOUT = 366 * 24 * 3600
#: ``k`` field of an orders-stream entry that is an expiry hook's call, not an order.
EXPIRED_KIND = "expired"


def payment_timeout_ms(value: object) -> int | None:
    """Validate ``create_sale(payment_timeout=...)`` (seconds); return it in ms."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"payment_timeout must be seconds (int or float), got {value!r}")
    if not math.isfinite(value) or not 0 < value <= MAX_PAYMENT_TIMEOUT:
        raise ValueError(
            f"payment_timeout must be more than 0 and at most {MAX_PAYMENT_TIMEOUT} s,"
            f" got {value!r}"
        )
    return max(1, round(value * 1000))


def is_expiry(fields: Mapping[str, str]) -> bool:
    """True if an orders-stream entry is an expiry hook's call rather than an order."""
    return fields.get("k") == EXPIRED_KIND


def expired_ticket(sale_id: str, fields: Mapping[str, str]) -> Ticket:
    """The :class:`Ticket` handed to the expiry hook, from its stream entry."""
    pay_by = fields.get("d")
    return Ticket(
        id=fields["t"],
        sale_id=sale_id,
        user_id=fields["u"],
        quantity=int(fields["q"]),
        status="expired",
        pay_by=from_millis(int(float(pay_by))) if pay_by else None,
    )


@dataclass(frozen=True, slots=True)
class PaymentStats:
    """The payments of one sale, as ``flask flashsale status`` and the metrics show them."""

    sale_id: str
    #: Tickets awaiting payment now (the deadline index's size).
    awaiting_payment: int
    #: Tickets marked paid so far (a counter: a refund does not lower it).
    paid: int
    #: Holds expired so far (a counter).
    expired: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "awaiting_payment": self.awaiting_payment,
            "paid": self.paid,
            "expired": self.expired,
        }


class Payments:
    """Payments and expiry of holds on one Redis client (the app's, or a worker's)."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.events = keys.events_channel()
        # Called with the sale id after this process gave stock back (the
        # script also publishes ``changed`` for the other processes).
        self._on_change = on_change
        self._pay = register(client, "clock", "order_pay")
        self._expire = register(client, "clock", "order_expire")
        # Redis TIME minus this host's clock (ms): which holds are due is
        # estimated with it (the script judges again on Redis TIME).
        self._offset_ms: float | None = None

    # -- the host's side -------------------------------------------------------

    def mark_paid(self, ticket_id: str) -> Ticket:
        """Mark the ticket paid; see :meth:`FlashSale.mark_paid`."""
        sale_id, token = split_ticket_id(ticket_id)
        outcome, status, user, qty, pay_by, reason = self._pay(
            keys=self.keys.order_pay(sale_id, token),
            args=[token],
        )
        if outcome == "not_found":
            raise TicketNotFound()
        ticket = Ticket(
            id=ticket_id,
            sale_id=sale_id,
            user_id=str(user),
            quantity=int(qty),
            status=status,
            reason=reason or None,
            pay_by=from_millis(int(pay_by)) if pay_by != "" else None,
        )
        if outcome == "too_late":
            when = "" if ticket.pay_by is None else f" (pay by {ticket.pay_by.isoformat()})"
            raise PaymentTooLate(
                f"ticket {ticket_id} can no longer be paid{when}: it is {status}",
                ticket_status=status,
            )
        if outcome == "refused":
            raise PaymentRefused(
                f"ticket {ticket_id} can no longer be paid: it is {status}",
                ticket_status=status,
            )
        return ticket

    def stats(self, sale_ids: list[str]) -> list[PaymentStats]:
        """The payments of each sale, in one pipelined round trip."""
        if not sale_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.zcard(self.keys.holds(sale_id))
            pipe.hmget(self.keys.payments(sale_id), "paid", "expired")
        replies = pipe.execute()
        out = []
        for i, sale_id in enumerate(sale_ids):
            awaiting, (paid, expired) = replies[2 * i], replies[2 * i + 1]
            out.append(PaymentStats(sale_id, int(awaiting), int(paid or 0), int(expired or 0)))
        return out

    # -- the worker's side -----------------------------------------------------

    def redis_now_ms(self) -> float:
        """Redis' clock (ms) as this host estimates it (one ``TIME`` the first time)."""
        if self._offset_ms is None:
            seconds, micros = self.client.time()
            self._offset_ms = seconds * 1000 + micros / 1000 - time.time() * 1000
        return time.time() * 1000 + self._offset_ms

    def due(self, sale_ids: list[str], count: int) -> dict[str, list[str]]:
        """Tokens of holds that look due, at most ``count`` per sale, in one round trip.

        Sales with none are left out. A read of the deadline index (``ZRANGEBYSCORE``
        up to Redis' clock as estimated here), never a scan.
        """
        if not sale_ids:
            return {}
        now = int(self.redis_now_ms())
        pipe = self.client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.zrangebyscore(self.keys.holds(sale_id), "-inf", now, start=0, num=count)
        replies = pipe.execute()
        return {s: list(t) for s, t in zip(sale_ids, replies, strict=True) if t}

    def expire(self, sale_id: str, tokens: list[str], *, notify: bool) -> list[Ticket]:
        """Expire those of ``tokens`` that are due and unpaid: one script call.

        Returns the tickets this call expired (others were paid, cancelled,
        expired by another worker, or not due after all). ``notify`` queues the
        expiry hook's call for each.
        """
        reply = self._expire(
            keys=self.keys.order_expire(sale_id, tokens),
            args=[
                self.events,
                join_ticket_id(sale_id, ""),  # the script appends a token: keys.py owns the format
                "1" if notify else "0",
                event(CHANGED, sale_id),
                *tokens,
            ],
        )
        now, flat = int(reply[0]), reply[1:]
        self._offset_ms = now - time.time() * 1000
        expired = [
            Ticket(
                id=join_ticket_id(sale_id, flat[i]),
                sale_id=sale_id,
                user_id=str(flat[i + 1]),
                quantity=int(flat[i + 2]),
                status="expired",
                pay_by=from_millis(int(flat[i + 3])),
            )
            for i in range(0, len(flat), 4)
        ]
        if expired and self._on_change is not None:
            self._on_change(sale_id)
        return expired

    def expire_due(
        self, sale_ids: list[str], *, count: int = EXPIRY_BATCH, notify: bool
    ) -> tuple[list[Ticket], bool]:
        """Expire the due holds of every sale, at most ``count`` per sale.

        One round trip to find them, then one script call per sale that has
        some. Returns the expired tickets and whether a sale had a full batch
        (more may be due: call again at once).
        """
        expired: list[Ticket] = []
        full = False
        for sale_id, tokens in self.due(sale_ids, count).items():
            expired += self.expire(sale_id, tokens, notify=notify)
            full = full or len(tokens) >= count
        return expired, full
