"""What an order attempt needs before a strategy runs: its validation and its ticket token.

The strategies that admit it (one ``EVALSHA`` of ``admission.lua`` by
default) are in :mod:`flask_flashsale.strategies`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from .errors import IdentityRequired, InvalidRequest
from .keys import check_idempotency_key, check_sale_id

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
