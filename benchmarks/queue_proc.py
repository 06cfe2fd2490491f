"""One web process of the ``queue`` benchmark's simulated sale: ``python -m benchmarks.queue_proc``.

Builds the bench app (:mod:`benchmarks.app`) and plays its share of the
buyers (``b<i>`` for ``i = --index, --index + --processes, ...``) through the
app's WSGI callable, in this one thread: what one web process serving them
would do, without the HTTP server. Prints ``READY`` and waits for ``GO``, then:

1. every buyer joins the queue (``POST <prefix>/<sale>/queue``) as fast as the
   process can answer;
2. each buyer polls (``GET ... /queue`` with its ``FlashSale-Place`` token)
   when the last answer's ``poll_after`` says; once ``ready``, a buyer who
   abandons (``--abandon`` of them, chosen by a seeded draw) is never seen
   again, the others order at once with their pass; ``sold_out``, ``ended``
   and ``expired`` end a buyer.

Prints ``RESULT <json>``: join time, polls, final statuses, and for each
buyer who ordered its place, the ready time from its pass (``pass_expires_at``
minus the pass lifetime) and the order's HTTP status.
"""

from __future__ import annotations

import argparse
import heapq
import io
import json
import random
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Any

from werkzeug.test import EnvironBuilder

PREFIX = "/api/flash-sales"


class Wsgi:
    """Calls a WSGI app in process: one request = one environ, no socket, no server."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.base = EnvironBuilder(path="/", base_url="http://localhost").get_environ()

    def call(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                             bytes]:
        """``(status, response headers, body)`` of one request."""
        env = dict(self.base)
        env["REQUEST_METHOD"] = method
        env["PATH_INFO"] = path
        env["wsgi.input"] = io.BytesIO()
        for key, value in headers.items():
            env["HTTP_" + key.upper().replace("-", "_")] = value
        seen: list[Any] = []

        def start_response(status: str, hdrs: list[tuple[str, str]], exc: Any = None) -> None:
            seen.append((status, hdrs))

        result = self.app(env, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, hdrs = seen[0]
        return int(status[:3]), dict(hdrs), body


def abandons(seed: int, buyer: str, share: float) -> bool:
    """Whether ``buyer`` never comes back once ready (a seeded, reproducible draw)."""
    return random.Random(f"{seed}:{buyer}").random() < share


def main() -> int:
    """Play one process's buyers; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--sale", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--buyers", type=int, required=True)
    parser.add_argument("--abandon", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pass-ttl", type=float, default=120.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    from .app import create_app

    app = create_app(FLASHSALE_REDIS_URL=args.redis, FLASHSALE_PASS_TTL=args.pass_ttl)
    wsgi = Wsgi(app)
    mine = [f"b{i}" for i in range(args.index, args.buyers, args.processes)]
    leaving = {b for b in mine if abandons(args.seed, b, args.abandon)}
    queue = f"{PREFIX}/{args.sale}/queue"
    wsgi.call("GET", "/bare", {"X-User": "warm-up"})
    print("READY", flush=True)
    sys.stdin.readline()

    tokens: dict[str, str] = {}
    positions: dict[str, int] = {}
    due: list[tuple[float, str]] = []
    finals: Counter[str] = Counter()
    served: list[tuple[int, int, int]] = []  # (place, ready ms, order HTTP status)
    refused_at_poll: list[int] = []  # places of staying buyers told sold_out before ordering

    def answer(buyer: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """Act on one queue answer: poll again later, order, or stop."""
        doc = json.loads(body)
        tokens[buyer] = headers.get("FlashSale-Place", tokens.get(buyer, ""))
        state = doc["status"] if status == 200 else f"http_{status}"
        if state == "waiting":
            heapq.heappush(due, (time.perf_counter() + doc["poll_after"], buyer))
        elif state == "ready" and buyer in leaving:
            finals["abandoned"] += 1
        elif state == "ready":
            expires = datetime.fromisoformat(doc["pass_expires_at"]).timestamp() * 1000
            code, _, _ = wsgi.call("POST", f"{PREFIX}/{args.sale}/order",
                                   {"X-User": buyer, "FlashSale-Pass": doc["pass"]})
            served.append((positions[buyer], round(expires - args.pass_ttl * 1000), code))
            finals[f"ordered_{code}"] += 1
        else:
            if state == "sold_out" and buyer not in leaving:
                refused_at_poll.append(positions[buyer])
            finals[state] += 1

    started = time.perf_counter()
    for buyer in mine:
        status, headers, body = wsgi.call("POST", queue, {"X-User": buyer})
        if status != 200:
            raise SystemExit(f"join of {buyer}: {status} {body[:200]!r}")
        positions[buyer] = json.loads(body)["position"]
        answer(buyer, status, headers, body)
    joined = time.perf_counter()

    polls = 0
    lag = 0.0
    deadline = joined + args.max_seconds
    while due:
        at, buyer = heapq.heappop(due)
        now = time.perf_counter()
        if at > now:
            time.sleep(at - now)
        else:
            lag = max(lag, now - at)
        if now > deadline:
            finals["gave_up"] += 1 + len(due)
            break
        status, headers, body = wsgi.call(
            "GET", queue, {"X-User": buyer, "FlashSale-Place": tokens[buyer]})
        polls += 1
        answer(buyer, status, headers, body)
    ended = time.perf_counter()
    out = {
        "buyers": len(mine),
        "abandoning": len(leaving),
        "join_seconds": joined - started,
        "poll_seconds": ended - joined,
        "polls": polls,
        "max_lag_s": lag,
        "finals": dict(finals),
        "served": served,
        "refused_at_poll": refused_at_poll,
    }
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
