"""The order queue in Redis: one stream per sale, read by the ``workers`` group.

:class:`OrderQueue` is the Redis side of the worker and of cancellation. Every
state change of an order is one Lua script, so it is atomic with admissions
and with other workers:

* ``order_claim.lua``: hand out retries that are due and orders a dead worker
  left pending (``XCLAIM`` / ``XAUTOCLAIM``), with Redis' delivery count;
* ``order_confirm.lua``: ticket ``queued -> confirmed`` (or ``awaiting_payment``
  on a sale with a payment timeout, see :mod:`.payments`) + ``XACK`` + ``XDEL``,
  for a batch of orders of one sale in one call;
* ``order_release.lua``: a stopping worker hands back orders it has not started;
* ``order_start.lua``: before the hook of a claimed order runs, count a death
  in advance (taken back when the worker reports the outcome);
* ``order_retry.lua``: record a hook failure, schedule the next attempt (it stays pending);
* ``order_compensate.lua``: give stock back, ticket ``failed``, ``XACK``, dead letter;
* ``order_cancel.lua``: give stock back once, ticket ``cancelled``;
* ``order_touch.lua``, ``order_leave.lua``, ``order_group.lua``,
  ``order_requeue.lua``: leases, clean exit, group creation, dead-letter requeue.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import redis

from .errors import SaleNotFound, TicketNotFound
from .events import CHANGED, event
from .keys import Keys, check_sale_id, split_ticket_id
from .models import Order, from_millis
from .scripts import register

if TYPE_CHECKING:
    from .protocols import RedisClient

#: Name of the consumer group every worker joins, on every sale's stream.
GROUP = "workers"
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
#: The ``reason`` buyers see on a ticket that failed for good: the exception
#: text stays with operators (log, dead letters, ``order_failed``).
FAILED_REASON = "processing_failed"
#: Dead-letter streams keep about this many entries per sale (``MAXLEN ~``).
DEAD_LETTER_MAXLEN = 10_000


def _fields(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry handed to a consumer: an order and its delivery count."""

    #: Sale whose stream the entry is on.
    sale_id: str
    #: Stream entry id.
    entry_id: str
    #: The entry's fields: ``t`` ticket id, ``u`` user, ``q`` qty, ``p`` price, ``a`` ms.
    fields: dict[str, str]
    #: How many times Redis has delivered the entry (1 on the first delivery).
    attempt: int
    #: Times the order's hook raised so far.
    failures: int = 0
    #: Times a worker died with this order in hand (hook started, no outcome).
    deaths: int = 0
    #: Claimed (a retry due, or taken from a worker that stopped beating) rather
    #: than read new: handled in careful mode, one order at a time.
    claimed: bool = False

    @property
    def ticket_id(self) -> str:
        """The order's ticket id (and order id)."""
        return self.fields["t"]

    def order(self) -> Order:
        """The :class:`~flask_flashsale.Order` handed to the host's hook."""
        price = self.fields.get("p")
        return Order(
            id=self.ticket_id,
            ticket_id=self.ticket_id,
            sale_id=self.sale_id,
            user_id=self.fields["u"],
            quantity=int(self.fields["q"]),
            price=Decimal(price) if price else None,
            admitted_at=from_millis(int(self.fields["a"])),  # type: ignore[arg-type]
            attempt=self.attempt,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An order that failed for good (``flask flashsale dead-letters``)."""

    sale_id: str
    #: Id of the entry in the sale's dead-letter stream (what ``requeue`` takes).
    entry_id: str
    ticket_id: str
    user_id: str
    quantity: int
    #: Why it failed: the hook's last exception, or too many deliveries.
    reason: str
    #: Deliveries made before it was given up.
    attempts: int
    failed_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the CLI."""
        return {
            "sale_id": self.sale_id,
            "entry_id": self.entry_id,
            "ticket_id": self.ticket_id,
            "user_id": self.user_id,
            "quantity": self.quantity,
            "reason": self.reason,
            "attempts": self.attempts,
            "failed_at": None if self.failed_at is None else self.failed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The queue of one sale, as ``flask flashsale status`` shows it."""

    sale_id: str
    #: Orders not yet settled (undelivered + pending): settled entries are deleted.
    length: int
    #: Delivered to a worker, not yet settled (in hand, awaiting retry, or orphaned).
    pending: int
    #: Admitted but not yet delivered to any worker: what to scale workers on.
    lag: int
    #: Pending orders whose hook failed and that wait for their next attempt.
    retrying: int
    #: Orders in the dead-letter stream.
    dead_letters: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {
            "sale_id": self.sale_id,
            "length": self.length,
            "pending": self.pending,
            "lag": self.lag,
            "retrying": self.retrying,
            "dead_letters": self.dead_letters,
        }


class OrderQueue:
    """Reads and settles the orders streams of one Redis client.

    The web app's state has one (for :meth:`cancel` and the admin commands);
    each worker makes its own on its own connection pool, since its reads block.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        ticket_ttl: int,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.ticket_ttl = ticket_ttl
        # Called with the sale id after this process gave stock back or took it
        # again (the scripts also publish ``changed``, which other processes
        # hear a moment later): this process's cache forgets the sale at once.
        self._on_change = on_change
        self.events = keys.events_channel()
        self._group = register(client, "order_group")
        self._claim = register(client, "clock", "order_claim")
        self._touch = register(client, "order_touch")
        self._confirm = register(client, "order_confirm")
        self._retry = register(client, "clock", "order_retry")
        self._start = register(client, "order_start")
        self._compensate = register(client, "clock", "order_compensate")
        self._cancel = register(client, "order_cancel")
        self._leave = register(client, "order_leave")
        self._release = register(client, "clock", "order_release")
        self._requeue = register(client, "order_requeue")

    # -- the worker's side -----------------------------------------------------

    def sale_ids(self) -> list[str]:
        """Every sale in the index, sorted (ended sales too: their queue still drains)."""
        return sorted(self.client.smembers(self.keys.sales_index()))

    def ensure_group(self, sale_id: str) -> bool:
        """Create the group on the sale's stream (from id 0); False if the sale is gone."""
        return bool(self._group(keys=self.keys.order_group(sale_id), args=[GROUP]))

    def read(
        self,
        consumer: str,
        sale_ids: list[str],
        *,
        block_ms: int | None,
        count: int = 1,
        split: bool | None = None,
    ) -> list[Delivery]:
        """New orders for ``consumer``: at most ``count`` per sale.

        One ``XREADGROUP`` covers every sale, blocking ``block_ms`` (``None``:
        not at all). ``split`` reads each stream with its own command instead
        (the ``memory://`` store ignores ``BLOCK``, and on Cluster one command
        must not span slots); it defaults to ``block_ms is None``.
        """
        by_stream = {self.keys.stream(s): s for s in sale_ids}
        if not by_stream:
            return []
        if split is None:
            split = block_ms is None
        if split:
            replies: list[Any] = []
            for stream in by_stream:
                replies += self.client.xreadgroup(GROUP, consumer, {stream: ">"}, count=count) or []
        else:
            streams = dict.fromkeys(by_stream, ">")
            replies = self.client.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        out = []
        for stream, entries in replies or []:
            for entry_id, fields in entries:
                if fields:
                    out.append(Delivery(by_stream[stream], entry_id, dict(fields), 1))
        return out

    def claim(
        self,
        consumer: str,
        sale_id: str,
        *,
        idle_ms: int,
        count: int,
        prune_ms: int = 0,
        cursor: str = "0-0",
    ) -> tuple[list[Delivery], str]:
        """Retries now due and orders idle on a dead consumer, claimed for ``consumer``.

        Returns the deliveries and the cursor the next claim should start from.
        """
        next_cursor, flat = self._claim(
            keys=self.keys.order_claim(sale_id),
            args=[GROUP, consumer, idle_ms, count, prune_ms, cursor],
        )
        deliveries = [
            Delivery(
                sale_id,
                str(flat[i]),
                _fields(flat[i + 1]),
                int(flat[i + 2]),
                failures=int(flat[i + 3]),
                deaths=int(flat[i + 4]),
                claimed=True,
            )
            for i in range(0, len(flat), 5)
        ]
        return deliveries, str(next_cursor)

    def touch(self, consumer: str, sale_id: str, entry_ids: list[str]) -> int:
        """Renew ``consumer``'s hold on entries in its hands; return how many it still holds."""
        if not entry_ids:
            return 0
        return int(
            self._touch(keys=self.keys.order_touch(sale_id), args=[GROUP, consumer, *entry_ids])
        )

    def ticket_status(self, delivery: Delivery) -> str | None:
        """The ticket's status, or ``None`` once it has expired."""
        return self.ticket_statuses([delivery])[0]

    def ticket_statuses(self, deliveries: list[Delivery]) -> list[str | None]:
        """The status of each delivery's ticket (``None``: expired), in one round trip."""
        if not deliveries:
            return []
        pipe = self.client.pipeline(transaction=False)
        for d in deliveries:
            sale_id, token = split_ticket_id(d.ticket_id)
            pipe.hget(self.keys.ticket(sale_id, token), "s")
        return list(pipe.execute())

    def confirm(self, delivery: Delivery) -> str:
        """Acknowledge the entry and confirm its ticket; return the outcome.

        ``confirmed`` (this call confirmed it; ``awaiting_payment`` on a sale
        with a payment timeout, ``paid`` if it was paid while queued),
        ``settled`` (acknowledged, but the ticket was cancelled, failed or
        expired) or ``stale`` (already settled).
        """
        return self.confirm_many([delivery])[0]

    def confirm_many(self, deliveries: list[Delivery]) -> list[str]:
        """:meth:`confirm` each delivery; one script call per sale. Outcomes in order."""
        by_sale: dict[str, list[int]] = {}
        for i, d in enumerate(deliveries):
            by_sale.setdefault(d.sale_id, []).append(i)
        outcomes = [""] * len(deliveries)
        k = self.keys
        for sale_id, indexes in by_sale.items():
            tickets = [k.ticket(*split_ticket_id(deliveries[i].ticket_id)) for i in indexes]
            replies = self._confirm(
                keys=k.order_confirm(sale_id, tickets),
                args=[GROUP, self.ticket_ttl, *(deliveries[i].entry_id for i in indexes)],
            )
            for i, outcome in zip(indexes, replies, strict=True):
                outcomes[i] = str(outcome)
        return outcomes

    def release(self, consumer: str, deliveries: list[Delivery]) -> int:
        """Hand back orders read but not started; one script call per sale.

        An order delivered once goes back to the queue undelivered (its
        delivery is not counted); one delivered before is scheduled as a
        retry due at once. Returns how many were still held and handed back.
        """
        by_sale: dict[str, list[str]] = {}
        for d in deliveries:
            by_sale.setdefault(d.sale_id, []).append(d.entry_id)
        released = 0
        for sale_id, ids in by_sale.items():
            released += int(
                self._release(
                    keys=self.keys.order_release(sale_id),
                    args=[GROUP, consumer, *ids],
                )
            )
        return released

    def start(self, consumer: str, delivery: Delivery) -> tuple[int, str | None]:
        """Count a death of ``consumer`` in advance, before a claimed order's hook runs.

        Taken back when the outcome is reported (:meth:`confirm_many`,
        :meth:`retry` with ``started=True``, :meth:`compensate`). Returns the
        order's deaths so far including this one (0: not marked, the ticket is
        cancelled or failed; -1: ``consumer`` no longer holds the entry) and
        the ticket's status (``None`` once expired).
        """
        sale_id, token = split_ticket_id(delivery.ticket_id)
        deaths, status = self._start(
            keys=self.keys.order_start(sale_id, token),
            args=[GROUP, consumer, delivery.entry_id],
        )
        return int(deaths), (str(status) or None)

    def retry(
        self, consumer: str, delivery: Delivery, delay: float, *, started: bool = False
    ) -> bool:
        """Record a hook failure; schedule the next delivery in ``delay`` s; False if not held.

        ``started``: the attempt was begun with :meth:`start` (its death mark
        is taken back).
        """
        sale_id = delivery.sale_id
        return bool(
            self._retry(
                keys=self.keys.order_retry(sale_id),
                args=[
                    GROUP,
                    consumer,
                    delivery.entry_id,
                    int(delay * 1000),
                    "1" if started else "0",
                ],
            )
        )

    def compensate(self, consumer: str, delivery: Delivery, reason: str) -> str:
        """Give the order's stock back and dead-letter it with ``reason``; return the outcome.

        The ticket's ``reason`` becomes :data:`FAILED_REASON`: buyers read
        tickets, and exception text is for operators.

        ``failed`` (done, exactly once), ``settled`` (the ticket was cancelled,
        so only acknowledged) or ``stale`` (another consumer holds it now).
        """
        sale_id, token = split_ticket_id(delivery.ticket_id)
        letter = [x for name in ("t", "u", "q", "p", "a") for x in (name, delivery.fields[name])]
        outcome = str(
            self._compensate(
                keys=self.keys.order_compensate(sale_id, token),
                args=[
                    GROUP,
                    consumer,
                    delivery.entry_id,
                    reason,
                    delivery.attempt,
                    self.events,
                    event(CHANGED, sale_id),
                    DEAD_LETTER_MAXLEN,
                    FAILED_REASON,
                    *letter,
                ],
            )
        )
        if outcome == "failed":
            self._changed(sale_id)
        return outcome

    def _changed(self, sale_id: str) -> None:
        if self._on_change is not None:
            self._on_change(sale_id)

    def leave(self, consumer: str, sale_id: str) -> bool:
        """Remove ``consumer`` from the sale's group if nothing is pending on it."""
        return bool(self._leave(keys=self.keys.order_leave(sale_id), args=[GROUP, consumer]))

    def backlog(self, sale_ids: list[str]) -> int:
        """Orders not yet settled across ``sale_ids`` (0: the queue is drained)."""
        if not sale_ids:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.xlen(self.keys.stream(sale_id))
        return sum(int(n) for n in pipe.execute())

    # -- the host's side -------------------------------------------------------

    def cancel(self, ticket_id: str, reason: str) -> bool:
        """Cancel the order: True if this call gave its stock back, False if already done.

        Raises :class:`~flask_flashsale.TicketNotFound` for an unknown (or expired) ticket.
        """
        sale_id, token = split_ticket_id(ticket_id)
        outcome, _ = self._cancel(
            keys=self.keys.order_cancel(sale_id, token),
            args=[reason, self.events, event(CHANGED, sale_id), token],
        )
        if outcome == "not_found":
            raise TicketNotFound()
        if outcome == "cancelled":
            self._changed(sale_id)
            return True
        return False

    def stats(self, sale_ids: list[str]) -> list[QueueStats]:
        """The queue of each sale, in two pipelined round trips."""
        pipe = self.client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.xlen(self.keys.stream(sale_id))
            pipe.zcard(self.keys.retry(sale_id))
            pipe.xlen(self.keys.dead(sale_id))
        counts = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for sale_id in sale_ids:
            pipe.xpending(self.keys.stream(sale_id), GROUP)
        pendings = pipe.execute(raise_on_error=False)
        out = []
        for i, sale_id in enumerate(sale_ids):
            length, retrying, dead = (int(n) for n in counts[3 * i : 3 * i + 3])
            summary = pendings[i]
            pending = 0 if isinstance(summary, redis.ResponseError) else int(summary["pending"])
            out.append(
                QueueStats(sale_id, length, pending, max(length - pending, 0), retrying, dead)
            )
        return out

    def dead_letters(
        self, sale_id: str, count: int = 100, after: str | None = None
    ) -> list[DeadLetter]:
        """The sale's dead letters, oldest first: at most ``count``, those after entry ``after``.

        Page through all of them by passing the last entry id seen as ``after``;
        :meth:`stats` (``dead_letters``) counts them.
        """
        check_sale_id(sale_id)
        start = "-"
        if after is not None:
            if not ENTRY_ID.fullmatch(after):
                raise ValueError(f"{after[:40]!r} is not a stream entry id")
            start = "(" + after
        out = []
        for entry_id, fields in self.client.xrange(self.keys.dead(sale_id), start, count=count):
            failed = fields.get("f")
            out.append(
                DeadLetter(
                    sale_id=sale_id,
                    entry_id=entry_id,
                    ticket_id=fields["t"],
                    user_id=fields["u"],
                    quantity=int(fields["q"]),
                    reason=fields.get("r", ""),
                    attempts=int(fields.get("n") or 0),
                    failed_at=from_millis(int(failed)) if failed else None,
                )
            )
        return out

    def requeue(self, sale_id: str, entry_id: str) -> str:
        """Put a dead letter back on the queue, taking its stock again.

        Returns ``queued``, or why not: ``not_found`` (no such dead letter),
        ``sold_out``, ``limit_reached``, ``conflict`` (ticket no longer failed).
        Raises :class:`~flask_flashsale.SaleNotFound` if the sale is gone.
        """
        check_sale_id(sale_id)
        if not ENTRY_ID.fullmatch(entry_id):
            return "not_found"
        k = self.keys
        rows = self.client.xrange(k.dead(sale_id), entry_id, entry_id)
        if not rows:
            return "not_found"
        ticket_id = rows[0][1]["t"]
        _, token = split_ticket_id(ticket_id)
        outcome, _ = self._requeue(
            keys=k.order_requeue(sale_id, token),
            args=[entry_id, ticket_id, self.ticket_ttl, self.events, event(CHANGED, sale_id)],
        )
        if outcome == "sale_not_found":
            raise SaleNotFound(f"no sale {sale_id!r}")
        if outcome == "queued":
            self._changed(sale_id)
        return str(outcome)
