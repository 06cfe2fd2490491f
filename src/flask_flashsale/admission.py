"""What an order attempt needs before a strategy runs: its validation and its ticket token.

The strategies that admit it (one ``EVALSHA`` of ``admission.lua`` by
default) are in :mod:`flask_flashsale.strategies`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from time import perf_counter
from typing import TYPE_CHECKING

from flask import current_app

from . import signals
from .errors import IdentityRequired, InvalidRequest
from .keys import check_idempotency_key, check_sale_id
from .models import SOLD_OUT_FROM_MEMORY, Admission

if TYPE_CHECKING:
    from .extension import FlashSaleState

#: Given-back (cancelled, failed) tickets a buyer's ticket list keeps beyond
#: the sale's per-user limit. The list (what :meth:`FlashSale.user_tickets`
#: and ``GET <prefix>/<sale_id>/orders`` show) keeps the buyer's last
#: ``per_user_limit + BUYER_INDEX_SLACK`` tickets: a live ticket leaves it only
#: after more than this many newer tickets of the same buyer were given back.
BUYER_INDEX_SLACK = 20


def buyer_tokens(current: str | None, token: str, keep: int) -> str:
    """The buyer's token list after appending ``token``: at most ``keep`` tokens.

    The list is space-separated fixed-size tokens, oldest first; this is the
    Python twin of the append in ``admission.lua`` (used by the optimistic and
    lock strategies).
    """
    tokens = f"{current} {token}" if current else token
    width = keep * (len(token) + 1) - 1
    return tokens[-width:] if len(tokens) > width else tokens


def new_ticket_token() -> str:
    """A fresh unguessable ticket token: 128 random bits, 22 url-safe characters."""
    return secrets.token_urlsafe(16)


def idempotent_ticket_token(secret: bytes, sale_id: str, user_id: str, key: str) -> str:
    """The ticket token for an ``Idempotency-Key``: the same key, the same ticket.

    An HMAC under the deployment's secret, so the ticket (and its key in Redis)
    is known before the script runs and needs no separate idempotency record.
    """
    digest = hmac.new(secret, f"{sale_id}\x00{user_id}\x00{key}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def ticket_token(secret: bytes, sale_id: str, user_id: str, idempotency_key: str | None) -> str:
    """The token of the ticket an attempt would create."""
    if idempotency_key is None:
        return new_ticket_token()
    check_idempotency_key(idempotency_key)
    return idempotent_ticket_token(secret, sale_id, user_id, idempotency_key)


def check_user_id(user_id: object) -> str:
    """The buyer id as ``str`` (1-256 characters).

    Raises :class:`~flask_flashsale.IdentityRequired` for ``None`` (nobody is
    signed in) and :class:`~flask_flashsale.InvalidRequest` for a wrong length.
    """
    if user_id is None:
        raise IdentityRequired()
    uid = str(user_id)
    if not 0 < len(uid) <= 256:
        raise InvalidRequest("the user id must be 1-256 characters", field="user_id")
    return uid


def check_quantity(quantity: object, max_quantity: int) -> int:
    """Return ``quantity`` if it is an integer from 1 to ``max_quantity``, else raise."""
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidRequest("quantity must be an integer", field="quantity")
    if not 1 <= quantity <= max_quantity:
        raise InvalidRequest(f"quantity must be between 1 and {max_quantity}", field="quantity")
    return quantity


def check_order(sale_id: str, user_id: object, quantity: object, max_quantity: int) -> str:
    """Validate an order attempt's arguments; return the user id as ``str``."""
    check_sale_id(sale_id)
    uid = check_user_id(user_id)
    check_quantity(quantity, max_quantity)
    return uid


def admit_checked(
    state: FlashSaleState,
    sale_id: str,
    uid: str,
    quantity: int,
    idempotency_key: str | None,
    queue_pass: str | None,
) -> Admission:
    """Admit an order attempt whose arguments are already valid: what
    :meth:`FlashSale.place_order <flask_flashsale.FlashSale.place_order>` does
    after checking them, and what the order view calls once it has checked
    them itself (once, not twice).

    ``sale_id`` passed :func:`~flask_flashsale.keys.check_sale_id`, ``uid``
    :func:`check_user_id`, ``quantity`` :func:`check_quantity`. Answers a sale
    flagged sold out from memory (the shared
    :data:`~flask_flashsale.models.SOLD_OUT_FROM_MEMORY`), else runs the
    strategy once; keeps the sold-out flag, sends the signals that have
    receivers and records the metrics. Needs an app context.
    """
    metrics = state.metrics
    started = perf_counter() if metrics is not None else 0.0
    cache = state.cache
    if idempotency_key is None:
        if cache.sold_out(sale_id):
            if metrics is not None:
                metrics.admitted(sale_id, SOLD_OUT_FROM_MEMORY, started)
            return SOLD_OUT_FROM_MEMORY
        token = new_ticket_token()
    else:
        check_idempotency_key(idempotency_key)
        token = idempotent_ticket_token(state.secret, sale_id, uid, idempotency_key)
    epoch = cache.epoch
    verified_pass = ""
    if queue_pass is not None:
        verified_pass = state.waiting.check_pass(sale_id, uid, queue_pass)
    admission = state.strategy.admit(
        sale_id, uid, quantity, token, verified_pass, fresh_token=idempotency_key is None
    )
    status = admission.status
    if status == "queued":
        remaining = admission.remaining
        if remaining == 0:
            cache.note_sold_out(sale_id, epoch)
        # Signals are sent only to receivers: no payload is built for nobody.
        if signals.order_admitted.receivers:
            signals.order_admitted.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                sale_id=sale_id,
                user_id=uid,
                ticket_id=admission.ticket_id,
                quantity=quantity,
                remaining=remaining,
            )
        if remaining == 0 and signals.sale_sold_out.receivers:
            signals.sale_sold_out.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                sale_id=sale_id,
            )
    elif status == "sold_out":
        if admission.remaining == 0:
            cache.note_sold_out(sale_id, epoch)
    elif status == "rate_limited" and signals.request_rate_limited.receivers:
        signals.request_rate_limited.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            key=f"order:{sale_id}:{uid}",
            retry_after=admission.retry_after,
        )
    if metrics is not None:
        metrics.admitted(sale_id, admission, started)
    return admission
