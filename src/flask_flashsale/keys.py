"""Redis key layout and id validation.

Every key of one sale shares the hash tag ``{<sale_id>}``, so every script
touches one slot and the design runs unchanged on Redis Cluster::

    <prefix>:{<sale>}:sale            hash: stock, remaining, price, window, limit, info
    <prefix>:{<sale>}:users           hash: user id -> units held
    <prefix>:{<sale>}:t:<token>       hash: one ticket (expires after FLASHSALE_TICKET_TTL)
    <prefix>:{<sale>}:buyers          hash: user id -> the buyer's ticket tokens, oldest first
                                      (space-separated, bounded; lives as long as the sale)
    <prefix>:{<sale>}:orders          stream: admitted orders, read by the worker group
    <prefix>:{<sale>}:dead            stream: orders that failed for good
    <prefix>:{<sale>}:retry           zset: stream entry id -> when its next attempt is due (ms)
    <prefix>:{<sale>}:attempts        hash: hook failures and worker deaths of pending orders
    <prefix>:{<sale>}:rl:...          token buckets of admission throttles
    <prefix>:{<sale>}:lock            the sale's lock (``lock`` strategy, ``reconcile --fix``)
    <prefix>:{<sale>}:fence           the fencing-token counter of that lock
    <prefix>:{<sale>}:holds           zset: ticket token -> pay_by (ms) of tickets awaiting payment
    <prefix>:{<sale>}:payments        hash: tickets paid and expired so far (counters)
    <prefix>:{<sale>}:queue           hash: the waiting room (epoch, places, outflow, lottery draw)
    <prefix>:{<sale>}:places          hash: user id -> "<join index> <ready ms>" (its places)
    <prefix>:lock:{<name>}            a host lock (:meth:`FlashSale.lock`)
    <prefix>:lock:{<name>}:fence      its fencing-token counter
    <prefix>:sales                    set of sale ids (index for list_sales / the worker)
    <prefix>:workers                  set of worker names (registry for ``flashsale status``)
    <prefix>:worker:<name>            hash: one worker's heartbeat (expires when it stops beating)
    <prefix>:supervisors              set of autoscaling supervisors' names (``--autoscale``)
    <prefix>:supervisor:<name>        hash: one supervisor's heartbeat, with its workers
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from .errors import InvalidRequest, InvalidSaleId, TicketNotFound

SALE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
#: Tickets are ``<sale_id>~<token>``: the sale id gives the hash tag, the
#: token (22 url-safe characters, 128 bits) makes the id unguessable.
TICKET_ID = re.compile(r"([A-Za-z0-9_.\-]{1,64})~([A-Za-z0-9_\-]{22})")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
#: Valid names for :meth:`FlashSale.lock`: no braces (they would break the hash tag).
LOCK_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")


def check_sale_id(sale_id: object) -> str:
    """Return ``sale_id`` if valid, else raise :class:`InvalidSaleId` (a ``SaleNotFound``)."""
    if not isinstance(sale_id, str) or not SALE_ID.fullmatch(sale_id):
        raise InvalidSaleId(sale_id)
    return sale_id


def check_idempotency_key(key: object) -> str:
    """Return ``key`` if it is 1-255 printable ASCII characters, else raise."""
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable ASCII characters")
    return key


def split_ticket_id(ticket_id: object) -> tuple[str, str]:
    """Split a ticket id into ``(sale_id, token)``; raise :class:`TicketNotFound`."""
    m = TICKET_ID.fullmatch(ticket_id) if isinstance(ticket_id, str) else None
    if m is None:
        raise TicketNotFound()
    return m.group(1), m.group(2)


def join_ticket_id(sale_id: str, token: str) -> str:
    """The ticket id ``<sale_id>~<token>`` (the inverse of :func:`split_ticket_id`)."""
    return f"{sale_id}~{token}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class AdmissionKeys(NamedTuple):
    """The keys of one order attempt, in the ``KEYS`` order of ``admission.lua``."""

    #: The sale's hash (definition and ``remaining``).
    sale: str
    #: Units held per buyer.
    users: str
    #: The ticket the attempt would create.
    ticket: str
    #: The orders stream.
    orders: str
    #: The buyer's admission throttle bucket.
    user_bucket: str
    #: The sale's admission throttle bucket.
    sale_bucket: str
    #: Each buyer's ticket tokens.
    buyers: str


class Keys:
    """Builds the Redis key names of one app (one ``FLASHSALE_KEY_PREFIX``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def sale(self, sale_id: str) -> str:
        """Hash holding the sale's definition and ``remaining``."""
        return f"{self.prefix}:{{{sale_id}}}:sale"

    def users(self, sale_id: str) -> str:
        """Hash of units held per buyer."""
        return f"{self.prefix}:{{{sale_id}}}:users"

    def ticket(self, sale_id: str, token: str) -> str:
        """Hash of one ticket."""
        return f"{self.prefix}:{{{sale_id}}}:t:{token}"

    def buyers(self, sale_id: str) -> str:
        """Hash of each buyer's ticket tokens in the sale (space-separated, oldest first).

        One hash per sale rather than a key per buyer: about 100 bytes per
        buyer instead of about 280 (a key, its object and its TTL entry).
        """
        return f"{self.prefix}:{{{sale_id}}}:buyers"

    def stream(self, sale_id: str) -> str:
        """Stream of admitted orders."""
        return f"{self.prefix}:{{{sale_id}}}:orders"

    def dead(self, sale_id: str) -> str:
        """Dead-letter stream."""
        return f"{self.prefix}:{{{sale_id}}}:dead"

    def retry(self, sale_id: str) -> str:
        """Retry schedule of the worker group: entry id -> due time (ms)."""
        return f"{self.prefix}:{{{sale_id}}}:retry"

    def attempts(self, sale_id: str) -> str:
        """Hook attempts of pending orders: ``<entry>:f`` failures, ``<entry>:d`` deaths.

        A failure is a hook that raised; a death is a hook started in careful
        mode (one order at a time) whose worker never reported an outcome.
        Fields go when the order is settled.
        """
        return f"{self.prefix}:{{{sale_id}}}:attempts"

    def holds(self, sale_id: str) -> str:
        """Deadline index of the sale's tickets awaiting payment: token -> ``pay_by`` (ms).

        A ticket is in it exactly while it is ``awaiting_payment``: the scripts
        that move it out (paid, expired, cancelled) remove it in the same step.
        """
        return f"{self.prefix}:{{{sale_id}}}:holds"

    def payments(self, sale_id: str) -> str:
        """Counters of the sale's payments: ``paid`` and ``expired`` tickets so far."""
        return f"{self.prefix}:{{{sale_id}}}:payments"

    def queue(self, sale_id: str) -> str:
        """Hash of the sale's waiting room: epoch, places given, outflow state, lottery draw."""
        return f"{self.prefix}:{{{sale_id}}}:queue"

    def places(self, sale_id: str) -> str:
        """Hash of the waiting room's places: user id -> ``"<join index> <ready ms>"``.

        The ready time is empty for a lottery's early joiners until the draw.
        """
        return f"{self.prefix}:{{{sale_id}}}:places"

    def workers(self) -> str:
        """Set of registered worker names."""
        return f"{self.prefix}:workers"

    def worker(self, name: str) -> str:
        """Heartbeat hash of one worker."""
        return f"{self.prefix}:worker:{name}"

    def supervisors(self) -> str:
        """Set of registered autoscaling supervisors' names."""
        return f"{self.prefix}:supervisors"

    def supervisor(self, name: str) -> str:
        """Heartbeat hash of one autoscaling supervisor."""
        return f"{self.prefix}:supervisor:{name}"

    def view_buckets(self) -> str:
        """Start of every view rate limit's bucket key: ``<prefix>:rl:`` (then
        ``<scope>:<key>``, see :class:`~flask_flashsale.ratelimit.RateLimiter`)."""
        return f"{self.prefix}:rl:"

    def bucket(self, sale_id: str, name: str) -> str:
        """Token bucket inside the sale's slot (admission throttles)."""
        return f"{self.prefix}:{{{sale_id}}}:rl:{name}"

    def user_bucket(self, sale_id: str, user_id: str) -> str:
        """The admission throttle bucket of one buyer of the sale."""
        return self.bucket(sale_id, f"u:{user_id}")

    def sale_bucket(self, sale_id: str) -> str:
        """The admission throttle bucket of the whole sale."""
        return self.bucket(sale_id, "sale")

    def buckets_match(self, sale_id: str) -> str:
        """A ``SCAN MATCH`` pattern for every admission throttle bucket of the sale."""
        return _glob_escape(self.bucket(sale_id, "")) + "*"

    def tickets_match(self, sale_id: str) -> str:
        """A ``SCAN MATCH`` pattern for every ticket hash of the sale."""
        return _glob_escape(self.ticket(sale_id, "")) + "*"

    def ticket_token(self, sale_id: str, key: str) -> str:
        """The token of a ticket hash's key (one :meth:`tickets_match` found)."""
        return key[len(self.ticket(sale_id, "")) :]

    def lock(self, sale_id: str) -> str:
        """The sale's lock (``lock`` strategy, ``flashsale reconcile --fix``)."""
        return f"{self.prefix}:{{{sale_id}}}:lock"

    def fence(self, sale_id: str) -> str:
        """The fencing-token counter of the sale's lock."""
        return f"{self.prefix}:{{{sale_id}}}:fence"

    def host_lock(self, name: str) -> tuple[str, str]:
        """``(lock key, fencing counter key)`` of the host lock ``name`` (:meth:`FlashSale.lock`).

        Both share the hash tag ``{<name>}``, so the acquisition script touches
        one Cluster slot. Raises :class:`ValueError` for an invalid name.
        """
        if not isinstance(name, str) or not LOCK_NAME.fullmatch(name):
            raise ValueError(f"lock names are 1-128 characters of [A-Za-z0-9_.:/-]; got {name!r}")
        key = f"{self.prefix}:lock:{{{name}}}"
        return key, key + ":fence"

    def admission(self, sale_id: str, user_id: str, token: str) -> AdmissionKeys:
        """The keys of one order attempt for ticket ``token``, in ``admission.lua``'s order."""
        base = f"{self.prefix}:{{{sale_id}}}:"
        return AdmissionKeys(
            base + "sale",
            base + "users",
            base + "t:" + token,
            base + "orders",
            base + "rl:u:" + user_id,
            base + "rl:sale",
            base + "buyers",
        )

    # -- the keys of each script, in the order of its KEYS ---------------------
    # ``admission.lua`` has :meth:`admission`; ``lock_acquire.lua`` takes
    # :meth:`host_lock` or :meth:`sale_lock`; ``ratelimit.lua`` takes the view
    # buckets it is given (under :meth:`view_buckets`).

    def sale_lock(self, sale_id: str) -> tuple[str, str]:
        """``(lock key, fencing counter key)`` of the sale's lock (``lock_acquire.lua``)."""
        return self.lock(sale_id), self.fence(sale_id)

    def sale_create(self, sale_id: str) -> tuple[str]:
        """``sale_create.lua``: the sale's hash."""
        return (self.sale(sale_id),)

    def sale_restock(self, sale_id: str) -> tuple[str]:
        """``sale_restock.lua``: the sale's hash."""
        return (self.sale(sale_id),)

    def queue_scripts(self, sale_id: str) -> tuple[str, str, str]:
        """``queue_join.lua`` and ``queue_poll.lua``: the sale, its waiting room, its places."""
        return self.sale(sale_id), self.queue(sale_id), self.places(sale_id)

    def order_group(self, sale_id: str) -> tuple[str, str]:
        """``order_group.lua``: the sale, its orders stream."""
        return self.sale(sale_id), self.stream(sale_id)

    def order_claim(self, sale_id: str) -> tuple[str, str, str]:
        """``order_claim.lua``: the stream, the retry schedule, the attempts."""
        return self.stream(sale_id), self.retry(sale_id), self.attempts(sale_id)

    def order_touch(self, sale_id: str) -> tuple[str]:
        """``order_touch.lua``: the stream."""
        return (self.stream(sale_id),)

    def order_confirm(self, sale_id: str, tickets: Iterable[str]) -> tuple[str, ...]:
        """``order_confirm.lua``: the stream, the retry schedule, the attempts,
        the sale, its holds, then the ``tickets`` (ticket keys, one per entry confirmed)."""
        return (
            self.stream(sale_id),
            self.retry(sale_id),
            self.attempts(sale_id),
            self.sale(sale_id),
            self.holds(sale_id),
            *tickets,
        )

    def order_release(self, sale_id: str) -> tuple[str, str]:
        """``order_release.lua``: the stream, the retry schedule."""
        return self.stream(sale_id), self.retry(sale_id)

    def order_start(self, sale_id: str, token: str) -> tuple[str, str, str]:
        """``order_start.lua``: the stream, the attempts, the ticket."""
        return self.stream(sale_id), self.attempts(sale_id), self.ticket(sale_id, token)

    def order_retry(self, sale_id: str) -> tuple[str, str, str]:
        """``order_retry.lua``: the stream, the retry schedule, the attempts."""
        return self.stream(sale_id), self.retry(sale_id), self.attempts(sale_id)

    def order_compensate(self, sale_id: str, token: str) -> tuple[str, ...]:
        """``order_compensate.lua``: the stream, the ticket, the sale, its users,
        the dead letters, the retry schedule, the attempts."""
        return (
            self.stream(sale_id),
            self.ticket(sale_id, token),
            self.sale(sale_id),
            self.users(sale_id),
            self.dead(sale_id),
            self.retry(sale_id),
            self.attempts(sale_id),
        )

    def order_leave(self, sale_id: str) -> tuple[str]:
        """``order_leave.lua``: the stream."""
        return (self.stream(sale_id),)

    def order_cancel(self, sale_id: str, token: str) -> tuple[str, str, str, str]:
        """``order_cancel.lua``: the ticket, the sale, its users, its holds."""
        return (
            self.ticket(sale_id, token),
            self.sale(sale_id),
            self.users(sale_id),
            self.holds(sale_id),
        )

    def order_requeue(self, sale_id: str, token: str) -> tuple[str, ...]:
        """``order_requeue.lua``: the dead letters, the stream, the sale, its users, the ticket."""
        return (
            self.dead(sale_id),
            self.stream(sale_id),
            self.sale(sale_id),
            self.users(sale_id),
            self.ticket(sale_id, token),
        )

    def order_pay(self, sale_id: str, token: str) -> tuple[str, str, str, str]:
        """``order_pay.lua``: the ticket, the sale, its holds, its payment counters."""
        return (
            self.ticket(sale_id, token),
            self.sale(sale_id),
            self.holds(sale_id),
            self.payments(sale_id),
        )

    def order_expire(self, sale_id: str, tokens: Iterable[str]) -> tuple[str, ...]:
        """``order_expire.lua``: the sale, its users, holds, payment counters and
        stream, then the ticket of each of ``tokens``."""
        return (
            self.sale(sale_id),
            self.users(sale_id),
            self.holds(sale_id),
            self.payments(sale_id),
            self.stream(sale_id),
            *(self.ticket(sale_id, token) for token in tokens),
        )

    def reconcile_fix(
        self, sale_id: str, stale: Iterable[str], missing: Iterable[str]
    ) -> tuple[str, ...]:
        """``reconcile_fix.lua``: the sale, its users, its lock, then the ``stale``
        tickets (to mark failed) and the ``missing`` ones (to restore), as ticket keys."""
        return (self.sale(sale_id), self.users(sale_id), self.lock(sale_id), *stale, *missing)

    def sale_keys(self, sale_id: str) -> list[str]:
        """Every key of the sale with a fixed name (not tickets, not throttle buckets).

        What deleting a sale removes, besides its buckets.
        """
        return [
            self.sale(sale_id),
            self.users(sale_id),
            self.stream(sale_id),
            self.dead(sale_id),
            self.lock(sale_id),
            self.fence(sale_id),
            self.retry(sale_id),
            self.attempts(sale_id),
            self.buyers(sale_id),
            self.holds(sale_id),
            self.payments(sale_id),
            self.queue(sale_id),
            self.places(sale_id),
        ]

    def sales_index(self) -> str:
        """Set of every sale id."""
        return f"{self.prefix}:sales"

    def events_channel(self) -> str:
        """Pub/sub channel for cache invalidation."""
        return f"{self.prefix}:events"
