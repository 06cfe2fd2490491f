"""The chaos suite's history checker: what buyers were told, against what Redis and the host hold.

:func:`check` takes the history of one scenario (every HTTP answer a client
got, or the lack of one) and the :class:`State` read once the queue is
drained and the workers are stopped, and says whether the run held. It knows
nothing about how the run went; :mod:`benchmarks.chaos` feeds it, and
``tests/test_chaos_check.py`` feeds it hand-made histories.

A history entry is a dict (one JSON line of a history file):

``buyer``, ``key``, ``quantity``
    who asked, the ``Idempotency-Key`` sent (``None``: none), units asked for;
``status``
    the HTTP status, ``None`` when no answer came (timeout, connection reset);
``code``
    the problem ``code`` of an error answer;
``ticket``, ``ticket_status``
    the ``ticket_id`` and ``status`` of a ``202`` body.

The columns of the chaos table:

admitted
    distinct tickets a client was answered ``202`` with, plus the tickets
    Redis holds that no client saw (a lost answer);
confirmed / compensated
    tickets ending ``confirmed`` / ``failed`` (stock given back);
lost
    admitted tickets that did not end well: gone from Redis, still ``queued``
    after the drain, ``confirmed`` with no host row, or compensated although
    their hook neither failed ``FLASHSALE_MAX_ATTEMPTS`` times nor died in
    hand that often (and never returned);
duplicated
    the same unit counted twice: a second ticket for a buyer's
    ``Idempotency-Key``, an order compensated after its hook returned (its
    row stays in the host while its stock is sold again), a host row Redis
    holds no ticket for, a ticket compensated more than once;
oversold
    units beyond the stock: admitted minus compensated in Redis, or units in
    the host's rows, whichever is more.

With a payment timeout (``State.payment_timeout_ms``; ``python -m benchmarks
chaos --payment-timeout S``) the history also holds the answers of the
chaos app's payment endpoint (entries with ``"op": "pay"``):

``ticket``, ``kind``
    the ticket paid, and why (``once``, ``twice``: one of a webhook's two
    deliveries, ``late``: paid around or after ``pay_by``, ``late-buyer``);
``status``, ``code``
    ``200`` with an ``outcome``, a problem (``404 ticket_not_found``, ``503
    backend_unavailable``), or ``None`` (no answer);
``outcome``, ``ticket_status``
    ``paid``, ``too_late`` (:class:`~flask_flashsale.PaymentTooLate`) or
    ``refused`` (:class:`~flask_flashsale.PaymentRefused`), and the status
    the library gave;
``redis_before_ms``, ``redis_after_ms``
    Redis ``TIME`` (ms) read by the app just before and just after its
    ``mark_paid`` call: the script that judged the payment ran between the two.

and these rules hold besides the ones above (a confirmed ticket is not an
end: the worker makes it ``awaiting_payment``, and once the queue is drained
and every ``pay_by`` has passed, none may still await payment):

- every admitted ticket ends ``paid``, ``expired``, ``cancelled`` or ``failed``;
- the units given back (``stock - remaining`` against every ticket's units) are
  exactly the units of expired, failed and cancelled tickets, and the sale's
  ``expired`` / ``paid`` counters count each expired / paid ticket once;
- paid units + other live units never exceed the stock, nor do the units of
  the host's paid rows;
- the expiry hook was called (at least once) for every expired ticket, and
  never for any other;
- no payment was accepted after ``pay_by``: the ticket's first accepted
  payment began (``redis_before_ms``) before its ``pay_by``, checked for every
  ticket whose payment requests were all answered; no ``too_late`` answer
  ended (``redis_after_ms``) before ``pay_by``; ``pay_by`` is the admission
  time + the payment timeout;
- answers hold: a ticket answered ``paid`` ends paid (or cancelled: a refund),
  one answered ``too_late`` never ends paid, no admitted ticket is answered
  ``404``;
- the host model: the order hook writes a row (state ``new``), the payment
  endpoint marks it ``paid`` (an upsert: the webhook may beat the worker), the
  expiry hook marks it ``expired``. At the end the host's rows are exactly the
  paid and the expired tickets, a paid ticket's row says ``paid`` and an
  expired ticket's row says ``expired`` (``new`` if its expiry hook was given
  up: a dead letter). Failed tickets have no row; cancelled ones are the
  shop's own business (the chaos app never cancels).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Problems kept per check in a verdict (the counts are always complete).
EXAMPLES = 5


@dataclass(frozen=True)
class TicketState:
    """A ticket as Redis holds it at the end."""

    user: str
    quantity: int
    #: ``queued``, ``confirmed``, ``failed`` or ``cancelled``; with a payment
    #: timeout also ``awaiting_payment``, ``paid`` and ``expired``.
    status: str
    #: Admission time, Redis ms (the ticket's ``a``), when known.
    admitted_ms: int | None = None
    #: ``pay_by``, Redis ms (the ticket's ``d``), once the ticket has one.
    pay_by_ms: int | None = None


@dataclass(frozen=True)
class Calls:
    """The hook's calls for one order, as the host logged them."""

    #: Calls that began.
    started: int = 0
    #: Calls that returned (the order's row committed).
    returned: int = 0
    #: Calls that raised.
    raised: int = 0
    #: The highest delivery count (``Order.attempt``) a call was made with.
    attempt: int = 1
    #: Calls of the expiry hook that began, returned (the row marked ``expired``), raised.
    expiry_started: int = 0
    expiry_returned: int = 0
    expiry_raised: int = 0

    @property
    def died(self) -> int:
        """Calls that began and never ended: the worker died with the order in hand."""
        return max(0, self.started - self.returned - self.raised)


@dataclass
class State:
    """What Redis and the host hold for the sale once the run is over."""

    stock: int
    remaining: int
    per_user_limit: int
    #: ``FLASHSALE_MAX_ATTEMPTS`` of the run.
    max_attempts: int
    #: Every ticket of the sale in Redis, by ticket id.
    tickets: dict[str, TicketState]
    #: Redis' units per buyer (the ``users`` hash).
    users: dict[str, int]
    #: The ticket id of each entry of the dead-letter stream.
    dead_letters: list[str]
    #: Orders not yet settled (the orders stream's length).
    backlog: int
    #: The host's order rows: order id -> (buyer, units).
    rows: dict[str, tuple[str, int]]
    #: The host's log of hook calls, by order id.
    calls: dict[str, Calls] = field(default_factory=dict)
    #: The sale's payment timeout (ms); ``None``: no payment timeout, the
    #: payment rules are not checked.
    payment_timeout_ms: int | None = None
    #: The state of each host row (``new``, ``paid``, ``expired``), by order id.
    row_states: dict[str, str] = field(default_factory=dict)
    #: The ticket id of each dead letter of an expiry hook's call (not in ``dead_letters``).
    expiry_dead_letters: list[str] = field(default_factory=list)
    #: The sale's ``paid`` and ``expired`` counters (the payments hash).
    paid_counter: int = 0
    expired_counter: int = 0


@dataclass
class Verdict:
    """The outcome of :func:`check`: counts, one bool per check, and examples of what failed."""

    counts: dict[str, Any]
    checks: dict[str, bool]
    problems: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return all(self.checks.values())

    def failed(self) -> list[str]:
        """Names of the checks that did not hold."""
        return [name for name, held in self.checks.items() if not held]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ok": self.ok, "counts": self.counts, "checks": self.checks,
                "problems": {k: v for k, v in self.problems.items() if v}}


class _Findings:
    """Counts every problem of a kind, keeps the first few as examples."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, text: str, n: int = 1) -> None:
        self.count[kind] += n
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(text)


def answer_class(entry: Mapping[str, Any]) -> str:
    """``2xx``, ``4xx``, ``5xx`` or ``none`` (no HTTP answer)."""
    status = entry.get("status")
    if status is None:
        return "none"
    return f"{int(status) // 100}xx"


#: Ticket statuses whose units are held (``remaining`` + their units == stock).
LIVE = ("queued", "confirmed", "awaiting_payment", "paid")
#: Ticket statuses whose units were given back.
GIVEN_BACK = ("failed", "expired", "cancelled")
#: The statuses a ticket may end in when the sale has a payment timeout.
PAYMENT_ENDS = ("paid", "expired", "cancelled", "failed")


def is_payment(entry: Mapping[str, Any]) -> bool:
    """True for an answer of the payment endpoint, False for an order's."""
    return entry.get("op") == "pay"


def check(history: Iterable[Mapping[str, Any]], state: State) -> Verdict:
    """Judge one scenario; see the module docstring for what each count means."""
    history = list(history)
    orders = [e for e in history if not is_payment(e)]
    payments = [e for e in history if is_payment(e)]
    pm = state.payment_timeout_ms is not None
    found = _Findings()
    classes = Counter(answer_class(e) for e in orders)

    # What the clients were told.
    seen: dict[str, Mapping[str, Any]] = {}
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in history:
        status = e.get("status")
        if status is not None and status >= 500 and not (
            status == 503 and e.get("code") == "backend_unavailable"
        ):
            what = f"payment of {e.get('ticket')}" if is_payment(e) else e.get("buyer")
            found.add("bad_5xx", f"{status} {e.get('code')!r} for {what}")
    for e in orders:
        status = e.get("status")
        if status == 202:
            ticket = e.get("ticket")
            if not ticket:
                found.add("bad_202", f"202 without a ticket for {e.get('buyer')}")
                continue
            seen.setdefault(ticket, e)
            if e.get("key") is not None:
                by_key[(str(e["buyer"]), str(e["key"]))].add(ticket)
            other = seen[ticket]
            if other.get("buyer") != e.get("buyer"):
                found.add("mismatch", f"ticket {ticket} answered to {other.get('buyer')} "
                                      f"and to {e.get('buyer')}")

    duplicated = 0
    for (buyer, key), tickets in by_key.items():
        if len(tickets) > 1:
            duplicated += len(tickets) - 1
            found.add("idempotency", f"{buyer} key {key!r}: {len(tickets)} tickets")

    # Every admitted ticket, and how it ended.
    admitted = set(seen) | set(state.tickets)
    dead = Counter(state.dead_letters)
    ends: Counter[str] = Counter()
    lost = 0
    admitted_units = given_back_units = 0
    live: Counter[str] = Counter()
    for ticket in sorted(admitted):
        r = state.tickets.get(ticket)
        told = seen.get(ticket)
        if r is None:
            lost += 1
            admitted_units += int(told["quantity"]) if told else 0
            found.add("lost", f"{ticket}: answered 202 to {told and told.get('buyer')}, "
                              "no such ticket in Redis")
            continue
        admitted_units += r.quantity
        ends[r.status] += 1
        if told is not None and (told.get("buyer") != r.user
                                 or int(told.get("quantity", r.quantity)) != r.quantity):
            found.add("mismatch", f"{ticket}: told {told.get('buyer')} x{told.get('quantity')},"
                                  f" Redis holds {r.user} x{r.quantity}")
        calls = state.calls.get(ticket, Calls())
        if r.status in LIVE:
            live[r.user] += r.quantity
        if r.status in GIVEN_BACK:
            given_back_units += r.quantity
        if pm and calls.expiry_started and r.status != "expired":
            found.add("expiry_hook", f"{ticket}: {r.status}, yet its expiry hook was called "
                                     f"{calls.expiry_started} time(s)")
        if r.status == "queued":
            lost += 1
            found.add("lost", f"{ticket}: still queued after the drain")
        elif pm and r.status in ("confirmed", "awaiting_payment"):
            lost += 1
            found.add("unsettled", f"{ticket}: still {r.status} once the queue was drained "
                                   "and every pay_by had passed")
        elif r.status == "confirmed":
            if ticket not in state.rows:
                lost += 1
                found.add("lost", f"{ticket}: confirmed in Redis, no row in the host")
        elif r.status == "failed":
            if dead[ticket] != 1:
                if dead[ticket] > 1:
                    duplicated += dead[ticket] - 1
                found.add("compensated_once", f"{ticket}: failed, {dead[ticket]} dead letters")
            if ticket in state.rows or calls.returned:
                duplicated += 1
                found.add("compensated_after_write",
                          f"{ticket}: compensated after its hook returned "
                          f"(calls: {calls.started} started, {calls.returned} returned, "
                          f"{calls.raised} raised)")
            elif calls.raised + calls.died < state.max_attempts:
                lost += 1
                found.add("compensated_without_cause",
                          f"{ticket}: compensated after {calls.raised} failed and "
                          f"{calls.died} died hook call(s) (< {state.max_attempts})")
        elif pm and r.status == "expired":
            if not calls.expiry_started:
                found.add("expiry_hook", f"{ticket}: expired, its expiry hook was never called")
        elif not (pm and r.status in PAYMENT_ENDS):
            found.add("unexpected_status", f"{ticket}: status {r.status!r}")
    for ticket in dead:
        r = state.tickets.get(ticket)
        if r is not None and r.status == "failed":
            continue
        calls = state.calls.get(ticket, Calls())
        if (pm and r is not None and r.status == "paid" and dead[ticket] == 1
                and calls.raised + calls.died >= state.max_attempts and not calls.returned):
            continue  # paid while queued, then its hook failed for good: the unit stays held
        found.add("compensated_once", f"{ticket}: dead letter for a ticket that is "
                                      f"{r.status if r else 'gone'}")
    for ticket in set(state.expiry_dead_letters):
        r = state.tickets.get(ticket)
        if r is None or r.status != "expired":
            found.add("expiry_hook", f"{ticket}: expiry hook dead letter for a ticket that is "
                                     f"{r.status if r else 'gone'}")

    # The host's side.
    row_units = {t: units for t, (_user, units) in state.rows.items()}
    for order_id, (user, _units) in sorted(state.rows.items()):
        r = state.tickets.get(order_id)
        if r is None:
            duplicated += 1
            found.add("host_rows", f"{order_id}: host row for {user}, no ticket in Redis")
        elif r.status not in (("paid", "expired", "cancelled", "failed") if pm
                              else ("confirmed", "failed")):  # failed: counted above
            found.add("host_rows", f"{order_id}: host row, ticket {r.status}")
    if pm:
        host_rows = "host rows == paid + expired"
        expiry_dead = set(state.expiry_dead_letters)
        for ticket, r in sorted(state.tickets.items()):
            row = state.row_states.get(ticket) if ticket in state.rows else None
            if r.status == "paid" and row != "paid":
                found.add("host_rows", f"{ticket}: paid, host row {row or 'missing'}")
            elif r.status == "expired" and row != "expired" and not (
                    row == "new" and ticket in expiry_dead):
                found.add("host_rows", f"{ticket}: expired, host row {row or 'missing'}")
        # The units the host sold: its paid rows.
        host_units = sum(row_units[t] for t, st in state.row_states.items()
                         if st == "paid" and t in row_units)
        rows_ok = not found.count["host_rows"]
    else:
        host_rows = "host rows == confirmed"
        rows_confirmed = {t for t, r in state.tickets.items() if r.status == "confirmed"}
        if set(state.rows) != rows_confirmed:
            found.add("host_rows", f"{len(state.rows)} host rows, {len(rows_confirmed)} "
                                   f"confirmed tickets, {len(set(state.rows) ^ rows_confirmed)}"
                                   " differ", 0)
        host_units = sum(row_units.values())
        rows_ok = not found.count["host_rows"] and set(state.rows) == rows_confirmed

    # Stock.
    net = admitted_units - given_back_units
    live_units = sum(live.values())
    oversold = max(0, net - state.stock, host_units - state.stock)
    if net > state.stock:
        found.add("admitted_le_stock", f"{net} units admitted and not given back, "
                                       f"stock {state.stock}")
    if host_units > state.stock:
        found.add("host_units_le_stock", f"the host holds {host_units} units, "
                                         f"stock {state.stock}")
    if state.remaining + live_units != state.stock:
        found.add("stock_balance", f"remaining {state.remaining} + live {live_units} "
                                   f"!= stock {state.stock}")
    for user in sorted(set(live) | set(state.users)):
        if state.users.get(user, 0) != live[user]:
            found.add("stock_balance", f"{user}: Redis counts {state.users.get(user, 0)} units, "
                                       f"live tickets hold {live[user]}")
        if live[user] > state.per_user_limit:
            found.add("per_user_limit", f"{user} holds {live[user]} units "
                                        f"(limit {state.per_user_limit})")
    if state.backlog:
        found.add("lost", f"{state.backlog} order(s) still in the queue", 0)

    pay_counts = _check_payments(payments, state, found) if pm else {}
    if pm:
        paid_units = sum(r.quantity for r in state.tickets.values() if r.status == "paid")
        if live_units > state.stock:
            found.add("paid_le_stock", f"{paid_units} paid + {live_units - paid_units} other "
                                       f"live units > stock {state.stock}")
        if pay_counts["told_paid_units"] > state.stock:
            found.add("paid_le_stock", f"{pay_counts['told_paid_units']} units answered paid "
                                       f"(and not cancelled) > stock {state.stock}")
        units = sum(r.quantity for r in state.tickets.values())
        back = units - (state.stock - state.remaining)
        if back != given_back_units:
            found.add("given_back", f"{back} units given back (stock - remaining vs every "
                                    f"ticket), expired + failed + cancelled tickets hold "
                                    f"{given_back_units}")
        if state.expired_counter != ends["expired"]:
            found.add("given_back", f"the sale counts {state.expired_counter} expiries, "
                                    f"{ends['expired']} tickets are expired")
        if state.paid_counter != ends["paid"]:
            found.add("payment_answers", f"the sale counts {state.paid_counter} payments, "
                                         f"{ends['paid']} tickets are paid")

    checks = {
        "admitted <= stock": not found.count["admitted_le_stock"],
        "each ticket settled once": not (found.count["lost"] or found.count["compensated_once"]
                                         or found.count["compensated_after_write"]
                                         or found.count["compensated_without_cause"]
                                         or found.count["unexpected_status"]
                                         or state.backlog),
        host_rows: rows_ok,
        "host units <= stock": not found.count["host_units_le_stock"],
        "remaining + live == stock": not found.count["stock_balance"],
        "one ticket per key, limit kept": not (found.count["idempotency"]
                                               or found.count["per_user_limit"]),
        "answers match tickets": not (found.count["mismatch"] or found.count["bad_202"]),
        "no 5xx but 503": not found.count["bad_5xx"],
        # The crowd (and the late buyers) outnumber the stock many times: a sale
        # left unsold means the service stopped answering after the fault.
        # (With a payment timeout, expired holds may put units back at the end.)
        "sold out in the end (service recovered)": bool(pm) or state.remaining == 0,
    }
    if pm:
        checks.update({
            "each ticket ends paid/expired/cancelled/failed": not found.count["unsettled"],
            "units given back once": not found.count["given_back"],
            "paid + live units <= stock": not found.count["paid_le_stock"],
            "expiry hook on every expired ticket, no other": not found.count["expiry_hook"],
            "no payment accepted after pay_by": not (found.count["paid_after_pay_by"]
                                                     or found.count["refused_before_pay_by"]
                                                     or found.count["pay_by"]),
            "payment answers match tickets": not found.count["payment_answers"],
        })
    counts = {
        "attempts": len(orders),
        "2xx": classes["2xx"],
        "4xx": classes["4xx"],
        "5xx": classes["5xx"],
        "no_answer": classes["none"],
        "admitted": len(admitted),
        "unseen": len(admitted - set(seen)),
        "confirmed": ends["confirmed"],
        "compensated": ends["failed"],
        "lost": lost,
        "duplicated": duplicated,
        "oversold": oversold,
        "host_rows": len(state.rows),
        "host_units": host_units,
        "remaining": state.remaining,
        "hook_calls": sum(c.started for c in state.calls.values()),
        "redelivered": sum(1 for c in state.calls.values() if c.attempt > 1),
        **{k: found.count[k] for k in ("compensated_after_write", "compensated_without_cause",
                                      "bad_5xx")},
    }
    if pm:
        counts.update({
            "paid": ends["paid"], "expired": ends["expired"], "cancelled": ends["cancelled"],
            "unsettled": found.count["unsettled"],
            "dead_letters": len(state.dead_letters),
            "expiry_dead_letters": len(state.expiry_dead_letters),
            "expiry_calls": sum(c.expiry_started for c in state.calls.values()),
            "expiry_redelivered": sum(1 for c in state.calls.values() if c.expiry_started > 1),
            **pay_counts,
        })
    return Verdict(counts, checks, dict(found.examples))


def _check_payments(payments: list[Mapping[str, Any]], state: State,
                    found: _Findings) -> dict[str, Any]:
    """The payment rules (see the module docstring); returns the payment counts."""
    timeout = state.payment_timeout_ms
    assert timeout is not None
    for ticket, held in sorted(state.tickets.items()):
        if held.status in ("awaiting_payment", "paid", "expired") and (
                held.pay_by_ms is None or held.admitted_ms is None
                or held.pay_by_ms != held.admitted_ms + timeout):
            found.add("pay_by", f"{ticket}: {held.status}, pay_by {held.pay_by_ms} != "
                                f"admitted {held.admitted_ms} + {timeout} ms")

    by_ticket: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for e in payments:
        by_ticket[str(e.get("ticket"))].append(e)
    outcomes: Counter[str] = Counter()
    unverified = paid_twice = told_paid_units = 0
    closest_paid: int | None = None  # ms between the first accepted payment and pay_by
    closest_late: int | None = None  # ms between pay_by and the end of a too_late call
    for ticket, answers in sorted(by_ticket.items()):
        r = state.tickets.get(ticket)
        decided = [a for a in answers if a.get("status") == 200 and a.get("outcome")]
        paid = [a for a in decided if a["outcome"] == "paid"]
        late = [a for a in decided if a["outcome"] == "too_late"]
        outcomes.update(str(a.get("outcome") or a.get("code") or a.get("error") or "no answer")
                        for a in answers)
        paid_twice += len(paid) > 1
        if any(a.get("status") == 404 for a in answers) and r is not None:
            found.add("payment_answers", f"{ticket}: payment answered 404, Redis holds the "
                                         f"ticket ({r.status})")
        if r is None:
            continue  # a ticket gone from Redis is counted lost above
        if paid and r.status != "cancelled":
            told_paid_units += r.quantity
        if paid and r.status not in ("paid", "cancelled"):
            found.add("payment_answers", f"{ticket}: answered paid, ends {r.status}")
        if late and r.status == "paid":
            found.add("payment_answers", f"{ticket}: answered too_late, ends paid")
        pay_by = r.pay_by_ms
        if pay_by is None and r.admitted_ms is not None:
            pay_by = r.admitted_ms + timeout  # a ticket that never awaited payment
        if pay_by is None:
            continue
        for a in late:
            after = a.get("redis_after_ms")
            if after is None:
                continue
            if after < pay_by:
                found.add("refused_before_pay_by", f"{ticket}: too_late ({a.get('ticket_status')})"
                                                   f" at Redis {after} ms, {pay_by - after} ms "
                                                   "before its pay_by")
            closest_late = after - pay_by if closest_late is None else min(
                closest_late, after - pay_by)
        befores = [a["redis_before_ms"] for a in paid if a.get("redis_before_ms") is not None]
        if not befores:
            continue
        # The call that paid it began at or after the earliest one: sure only
        # when every payment request of the ticket was answered.
        if all(a.get("status") in (200, 404) for a in answers):
            first = min(befores)
            if first >= pay_by:
                found.add("paid_after_pay_by", f"{ticket}: payment accepted, its first call "
                                               f"began at Redis {first} ms, {first - pay_by} ms "
                                               f"after its pay_by {pay_by}")
            closest_paid = pay_by - first if closest_paid is None else min(
                closest_paid, pay_by - first)
        else:
            unverified += 1
    for ticket, held in sorted(state.tickets.items()):
        if held.status == "paid" and ticket not in by_ticket:
            found.add("payment_answers", f"{ticket}: paid, no payment request for it")
    return {
        "payments": len(payments),
        "paid_answers": outcomes["paid"],
        "too_late_answers": outcomes["too_late"],
        "refused_answers": outcomes["refused"],
        "pay_unanswered": len(payments) - sum(outcomes[k] for k in ("paid", "too_late",
                                                                     "refused")),
        "paid_twice": paid_twice,
        "paid_late": found.count["paid_after_pay_by"],
        "pay_unverified": unverified,
        "closest_paid_ms": closest_paid,
        "closest_too_late_ms": closest_late,
        "told_paid_units": told_paid_units,
    }
