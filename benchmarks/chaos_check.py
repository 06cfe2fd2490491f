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
    #: ``queued``, ``confirmed``, ``failed`` or ``cancelled``.
    status: str


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


@dataclass
class Verdict:
    """The outcome of :func:`check`: counts, one bool per check, and examples of what failed."""

    counts: dict[str, int]
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


def check(history: Iterable[Mapping[str, Any]], state: State) -> Verdict:
    """Judge one scenario; see the module docstring for what each count means."""
    history = list(history)
    found = _Findings()
    classes = Counter(answer_class(e) for e in history)

    # What the clients were told.
    seen: dict[str, Mapping[str, Any]] = {}
    by_key: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in history:
        status = e.get("status")
        if status is not None and status >= 500 and not (
            status == 503 and e.get("code") == "backend_unavailable"
        ):
            found.add("bad_5xx", f"{status} {e.get('code')!r} for {e.get('buyer')}")
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
    lost = confirmed = compensated = 0
    admitted_units = compensated_units = 0
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
        if told is not None and (told.get("buyer") != r.user
                                 or int(told.get("quantity", r.quantity)) != r.quantity):
            found.add("mismatch", f"{ticket}: told {told.get('buyer')} x{told.get('quantity')},"
                                  f" Redis holds {r.user} x{r.quantity}")
        calls = state.calls.get(ticket, Calls())
        if r.status in ("queued", "confirmed"):
            live[r.user] += r.quantity
        if r.status == "queued":
            lost += 1
            found.add("lost", f"{ticket}: still queued after the drain")
        elif r.status == "confirmed":
            confirmed += 1
            if ticket not in state.rows:
                lost += 1
                found.add("lost", f"{ticket}: confirmed in Redis, no row in the host")
        elif r.status == "failed":
            compensated += 1
            compensated_units += r.quantity
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
        else:
            found.add("unexpected_status", f"{ticket}: status {r.status!r}")
    for ticket in dead:
        if ticket not in state.tickets or state.tickets[ticket].status != "failed":
            found.add("compensated_once", f"{ticket}: dead letter for a ticket that is not failed")

    # The host's side.
    for order_id, (user, _units) in sorted(state.rows.items()):
        r = state.tickets.get(order_id)
        if r is None:
            duplicated += 1
            found.add("host_rows", f"{order_id}: host row for {user}, no ticket in Redis")
        elif r.status != "confirmed" and r.status != "failed":  # failed: counted above
            found.add("host_rows", f"{order_id}: host row, ticket {r.status}")
    rows_confirmed = {t for t, r in state.tickets.items() if r.status == "confirmed"}
    if set(state.rows) != rows_confirmed:
        found.add("host_rows", f"{len(state.rows)} host rows, {len(rows_confirmed)} confirmed "
                               f"tickets, {len(set(state.rows) ^ rows_confirmed)} differ", 0)
    host_units = sum(units for _, units in state.rows.values())

    # Stock.
    net = admitted_units - compensated_units
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

    checks = {
        "admitted <= stock": not found.count["admitted_le_stock"],
        "each ticket settled once": not (found.count["lost"] or found.count["compensated_once"]
                                         or found.count["compensated_after_write"]
                                         or found.count["compensated_without_cause"]
                                         or found.count["unexpected_status"]
                                         or state.backlog),
        "host rows == confirmed": not found.count["host_rows"] and set(state.rows)
        == rows_confirmed,
        "host units <= stock": not found.count["host_units_le_stock"],
        "remaining + live == stock": not found.count["stock_balance"],
        "one ticket per key, limit kept": not (found.count["idempotency"]
                                               or found.count["per_user_limit"]),
        "answers match tickets": not (found.count["mismatch"] or found.count["bad_202"]),
        "no 5xx but 503": not found.count["bad_5xx"],
    }
    counts = {
        "attempts": len(history),
        "2xx": classes["2xx"],
        "4xx": classes["4xx"],
        "5xx": classes["5xx"],
        "no_answer": classes["none"],
        "admitted": len(admitted),
        "unseen": len(admitted - set(seen)),
        "confirmed": confirmed,
        "compensated": compensated,
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
    return Verdict(counts, checks, dict(found.examples))
