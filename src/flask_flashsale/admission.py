"""The hot path: one order attempt, one ``EVALSHA`` of ``admission.lua``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

from .errors import IdentityRequired, InvalidRequest
from .keys import check_idempotency_key, check_sale_id, join_ticket_id
from .models import Admission

if TYPE_CHECKING:
    from .ratelimit import Rate

_OFF = ("0", "0")

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


def _bucket_args(rate: Rate | None) -> tuple[str, str]:
    if rate is None:
        return _OFF
    return (repr(rate.interval_ms), str(rate.burst))


class LuaStrategy:
    """The default inventory strategy: every check and write in one Lua script.

    One round trip, no retries, no lock: Redis runs the script atomically, so
    concurrent attempts can neither oversell nor double-admit.
    """

    name = "lua"

    def __init__(
        self,
        client: Any,
        keys: Any,
        script: Any,
        *,
        ticket_ttl: int,
        user_rate: Rate | None = None,
        sale_rate: Rate | None = None,
        events_channel: str = "",
    ) -> None:
        self.client = client
        self.keys = keys
        self._script = script
        self._ttl = str(ticket_ttl)
        self._user_bucket = _bucket_args(user_rate)
        self._sale_bucket = _bucket_args(sale_rate)
        self._events = events_channel
        self._slack = str(BUYER_INDEX_SLACK)

    def admit(
        self, sale_id: str, user_id: str, quantity: int, token: str, verified_pass: str = ""
    ) -> Admission:
        """Run the admission script once and translate its reply.

        ``verified_pass`` is the buyer's waiting-room pass as verified in this
        process (see :meth:`~flask_flashsale.waiting.WaitingRoom.check_pass`):
        ``""`` for none, ``"<queue epoch> <expiry ms>"``, or ``"-"`` for an
        invalid one.
        """
        ticket_id = join_ticket_id(sale_id, token)
        reply = self._script(
            keys=self.keys.admission(sale_id, user_id, token),
            args=[
                user_id,
                quantity,
                ticket_id,
                self._ttl,
                *self._user_bucket,
                *self._sale_bucket,
                self._events,
                self._slack,
                verified_pass,
            ],
        )
        status, ticket, remaining, wait_ms = reply
        remaining = int(remaining)
        if status == "rate_limited":
            return Admission(
                status=status,
                remaining=max(remaining, 0),
                retry_after=int(wait_ms) / 1000.0,
                throttled_by=ticket,
            )
        return Admission(
            status=status,
            ticket_id=ticket or None,
            remaining=None if status == "not_found" else max(remaining, 0),
            retry_after=int(wait_ms) / 1000.0 if int(wait_ms) > 0 else None,
        )


def ticket_token(secret: bytes, sale_id: str, user_id: str, idempotency_key: str | None) -> str:
    """The token of the ticket an attempt would create."""
    if idempotency_key is None:
        return new_ticket_token()
    check_idempotency_key(idempotency_key)
    return idempotent_ticket_token(secret, sale_id, user_id, idempotency_key)


def check_order(sale_id: str, user_id: object, quantity: object, max_quantity: int) -> str:
    """Validate an order attempt's arguments; return the user id as ``str``."""
    check_sale_id(sale_id)
    if user_id is None:
        raise IdentityRequired()
    uid = str(user_id)
    if not 0 < len(uid) <= 256:
        raise InvalidRequest("the user id must be 1-256 characters", field="user_id")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidRequest("quantity must be an integer", field="quantity")
    if not 1 <= quantity <= max_quantity:
        raise InvalidRequest(f"quantity must be between 1 and {max_quantity}", field="quantity")
    return uid
