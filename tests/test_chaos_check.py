"""The chaos suite's history checker (``benchmarks/chaos_check.py``), on hand-made histories.

Each test builds a small sale whose end state is right, breaks one thing
the way a fault would, and checks that the checker says so (and counts it
in the right column). The last test runs one real scenario end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chaos_check import Calls, State, TicketState, Verdict, check

from .redis_server import require_redis_binary

ROOT = Path(__file__).resolve().parent.parent
SETTLED = "each ticket settled once"


def answer(buyer: str, status: int | None, *, ticket: str | None = None, code: str | None = None,
           key: str | None = None, quantity: int = 1) -> dict[str, Any]:
    """One history entry, as a crowd records it."""
    return {"buyer": buyer, "key": key, "quantity": quantity, "status": status, "code": code,
            "ticket": ticket, "ticket_status": "queued" if status == 202 else None}


def sold_out(buyer: str) -> dict[str, Any]:
    return answer(buyer, 409, code="sold_out")


def confirmed_sale() -> tuple[list[dict[str, Any]], State]:
    """Three units, three buyers confirmed and written by the host, one buyer turned away."""
    buyers = {"s~a": "alice", "s~b": "bob", "s~c": "carol"}
    history = [answer(user, 202, ticket=t) for t, user in buyers.items()]
    history += [sold_out("dave"), answer("erin", 503, code="backend_unavailable"),
                sold_out("erin")]
    state = State(
        stock=3, remaining=0, per_user_limit=1, max_attempts=5,
        tickets={t: TicketState(user, 1, "confirmed") for t, user in buyers.items()},
        users={user: 1 for user in buyers.values()},
        dead_letters=[], backlog=0,
        rows={t: (user, 1) for t, user in buyers.items()},
        calls={t: Calls(started=1, returned=1) for t in buyers},
    )
    return history, state


def resold_sale(*, row: bool, calls: Calls, dead_letters: int = 1) -> tuple[
        list[dict[str, Any]], State]:
    """Alice's order was compensated after ``calls`` (the host wrote its row if
    ``row``; ``dead_letters`` of it), and her unit sold again to a late buyer."""
    history, state = confirmed_sale()
    history.append(answer("late", 202, ticket="s~late"))
    tickets = {**state.tickets, "s~a": TicketState("alice", 1, "failed"),
               "s~late": TicketState("late", 1, "confirmed")}
    users = {u: n for u, n in state.users.items() if u != "alice"} | {"late": 1}
    rows = {t: r for t, r in state.rows.items() if row or t != "s~a"} | {"s~late": ("late", 1)}
    return history, replace(state, tickets=tickets, users=users, rows=rows,
                            dead_letters=["s~a"] * dead_letters,
                            calls={**state.calls, "s~a": calls, "s~late": Calls(1, 1)})


def failed(verdict: Verdict) -> list[str]:
    return verdict.failed()


def test_a_sale_that_ended_right_passes() -> None:
    history, state = confirmed_sale()
    verdict = check(history, state)
    assert failed(verdict) == []
    c = verdict.counts
    assert (c["attempts"], c["2xx"], c["4xx"], c["5xx"]) == (6, 3, 2, 1)
    assert (c["admitted"], c["confirmed"], c["lost"], c["duplicated"], c["oversold"]) == (
        3, 3, 0, 0, 0)


def test_a_202_for_a_ticket_redis_does_not_hold_is_lost() -> None:
    history, state = confirmed_sale()
    history.append(answer("dave", 202, ticket="s~d"))
    verdict = check(history, replace(state, stock=4, remaining=0))
    assert verdict.counts["lost"] == 1
    assert SETTLED in failed(verdict)


def test_an_order_still_queued_after_the_drain_is_lost() -> None:
    history, state = confirmed_sale()
    tickets = {**state.tickets, "s~c": TicketState("carol", 1, "queued")}
    rows = {t: r for t, r in state.rows.items() if t != "s~c"}
    verdict = check(history, replace(state, tickets=tickets, rows=rows, backlog=1))
    assert verdict.counts["lost"] == 1
    assert failed(verdict) == [SETTLED]


def test_a_confirmed_order_the_host_never_wrote_is_lost() -> None:
    history, state = confirmed_sale()
    rows = {t: r for t, r in state.rows.items() if t != "s~b"}
    verdict = check(history, replace(state, rows=rows))
    assert verdict.counts["lost"] == 1
    assert set(failed(verdict)) == {SETTLED, "host rows == confirmed"}


@pytest.mark.parametrize("calls", [Calls(started=5, raised=5), Calls(started=5)],
                         ids=["hook raised 5 times", "worker died on it 5 times"])
def test_an_order_compensated_after_max_attempts_failures_is_fine(calls: Calls) -> None:
    verdict = check(*resold_sale(row=False, calls=calls))
    assert failed(verdict) == []
    assert (verdict.counts["compensated"], verdict.counts["lost"]) == (1, 0)


def test_compensating_an_order_whose_hook_returned_duplicates_and_oversells() -> None:
    # Issue 10, item 1: the hook wrote the row, the order was compensated
    # anyway, and its unit was sold again: the host holds stock + 1 units.
    verdict = check(*resold_sale(row=True, calls=Calls(started=6, returned=6)))
    assert (verdict.counts["duplicated"], verdict.counts["oversold"]) == (1, 1)
    assert set(failed(verdict)) == {SETTLED, "host rows == confirmed", "host units <= stock"}


def test_compensating_an_order_whose_hook_never_failed_loses_it() -> None:
    # Issue 10, item 1: a batch-mate of a poison order, compensated without
    # its hook ever being called.
    verdict = check(*resold_sale(row=False, calls=Calls()))
    assert verdict.counts["lost"] == 1
    assert failed(verdict) == [SETTLED]


def test_a_ticket_compensated_twice_fails() -> None:
    verdict = check(*resold_sale(row=False, calls=Calls(started=5, raised=5), dead_letters=2))
    assert verdict.counts["duplicated"] == 1
    assert failed(verdict) == [SETTLED]


def test_stock_given_back_without_a_failed_ticket_breaks_the_balance() -> None:
    history, state = confirmed_sale()
    verdict = check(history, replace(state, remaining=1))
    assert failed(verdict) == ["remaining + live == stock"]


def test_more_units_admitted_than_stock_is_oversold() -> None:
    history, state = confirmed_sale()
    history.append(answer("dave", 202, ticket="s~d"))
    tickets = {**state.tickets, "s~d": TicketState("dave", 1, "confirmed")}
    state = replace(state, tickets=tickets, users={**state.users, "dave": 1},
                    rows={**state.rows, "s~d": ("dave", 1)}, remaining=-1)
    verdict = check(history, state)
    assert verdict.counts["oversold"] == 1
    assert {"admitted <= stock", "host units <= stock"} <= set(failed(verdict))


def test_a_second_ticket_for_one_idempotency_key_is_duplicated() -> None:
    # Issue 10, item 2: the same key from the same buyer admitted twice.
    history, state = confirmed_sale()
    history[0]["key"] = "k1"
    history.append(answer("alice", 202, ticket="s~a2", key="k1"))
    tickets = {**state.tickets, "s~a2": TicketState("alice", 1, "confirmed")}
    state = replace(state, stock=4, tickets=tickets, users={**state.users, "alice": 2},
                    rows={**state.rows, "s~a2": ("alice", 1)})
    verdict = check(history, state)
    assert verdict.counts["duplicated"] == 1
    assert "one ticket per key, limit kept" in failed(verdict)


def test_a_ticket_no_client_saw_still_counts_as_admitted() -> None:
    # The answer was lost (503 or a reset connection) but Redis admitted it.
    history, state = confirmed_sale()
    history = [e for e in history if e.get("ticket") != "s~c"]
    history.append(answer("carol", None))
    verdict = check(history, state)
    assert failed(verdict) == []
    assert (verdict.counts["admitted"], verdict.counts["unseen"]) == (3, 1)


def test_a_500_fails_the_run_but_a_503_backend_unavailable_does_not() -> None:
    history, state = confirmed_sale()
    assert failed(check(history, state)) == []
    history.append(answer("frank", 500, code="internal_error"))
    assert failed(check(history, state)) == ["no 5xx but 503"]


@pytest.mark.slow
@pytest.mark.skipif(not require_redis_binary() or shutil.which("gunicorn") is None,
                    reason="redis-server and gunicorn are needed")
def test_the_chaos_baseline_runs_end_to_end_and_holds(tmp_path: Path) -> None:
    """Smoke run of the harness: one scenario, small, SQLite, every answer recorded and checked."""
    out = tmp_path / "chaos.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "chaos", "--scenarios", "baseline", "--sqlite",
         "--stock", "50", "--attempts", "600", "--buyers", "300", "--threads", "4",
         "--drain-timeout", "30", "--max-crowd-seconds", "30",
         "--history-dir", str(tmp_path / "history"), "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["host_db"].startswith("sqlite")
    (baseline,) = result["scenarios"]
    counts = baseline["verdict"]["counts"]
    recorded = sum(len(p.read_text().splitlines())
                   for p in (tmp_path / "history").glob("baseline.*.jsonl"))
    assert counts["attempts"] == recorded >= 600
    assert counts["confirmed"] == counts["admitted"] > 0
    assert counts["host_units"] == 50
    assert baseline["verdict"]["ok"], baseline["verdict"]
