"""Blinker signals sent by Flask-FlashSale.

Connect with ``order_confirmed.connect(fn, app)`` or without a sender to hear
every app. Receivers run synchronously in the sending thread: keep them short.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent by admission when an order is queued. Sender: the app; kwargs:
#: ``sale_id``, ``user_id``, ``ticket_id``, ``quantity``, ``remaining``.
order_admitted = _signals.signal("flashsale.order-admitted")

#: Sent by the worker after ``order_handler`` succeeded and the ticket is
#: ``confirmed`` (on a sale with a payment timeout: ``awaiting_payment``, or
#: ``paid`` when it was paid while queued). Sender: the app; kwargs: ``order``.
order_confirmed = _signals.signal("flashsale.order-confirmed")

#: Sent by the worker when an order failed for good and was compensated.
#: Sender: the app; kwargs: ``order``, ``reason``.
order_failed = _signals.signal("flashsale.order-failed")

#: Sent by :meth:`FlashSale.cancel` when it cancelled an order (stock given
#: back). Sender: the app; kwargs: ``ticket_id``, ``reason``.
order_cancelled = _signals.signal("flashsale.order-cancelled")

#: Sent by the worker that expired an unpaid hold (its ``pay_by`` passed: stock
#: and the buyer's count given back, ticket ``expired``), once per hold.
#: Sender: the app; kwargs: ``ticket`` (the expired :class:`~flask_flashsale.Ticket`).
order_expired = _signals.signal("flashsale.order-expired")

#: Sent when an admission takes the last unit of a sale. Sender: the app;
#: kwargs: ``sale_id``.
sale_sold_out = _signals.signal("flashsale.sale-sold-out")

#: Sent when a request or an order attempt is throttled. Sender: the app;
#: kwargs: ``key``, ``retry_after``.
request_rate_limited = _signals.signal("flashsale.request-rate-limited")

#: Sent when the circuit breaker in front of Redis changes state. Sender: the
#: app; kwargs: ``old_state``, ``new_state`` (``closed``, ``open`` or
#: ``half-open``). Sent from the request thread that caused the change.
breaker_state_changed = _signals.signal("flashsale.breaker-state-changed")

#: Sent when a buyer takes a new place in a sale's waiting room (not when joining
#: again returns the same place). Sender: the app; kwargs: ``sale_id``,
#: ``user_id``, ``position`` (``None`` for a lottery's early joiner until the draw).
buyer_queued = _signals.signal("flashsale.buyer-queued")

#: Sent when an answer of the waiting room hands a buyer their pass. Once per
#: buyer that keeps its place token (the ``FlashSale-Place`` header or cookie);
#: a client that drops it may cause it again. Sender: the app; kwargs:
#: ``sale_id``, ``user_id``, ``position``, ``pass_expires_at``.
buyer_ready = _signals.signal("flashsale.buyer-ready")
