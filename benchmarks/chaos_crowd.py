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

Every HTTP answer (or its absence) is one JSON line of ``--history`` (the
format :mod:`benchmarks.chaos_check` reads). Prints ``RESULT <json>``:
requests, answers by status and code, wall time, latency percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from .crowd import percentile

#: Seconds a client waits for an answer.
TIMEOUT = 5.0


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


def summary(records: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Requests, answers by ``status:code``, wall time and latency percentiles."""
    statuses = Counter(f"{r['status']}:{r['code'] or r['ticket_status'] or r['error']}"
                       for r in records)
    latencies = sorted(r["ms"] for r in records)
    return {"requests": len(records), "statuses": dict(statuses), "wall_s": round(wall, 2),
            "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                           "max": latencies[-1] if latencies else 0.0}}


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
    args = parser.parse_args()

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
            records += client.attempt(args.sale, buyer, quantity, key, args.retries, rng)
        client.close()
        return records

    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        records = [r for part in pool.map(crowd, range(args.threads)) for r in part]
    wall = time.perf_counter() - started
    with open(args.history, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    print("RESULT " + json.dumps(summary(records, wall)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
