"""Buyers over HTTP for the chaos suite: ``python -m benchmarks.chaos_crowd``.

Prints ``READY``, waits for a line on stdin, then ``--threads`` threads, each
with its own keep-alive connection, make ``--count`` order attempts in all on
``--sale``. Each attempt is one of ``--buyers`` buyers
(shared by every crowd process, so buyers come back and hit their limit),
asks for 1 unit (2 one time in five), and sends an ``Idempotency-Key`` with
probability ``--key-share``. An attempt answered ``503`` or not answered at
all (timeout, connection reset) is retried up to ``--retries`` times, with
the same key if it had one, as a browser's retry would. No attempt starts
after ``--max-seconds``.

With ``--pay-share`` (a sale with a payment timeout, ``--payment-timeout``
seconds), the crowd also pays that share of the tickets it was admitted with,
through the chaos app's ``POST /chaos/pay/<ticket_id>`` (which calls
``mark_paid``), from ``--pay-threads`` threads working a schedule:

* most are paid once, at a random moment in the first half of the timeout
  (often while the order is still queued: the webhook beats the worker);
* ``--twice-share`` of them are paid twice, as a webhook delivered twice:
  both deliveries at once, or the second one later, up to past ``pay_by``;
* ``--late-share`` of them are paid around the deadline, from 0.25 s before
  the client sent the order + the timeout to 1 s after it, so some land just
  before ``pay_by``, most after it (``PaymentTooLate``).

A payment answered ``503`` or not at all is delivered again after 0.25, 0.5,
1 and 2 s, as a provider retries a webhook. The other tickets are left to
expire. The crowd waits for its last payment before it reports.

Every HTTP answer (or its absence) is one JSON line of ``--history`` (the
format :mod:`benchmarks.chaos_check` reads; payments have ``"op": "pay"``).
Prints ``RESULT <json>``: requests, answers by status and code, wall time,
latency percentiles (orders only), and the payments' answers.
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import itertools
import json
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

from .crowd import percentile

#: Seconds a client waits for an answer.
TIMEOUT = 5.0
#: Seconds before each new delivery of a payment answered 503 or not at all.
PAY_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)


class Client:
    """One buyer-side HTTP connection to the order endpoint; reconnects after an error."""

    def __init__(self, base: str, prefix: str = "/api/flash-sales", timeout: float = TIMEOUT):
        url = urlsplit(base)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.prefix = prefix
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def order(self, sale: str, buyer: str, quantity: int = 1,
              key: str | None = None) -> dict[str, Any]:
        """POST one order; return its history record (see :mod:`benchmarks.chaos_check`)."""
        headers = {"X-User": buyer, "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        record: dict[str, Any] = {"buyer": buyer, "key": key, "quantity": quantity,
                                  "status": None, "code": None, "ticket": None,
                                  "ticket_status": None, "error": None}
        started = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
            self._conn.request("POST", f"{self.prefix}/{sale}/order",
                               body=json.dumps({"quantity": quantity}), headers=headers)
            response = self._conn.getresponse()
            raw = response.read()
            if response.will_close:
                self.close()
            record["status"] = response.status
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"code": "non-json body"}
            if isinstance(body, dict):
                record["code"] = body.get("code")
                if response.status == 202:
                    record["ticket"] = body.get("ticket_id")
                    record["ticket_status"] = body.get("status")
        except (OSError, http.client.HTTPException) as exc:
            record["error"] = type(exc).__name__
            self.close()
        done = time.perf_counter()
        record["at"] = round(started, 4)  # time.perf_counter(): one clock for every process
        record["ms"] = round((done - started) * 1000, 2)
        return record

    def pay(self, ticket: str, buyer: str, kind: str) -> dict[str, Any]:
        """POST one payment of ``ticket`` to the chaos app; return its history record."""
        record: dict[str, Any] = {"op": "pay", "ticket": ticket, "buyer": buyer, "kind": kind,
                                  "status": None, "code": None, "outcome": None,
                                  "ticket_status": None, "pay_by_ms": None,
                                  "redis_before_ms": None, "redis_after_ms": None, "error": None}
        started = time.perf_counter()
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
            self._conn.request("POST", f"/chaos/pay/{quote(ticket, safe='')}",
                               headers={"X-User": buyer})
            response = self._conn.getresponse()
            raw = response.read()
            if response.will_close:
                self.close()
            record["status"] = response.status
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"code": "non-json body"}
            if isinstance(body, dict):
                record["code"] = body.get("code")
                for name in ("outcome", "ticket_status", "pay_by_ms", "redis_before_ms",
                             "redis_after_ms"):
                    record[name] = body.get(name)
        except (OSError, http.client.HTTPException) as exc:
            record["error"] = type(exc).__name__
            self.close()
        done = time.perf_counter()
        record["at"] = round(started, 4)
        record["ms"] = round((done - started) * 1000, 2)
        return record

    def pay_retrying(self, ticket: str, buyer: str, kind: str) -> list[dict[str, Any]]:
        """One delivery of a payment, again after a ``503`` or no answer. All its records."""
        records = [self.pay(ticket, buyer, kind)]
        for delay in PAY_RETRY_DELAYS:
            if records[-1]["status"] not in (None, 503):
                break
            time.sleep(delay)
            records.append(self.pay(ticket, buyer, kind))
        return records

    def attempt(self, sale: str, buyer: str, quantity: int, key: str | None,
                retries: int, rng: random.Random) -> list[dict[str, Any]]:
        """One purchase: an order, retried after a ``503`` or no answer. All its records."""
        records = [self.order(sale, buyer, quantity, key)]
        while retries and records[-1]["status"] in (None, 503):
            retries -= 1
            time.sleep(rng.uniform(0.05, 0.2))
            records.append(self.order(sale, buyer, quantity, key))
        return records

    def close(self) -> None:
        """Drop the connection (the next order opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Payer:
    """Pays some of the tickets a crowd is admitted with, each at its scheduled moment.

    :meth:`admitted` decides, for a ticket seen for the first time, whether
    and when it is paid (see the module docstring); ``threads`` threads, each
    with its own connection, make the payments when they are due.
    """

    def __init__(self, base: str, *, timeout: float, share: float, twice: float, late: float,
                 threads: int, seed: str) -> None:
        self.timeout = timeout
        self.share = share
        self.twice = twice
        self.late = late
        self.rng = random.Random(seed)
        self.records: list[dict[str, Any]] = []
        self._due: list[tuple[float, int, str, str, str]] = []  # (when, n, ticket, buyer, kind)
        self._seen: set[str] = set()
        self._order = itertools.count()  # ties in the schedule: first pushed, first paid
        self._closing = False
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._work, args=(Client(base),), daemon=True,
                                          name=f"payer{i}") for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def admitted(self, record: dict[str, Any]) -> None:
        """A ``202`` answer: decide once per ticket whether, how and when to pay it."""
        ticket, buyer = record["ticket"], record["buyer"]
        with self._cond:
            if not ticket or ticket in self._seen:
                return
            self._seen.add(ticket)
            rng = self.rng
            if rng.random() >= self.share:
                return  # left to expire
            sent = float(record["at"])
            if rng.random() < self.late:
                self._push(sent + self.timeout + rng.uniform(-0.25, 1.0), ticket, buyer, "late")
                return
            when = sent + rng.uniform(0, self.timeout / 2)
            if rng.random() < self.twice:
                self._push(when, ticket, buyer, "twice")
                again = when if rng.random() < 0.5 else when + rng.uniform(0, self.timeout + 1)
                self._push(again, ticket, buyer, "twice")
            else:
                self._push(when, ticket, buyer, "once")

    def _push(self, when: float, ticket: str, buyer: str, kind: str) -> None:
        heapq.heappush(self._due, (when, next(self._order), ticket, buyer, kind))
        self._cond.notify()

    def _work(self, client: Client) -> None:
        while True:
            with self._cond:
                while True:
                    if self._due and self._due[0][0] <= time.perf_counter():
                        _, _, ticket, buyer, kind = heapq.heappop(self._due)
                        break
                    if self._closing and not self._due:
                        client.close()
                        return
                    wait = self._due[0][0] - time.perf_counter() if self._due else None
                    self._cond.wait(wait)
            records = client.pay_retrying(ticket, buyer, kind)
            with self._cond:
                self.records += records

    def finish(self, limit: float) -> list[dict[str, Any]]:
        """Make every payment still scheduled (for at most ``limit`` s), then stop;
        return the payments' records."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.perf_counter() + limit
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.perf_counter()))
        with self._cond:
            return list(self.records)


def summary(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Requests, answers by ``status:code``, wall time and latency percentiles; payments."""
    orders = [r for r in records if r.get("op") != "pay"]
    statuses = Counter(f"{r['status']}:{r['code'] or r['ticket_status'] or r['error']}"
                       for r in orders)
    payments = Counter(f"{r['status']}:{r['outcome'] or r['code'] or r['error']}"
                       for r in records if r.get("op") == "pay")
    latencies = sorted(r["ms"] for r in orders)
    return {"requests": len(orders), "statuses": dict(statuses), "wall_s": round(wall, 2),
            "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                           "max": latencies[-1] if latencies else 0.0},
            "payments": dict(payments)}


def main() -> int:
    """Run one crowd; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the server, http://127.0.0.1:PORT")
    parser.add_argument("--sale", required=True)
    parser.add_argument("--count", type=int, required=True, help="attempts (all threads)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--buyers", type=int, default=8000, help="size of the buyer pool")
    parser.add_argument("--key-share", type=float, default=0.4)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="no new attempt after this long (bounds a run against a dead server)")
    parser.add_argument("--history", required=True, help="JSON lines file to write")
    parser.add_argument("--pay-share", type=float, default=0.0,
                        help="share of the admitted tickets paid (0: none, no payer)")
    parser.add_argument("--payment-timeout", type=float, default=0.0,
                        help="the sale's payment timeout (s), to pay late on purpose")
    parser.add_argument("--twice-share", type=float, default=0.2,
                        help="share of the paid tickets whose payment is delivered twice")
    parser.add_argument("--late-share", type=float, default=0.15,
                        help="share of the paid tickets paid around or after pay_by")
    parser.add_argument("--pay-threads", type=int, default=4)
    args = parser.parse_args()
    payer = Payer(args.url, timeout=args.payment_timeout, share=args.pay_share,
                  twice=args.twice_share, late=args.late_share, threads=args.pay_threads,
                  seed=f"pay-{args.seed}") if args.pay_share > 0 else None

    per_thread = [args.count // args.threads + (i < args.count % args.threads)
                  for i in range(args.threads)]

    def crowd(index: int) -> list[dict[str, Any]]:
        rng = random.Random(f"{args.seed}-{index}")
        client = Client(args.url)
        records: list[dict[str, Any]] = []
        for n in range(per_thread[index]):
            if time.perf_counter() - started > args.max_seconds:
                break
            buyer = f"b{rng.randrange(args.buyers)}"
            quantity = 2 if rng.random() < 0.2 else 1
            key = f"k{args.seed}-{index}-{n}" if rng.random() < args.key_share else None
            answers = client.attempt(args.sale, buyer, quantity, key, args.retries, rng)
            records += answers
            if payer is not None:
                for answer in answers:
                    if answer["status"] == 202:
                        payer.admitted(answer)
        client.close()
        return records

    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        records = [r for part in pool.map(crowd, range(args.threads)) for r in part]
    wall = time.perf_counter() - started
    if payer is not None:
        # The last payment is due 1.5 x timeout + 1 s after its order (a second
        # delivery); the bound leaves room for a backlog and retries.
        records += payer.finish(1.5 * args.payment_timeout + 1 + 60)
    with open(args.history, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    print("RESULT " + json.dumps(summary(records, wall)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
