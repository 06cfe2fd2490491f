"""Compare Redis (admission truth) with the host's orders (order truth), and repair.

Redis counts, per sale, the units each buyer holds (``users`` hash) and the
units left (``remaining``); the host's database holds the orders its
``order_handler`` wrote. The host tells what it holds through a
``reconcile_source`` hook: ``(sale_id) -> {user_id: units}`` of its confirmed
orders, or better its orders themselves as ``(order_id, user_id, units)``
rows (``order.id`` is the ticket id). For each buyer::

    held      units Redis counts for the buyer
    pending   units in the buyer's ``queued`` tickets (admitted, maybe not yet
              written by the host: the worker has them in hand)
    host      units in the host's orders

``host <= held <= host + pending`` is consistent. Below it, the host has orders
Redis did not count (stock not taken): repair takes them. Above it, Redis
holds units no order accounts for: repair gives them back, and marks
``confirmed`` tickets the host does not have as ``failed`` (reason
``reconciled``). The sale itself must satisfy ``stock - remaining == sum(held)``
(``remaining`` below zero when buyers hold more than the stock).

When the source gives order ids, repair also restores the tickets Redis
forgot (Redis restarted from an older append-only file or a lagging replica)
of buyers whose units it forgot: they come back ``confirmed``, so the buyer
sees the order again and a retry with the same ``Idempotency-Key`` is a
``duplicate``. Those ids also pick which ``confirmed`` tickets the host lacks.

Payments (a sale with a payment timeout): ``awaiting_payment`` and ``paid``
tickets count as ``confirmed`` ones (live, the hook ran), and an ``expired``
one gave its units back. A host order whose ticket expired (its expiry hook
has not cancelled it yet, or was dead-lettered) is left out and listed in
:attr:`SaleReconciliation.expired_orders`, never taken again: its units were
sold to someone else. (That needs order ids from the source.)

Buyers whose Redis state changes while reconciliation reads the host
(admitted, confirmed or cancelled meanwhile) are reported as in flight and left
alone. Repairs are relative changes applied by one script
(``reconcile_fix.lua``) while holding the sale's lock, so they commute with
admissions running at the same time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import ResponseError

from .errors import LockLost, SaleNotFound
from .keys import TICKET_ID, Keys, join_ticket_id
from .lock import FencedLock

if TYPE_CHECKING:
    from .protocols import RedisClient, Script

#: What a :data:`ReconcileSource` returns: ``{user_id: units}`` of the host's
#: confirmed orders, or those orders as ``(order_id, user_id, units)`` rows.
HostOrders = Mapping[Any, int] | Iterable[tuple[Any, Any, int]]
#: The host's hook: ``(sale_id) ->`` :data:`HostOrders`.
ReconcileSource = Callable[[str], HostOrders]

#: Lease (s) of the sale lock held while a repair reads the host and writes.
REPAIR_LEASE = 60.0
#: How long a repair waits for the sale lock (s).
REPAIR_WAIT = 10.0
#: ``reason`` written on confirmed tickets the host does not have.
STALE_REASON = "reconciled"
#: Ticket statuses of orders whose hook ran and whose units are still held.
SETTLED_LIVE = ("confirmed", "awaiting_payment", "paid")


@dataclass(frozen=True, slots=True)
class UserDrift:
    """One buyer whose units in Redis disagree with the host's orders."""

    user_id: str
    #: Units Redis counts for the buyer.
    held: int
    #: Units in the buyer's ``queued`` tickets.
    pending: int
    #: Units in tickets Redis marks ``confirmed`` (or ``awaiting_payment``, ``paid``).
    confirmed: int
    #: Units in the host's orders.
    host: int
    #: Change to the buyer's units that makes Redis agree (``+``: take stock).
    delta: int
    #: Confirmed tickets the host does not have (marked ``failed`` by a repair).
    stale_tickets: tuple[str, ...] = ()
    #: Tickets of host orders Redis forgot, for a buyer whose units it forgot
    #: too (restored as ``confirmed`` by a repair; needs order ids from the source).
    missing_tickets: tuple[str, ...] = ()
    #: Units of each of :attr:`missing_tickets`.
    missing_units: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SaleReconciliation:
    """What reconciliation found (and, with ``fix``, repaired) for one sale."""

    sale_id: str
    #: Units offered (created + restocks).
    stock: int
    #: ``remaining`` in Redis when read: ``stock`` minus the units buyers hold,
    #: below 0 when they hold more than the stock (the API shows 0 then).
    remaining: int
    #: Buyers that disagree.
    users: tuple[UserDrift, ...]
    #: Change to ``remaining`` that makes Redis agree.
    remaining_delta: int
    #: Buyers left alone because their Redis state changed during the check.
    in_flight: tuple[str, ...] = ()
    #: True when the differences were repaired.
    fixed: bool = False
    #: ``remaining`` in Redis after the repair (``None`` without one); below 0
    #: when buyers hold more than the stock.
    remaining_after: int | None = None
    #: Units buyers hold beyond the stock after the repair (``-remaining_after``
    #: when that is positive): no order is admitted until they come back.
    oversold: int = 0
    #: Extra notes (e.g. the sale vanished during the repair).
    notes: tuple[str, ...] = field(default=())
    #: Host orders whose ticket is ``expired`` in Redis (their units went back
    #: on sale): left out of the comparison; the expiry hook should cancel them.
    expired_orders: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when Redis and the host agree."""
        return not self.users and self.remaining_delta == 0

    def describe(self) -> list[str]:
        """Human-readable lines, as printed by ``flask flashsale reconcile``.

        ``remaining`` is shown as the API shows it (never below 0), with the
        units held beyond the stock named when there are any.
        """
        sold = self.stock - self.remaining
        lines = [
            f"{self.sale_id}: stock {self.stock}, remaining {_shown(self.remaining)}, sold {sold}"
        ]
        for u in self.users:
            action = f"take {u.delta}" if u.delta > 0 else f"give back {-u.delta}"
            if u.delta == 0:
                action = "mark tickets failed"
            lines.append(
                f"  {u.user_id}: Redis holds {u.held} (pending {u.pending}, confirmed "
                f"{u.confirmed}), host has {u.host} -> {action}"
            )
            for ticket in u.stale_tickets:
                lines.append(f"    ticket {ticket} confirmed in Redis, not in the host")
            for ticket in u.missing_tickets:
                lines.append(f"    ticket {ticket} in the host, forgotten by Redis")
        if self.remaining_delta:
            after = self.remaining + self.remaining_delta
            lines.append(f"  remaining {_shown(self.remaining)} -> {_shown(after)}")
        for user in self.in_flight:
            lines.append(f"  {user}: changed during the check, left alone")
        for ticket in self.expired_orders:
            lines.append(f"  ticket {ticket} expired in Redis, still in the host (left out)")
        lines.extend(f"  {note}" for note in self.notes)
        if self.oversold:
            lines.append(
                f"  OVERSOLD: buyers hold {self.oversold} units more than the stock;"
                " no order is admitted until they come back"
            )
        if self.ok:
            lines.append("  in agreement")
        elif self.fixed and self.remaining_after is not None:
            lines.append(f"  repaired: remaining is now {_shown(self.remaining_after)}")
        elif not self.notes:
            lines.append("  differences found (repair them with --fix)")
        return lines


def _shown(remaining: int) -> str:
    """``remaining`` as the API shows it, with the units held beyond the stock."""
    if remaining >= 0:
        return str(remaining)
    return f"0 ({-remaining} over the stock)"


@dataclass(frozen=True, slots=True)
class _Ticket:
    token: str
    user: str
    quantity: int
    status: str
    admitted_ms: int


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stock: int
    remaining: int
    held: dict[str, int]
    tickets: dict[str, _Ticket]

    def user_tickets(self, user: str) -> set[tuple[str, str]]:
        return {(t.token, t.status) for t in self.tickets.values() if t.user == user}


def _token(ticket_id: str) -> str:
    return ticket_id.split("~", 1)[1]


def _snapshot(client: RedisClient, keys: Keys, sale_id: str) -> _Snapshot | None:
    """Sale, buyers and tickets of one sale, read in one MULTI/EXEC."""
    tokens = [
        keys.ticket_token(sale_id, key)
        for key in client.scan_iter(match=keys.tickets_match(sale_id), count=1000)
    ]
    pipe = client.pipeline(transaction=True)
    pipe.hmget(keys.sale(sale_id), "stock", "remaining")
    pipe.hgetall(keys.users(sale_id))
    for token in tokens:
        pipe.hgetall(keys.ticket(sale_id, token))
    (stock, remaining), held, *raw = pipe.execute()
    if remaining is None:
        return None
    tickets = {
        token: _Ticket(token, t["u"], int(t["q"]), t["s"], int(t.get("a") or 0))
        for token, t in zip(tokens, raw, strict=True)
        if t
    }
    return _Snapshot(
        stock=int(stock),
        remaining=int(remaining),
        held={u: int(n) for u, n in held.items()},
        tickets=tickets,
    )


@dataclass(frozen=True, slots=True)
class _Host:
    """The host's side of one sale, as the source returned it."""

    #: Units of the host's orders per buyer (buyers with none left out).
    units: dict[str, int]
    #: ``token -> (user, units)`` of the host's orders that carry a ticket id of
    #: this sale; ``None`` when the source gave units per buyer only.
    orders: dict[str, tuple[str, int]] | None


def _host(sale_id: str, raw: HostOrders) -> _Host:
    if isinstance(raw, Mapping):
        return _Host({str(u): int(n) for u, n in raw.items() if int(n)}, None)
    units: dict[str, int] = {}
    orders: dict[str, tuple[str, int]] = {}
    for order_id, user_id, quantity in raw:
        user, qty = str(user_id), int(quantity)
        units[user] = units.get(user, 0) + qty
        m = TICKET_ID.fullmatch(str(order_id))
        if m is not None and m.group(1) == sale_id:
            orders[m.group(2)] = (user, qty)
    return _Host({u: n for u, n in units.items() if n}, orders)


def _without_expired(sale_id: str, host: _Host, snap: _Snapshot) -> tuple[_Host, tuple[str, ...]]:
    """The host's orders less those whose ticket expired in Redis, and those ticket ids."""
    if host.orders is None:
        return host, ()
    gone = sorted(
        token
        for token in host.orders
        if token in snap.tickets and snap.tickets[token].status == "expired"
    )
    if not gone:
        return host, ()
    units = dict(host.units)
    orders = dict(host.orders)
    for token in gone:
        user, qty = orders.pop(token)
        units[user] -= qty
    kept = _Host({u: n for u, n in units.items() if n}, orders)
    return kept, tuple(join_ticket_id(sale_id, token) for token in gone)


def _judge(sale_id: str, snap: _Snapshot, host: _Host, user: str) -> UserDrift | None:
    held = snap.held.get(user, 0)
    mine = [t for t in snap.tickets.values() if t.user == user]
    pending = sum(t.quantity for t in mine if t.status == "queued")
    confirmed_tickets = sorted(
        (t for t in mine if t.status in SETTLED_LIVE), key=lambda t: t.admitted_ms, reverse=True
    )
    confirmed = sum(t.quantity for t in confirmed_tickets)
    units = host.units.get(user, 0)
    delta = 0
    if held < units:
        delta = units - held
    elif held > units + pending:
        delta = units + pending - held
    stale: list[str] = []
    excess = confirmed - units
    orders = host.orders
    if orders is not None:  # the ones the host does not have go first
        confirmed_tickets.sort(key=lambda t: t.token in orders)
    for ticket in confirmed_tickets:  # newest first
        if excess <= 0:
            break
        stale.append(join_ticket_id(sale_id, ticket.token))
        excess -= ticket.quantity
    missing: list[tuple[str, int]] = []
    if delta > 0 and host.orders is not None:
        # Redis forgot units of this buyer that the host holds: it forgot
        # their tickets too (an expired ticket alone leaves the units counted).
        missing = sorted(
            (token, qty)
            for token, (owner, qty) in host.orders.items()
            if owner == user and token not in snap.tickets
        )
    if delta == 0 and not stale and not missing:
        return None
    return UserDrift(
        user,
        held,
        pending,
        confirmed,
        units,
        delta,
        tuple(stale),
        tuple(join_ticket_id(sale_id, token) for token, _ in missing),
        tuple(qty for _, qty in missing),
    )


class Reconciler:
    """Runs reconciliation for one app (see the module docstring)."""

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        fix_script: Script,
        lock_script: Script,
        *,
        ticket_ttl: int = 7 * 24 * 3600,
    ) -> None:
        self.client = client
        self.keys = keys
        #: TTL (s) of the tickets a repair restores (``FLASHSALE_TICKET_TTL``).
        self.ticket_ttl = ticket_ttl
        self._fix = fix_script
        self._lock_script = lock_script

    def sale_lock(self, sale_id: str) -> FencedLock:
        """The sale's lock (the one the ``lock`` strategy takes), with a repair-sized lease."""
        key, fence_key = self.keys.sale_lock(sale_id)
        return FencedLock(
            self.client,
            key,
            fence_key,
            script=self._lock_script,
            timeout=REPAIR_LEASE,
            blocking_timeout=REPAIR_WAIT,
            sleep=0.01,
            thread_local=False,
        )

    def run(self, sale_id: str, source: ReconcileSource, *, fix: bool) -> SaleReconciliation:
        """Reconcile one sale; with ``fix``, repair it while holding its lock."""
        if not fix:
            return self._check(sale_id, source)
        lock = self.sale_lock(sale_id)
        with lock:
            found = self._check(sale_id, source)
            if found.ok:
                return found
            return self._repair(found, lock)

    def _check(self, sale_id: str, source: ReconcileSource) -> SaleReconciliation:
        before = _snapshot(self.client, self.keys, sale_id)
        if before is None:
            raise SaleNotFound(f"no sale {sale_id!r}")
        host = _host(sale_id, source(sale_id))
        after = _snapshot(self.client, self.keys, sale_id)
        if after is None:
            raise SaleNotFound(f"sale {sale_id!r} was deleted during reconciliation")
        host, expired_orders = _without_expired(sale_id, host, after)
        users = set(after.held) | set(host.units) | {t.user for t in after.tickets.values()}
        in_flight = sorted(
            u
            for u in users | set(before.held)
            if before.held.get(u) != after.held.get(u)
            or before.user_tickets(u) != after.user_tickets(u)
        )
        drifts = []
        for user in sorted(users - set(in_flight)):
            drift = _judge(sale_id, after, host, user)
            if drift is not None:
                drifts.append(drift)
        # The sale's own books: what was taken must be what buyers hold.
        expected = after.stock - sum(after.held.values())
        remaining_delta = expected - after.remaining - sum(d.delta for d in drifts)
        return SaleReconciliation(
            sale_id=sale_id,
            stock=after.stock,
            remaining=after.remaining,
            users=tuple(drifts),
            remaining_delta=remaining_delta,
            in_flight=tuple(in_flight),
            expired_orders=expired_orders,
        )

    def _repair(self, found: SaleReconciliation, lock: FencedLock) -> SaleReconciliation:
        k, sale_id = self.keys, found.sale_id
        stale = [k.ticket(sale_id, _token(t)) for d in found.users for t in d.stale_tickets]
        missing = [k.ticket(sale_id, _token(t)) for d in found.users for t in d.missing_tickets]
        pairs: list[Any] = []
        for d in found.users:
            if d.delta:
                pairs += [d.user_id, d.delta]
        restored: list[Any] = []
        for d in found.users:
            for qty in d.missing_units:
                restored += [d.user_id, qty]
        try:
            outcome, remaining, oversold = self._fix(
                keys=k.reconcile_fix(sale_id, stale, missing),
                args=[
                    cast(str, lock.holder),  # held: _repair runs inside `with lock`
                    found.remaining_delta,
                    STALE_REASON,
                    len(stale),
                    self.ticket_ttl,
                    len(pairs) // 2,
                    *pairs,
                    *restored,
                ],
            )
        except ResponseError as exc:
            if "LOCKLOST" in str(exc):
                detail = f"the lock of sale {found.sale_id!r} expired during the repair"
                raise LockLost(detail) from None
            raise
        if outcome == "gone":
            note = "the sale was deleted before the repair; nothing done"
            return replace(found, notes=(*found.notes, note))
        return replace(found, fixed=True, remaining_after=int(remaining), oversold=int(oversold))
