"""``queue``: the waiting room: joins and polls per web process, Redis calls per poll, a sale.

Three parts, one throwaway Redis:

1. **Per web process.** The bench app's WSGI callable driven in this process,
   one thread, no HTTP server (so the numbers are the Flask + extension work a
   web process does per request), cases interleaved over ``--rounds`` rounds
   of ``--seconds`` each; every ratio is to the bare view in the same round:
   ``bare`` (``GET /bare``), ``join`` (a new buyer joins a FIFO queue),
   ``poll`` (a waiting buyer polls with its place token), ``poll_ready`` (a
   ready buyer polls: the answer signs a pass), ``poll_no_token`` (a waiting
   buyer polls without it), ``order`` (no queue) and ``order_pass`` (an order
   with a pass).
2. **Redis calls per request** of each case, counted with ``MONITOR``
   (commands scripts run inside Redis are not counted).
3. **A simulated sale**: ``--buyers`` buyers join a queue that opens before
   the sale (``--processes`` web processes, :mod:`benchmarks.queue_proc`),
   ``admit_rate`` ``--admit-rate``; once ready, ``--abandon`` of them never
   come back, the others order at once with their pass. Reports the time
   from the start to the last unit sold (Redis stream ids), polls per buyer
   and Redis calls per poll, and checks that the stock was sold exactly and
   that places were let through in place order (ready times from the passes).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis as redis_lib

from . import common
from .common import Processes, Redis, median, table

CASES = ("bare", "join", "poll", "poll_ready", "poll_no_token", "order", "order_pass")
PREFIX = "/api/flash-sales"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks queue``."""
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (part 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per case per round")
    parser.add_argument("--buyers", type=int, default=20000, help="simulated sale: buyers")
    parser.add_argument("--stock", type=int, default=5000, help="simulated sale: units")
    parser.add_argument("--admit-rate", type=float, default=500, help="buyers let through/s")
    parser.add_argument("--abandon", type=float, default=0.3, help="share who never order")
    parser.add_argument("--fairness", choices=["fifo", "lottery"], default="fifo")
    parser.add_argument("--processes", type=int, default=2, help="simulated web processes")
    parser.add_argument("--seed", type=int, default=1, help="who abandons (reproducible)")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one short round, 4,000 buyers, 1,000 units, 200/s."""
    args.rounds = 1
    args.seconds = 0.5
    args.buyers = 4000
    args.stock = 1000
    args.admit_rate = 200


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the three parts; return the JSON-ready result."""
    result: dict[str, Any] = {
        "benchmark": "queue",
        "machine": common.machine(),
        "settings": {k: getattr(args, k) for k in (
            "rounds", "seconds", "buyers", "stock", "admit_rate", "abandon", "fairness",
            "processes", "seed")},
    }
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            result["per_process"], result["redis_per_request"] = per_process(redis, args)
            joins = result["per_process"]["median_rps"]["join"]
            result["sale"] = simulate(procs, redis, args, joins)
        finally:
            redis.cleanup()
    result["loadavg_at_end"] = common.loadavg()
    return result


# -- part 1 and 2: one web process ---------------------------------------------------


def per_process(redis: Redis, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Requests/s of each case in this process, and Redis commands per request."""
    from .app import create_app
    from .queue_proc import Wsgi

    app = create_app(FLASHSALE_REDIS_URL=redis.url)
    ext = app.extensions["flashsale"].ext
    wsgi = Wsgi(app)
    with app.app_context():
        # Nearly every joiner of "line" waits (1/s); "open" lets everyone through at once.
        ext.create_sale("line", stock=10**9, fairness="fifo", admit_rate=1,
                        per_user_limit=10**6)
        ext.create_sale("open", stock=10**9, fairness="fifo", admit_rate=10**6,
                        per_user_limit=10**6)
        ext.create_sale("plain", stock=10**9, per_user_limit=10**6)
        ready = [ext.join_queue("open", f"p{i}") for i in range(200)]
    passes = [(s.user_id, s.pass_token, s.place_token) for s in ready]
    waiting: list[tuple[str, str]] = []
    counter = [0]

    def request(case: str) -> int:
        n = counter[0] = counter[0] + 1
        if case == "bare":
            return wsgi.call("GET", "/bare", {"X-User": f"u{n % 1000}"})[0]
        if case == "join":
            user = f"j{n}"
            status, headers, _ = wsgi.call("POST", f"{PREFIX}/line/queue", {"X-User": user})
            if len(waiting) < 5000:
                waiting.append((user, headers["FlashSale-Place"]))
            return status
        if case == "poll":
            user, token = waiting[n % len(waiting)]
            return wsgi.call("GET", f"{PREFIX}/line/queue",
                             {"X-User": user, "FlashSale-Place": token})[0]
        if case == "poll_ready":
            user, _, token = passes[n % len(passes)]
            return wsgi.call("GET", f"{PREFIX}/open/queue",
                             {"X-User": user, "FlashSale-Place": token})[0]
        if case == "poll_no_token":
            user, _ = waiting[n % len(waiting)]
            return wsgi.call("GET", f"{PREFIX}/line/queue", {"X-User": user})[0]
        if case == "order":
            return wsgi.call("POST", f"{PREFIX}/plain/order", {"X-User": f"o{n % 1000}"})[0]
        user, token, _ = passes[n % len(passes)]
        return wsgi.call("POST", f"{PREFIX}/open/order",
                         {"X-User": user, "FlashSale-Pass": token})[0]

    expected = {"bare": 200, "join": 200, "poll": 200, "poll_ready": 200,
                "poll_no_token": 200, "order": 202, "order_pass": 202}
    for case in CASES:  # warm up: scripts loaded, connections made, subscriber started
        for _ in range(20):
            status = request(case)
            if status != expected[case]:
                raise SystemExit(f"{case}: HTTP {status}, expected {expected[case]}")
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        rates = {}
        for case in CASES:
            rates[case] = rate_of(lambda c=case: request(c), args.seconds)  # type: ignore[misc]
        rounds.append(rates)
    per = {
        "rounds": rounds,
        "median_rps": {c: median([r[c] for r in rounds]) for c in CASES},
        "x_bare": {c: round(median([r[c] / r["bare"] for r in rounds]), 3) for c in CASES},
    }
    calls = {case: commands_per_request(redis.url, lambda c=case: request(c), 300)  # type: ignore[misc]
             for case in CASES}
    app.extensions["flashsale"].cache.stop()
    return per, calls


def rate_of(fn: Callable[[], int], seconds: float) -> float:
    """Calls of ``fn`` per second over ``seconds``."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def commands_per_request(url: str, fn: Callable[[], int], requests: int) -> float:
    """Redis commands clients sent per call of ``fn``, counted with ``MONITOR``.

    Commands a script runs inside Redis (``client_type`` lua) are not sent by
    a client and are skipped, as are the events subscriber's (``SUBSCRIBE``...).
    """
    watcher = redis_lib.Redis.from_url(url, decode_responses=True)
    marker = redis_lib.Redis.from_url(url, decode_responses=True)
    marker.ping()
    with watcher.monitor() as monitor:
        for _ in range(requests):
            fn()
        marker.echo("queue-bench-marker")
        sent = 0
        while True:
            entry = monitor.next_command()
            command = entry["command"]
            if "queue-bench-marker" in command:
                break
            if entry.get("client_type") == "lua":
                continue
            if command.split(" ", 1)[0].upper() in ("SUBSCRIBE", "PSUBSCRIBE", "PING"):
                continue
            sent += 1
    watcher.close()
    marker.close()
    return round(sent / requests, 4)


# -- part 3: a simulated sale --------------------------------------------------------


def simulate(procs: Processes, redis: Redis, args: argparse.Namespace,
             joins_per_s: float) -> dict[str, Any]:
    """The sale: processes join, poll and order; then the books and the order are checked."""
    from .app import setup_app

    sale = "sale"
    cores = os.cpu_count() or 1
    # Joining must be over before the start: a generous budget from part 1's join rate.
    budget = args.buyers / (max(joins_per_s, 100) * min(args.processes, cores)) * 2 + 2
    argv = [*common.python_argv(), "-m", "benchmarks.queue_proc", "--redis", redis.url,
            "--sale", sale, "--processes", str(args.processes), "--buyers", str(args.buyers),
            "--abandon", str(args.abandon), "--seed", str(args.seed)]
    started = []
    try:
        for i in range(args.processes):
            started.append(procs.start([*argv, "--index", str(i)], cwd=common.ROOT,
                                       env=common.env_for_children(), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE))
        for proc in started:
            common.await_ready(proc, "queue_proc")
        app = setup_app(redis.url)
        now = redis_time(redis.client)
        starts = now + budget
        with app.app_context():
            app.extensions["flashsale"].ext.create_sale(
                sale, stock=args.stock, per_user_limit=1, fairness=args.fairness,
                admit_rate=args.admit_rate, starts_at=starts, queue_opens_at=now - 1)
        evalsha0 = evalsha_calls(redis.client)
        cpu0 = redis.cpu_seconds()
        for proc in started:
            common.send_go(proc)
        parts: list[dict[str, Any]] = []
        box: list[dict[str, Any]] = []

        def read(proc: subprocess.Popen[bytes]) -> None:
            box.append(common.read_result(proc, "queue_proc", budget + 400))

        readers = [threading.Thread(target=read, args=(p,)) for p in started]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        parts = box
        evalsha = evalsha_calls(redis.client) - evalsha0
        redis_cpu = redis.cpu_seconds() - cpu0
    finally:
        for proc in started:
            procs.stop(proc)
    return sale_report(redis, args, sale, starts, parts, evalsha, redis_cpu)


def redis_time(client: Any) -> float:
    """Redis time in Unix seconds."""
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def evalsha_calls(client: Any) -> int:
    """``EVALSHA`` calls so far (``INFO commandstats``; scripts cannot call it)."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def sale_report(redis: Redis, args: argparse.Namespace, sale: str, starts: float,
                parts: list[dict[str, Any]], evalsha: int, redis_cpu: float) -> dict[str, Any]:
    """Facts and checks of the simulated sale."""
    c = redis.client
    entries = c.xrange(f"flashsale:{{{sale}}}:orders")
    served = sorted((p, ready, code) for part in parts for p, ready, code in part["served"])
    admitted = [p for p, _, code in served if code == 202]
    inversions = sum(1 for a, b in itertools.pairwise(served) if b[1] < a[1])
    last_place = max(admitted) if admitted else 0
    refused = sorted([p for p, _, code in served if code != 202]
                     + [p for part in parts for p in part["refused_at_poll"]])
    burst = max(1, int(args.admit_rate))
    # Let through strictly before the buyer of the last unit (the first `burst`
    # places are all let through at the start, together), yet refused.
    ahead_refused = sum(1 for p in refused if max(p, burst) < max(last_place, burst))
    finals: Counter[str] = Counter()
    for part in parts:
        finals.update(part["finals"])
    polls = sum(part["polls"] for part in parts)
    joins = args.buyers
    orders = len(served)
    sold_out_s = (int(entries[-1][0].split("-")[0]) / 1000 - starts) if entries else None
    expected_s = max(0, last_place - burst) / args.admit_rate
    facts = {
        "joins_per_s": joins / max(part["join_seconds"] for part in parts),
        "join_seconds": max(part["join_seconds"] for part in parts),
        "sale_seconds": max(part["poll_seconds"] for part in parts),
        "polls": polls,
        "polls_per_buyer": polls / joins,
        "redis_calls_per_poll": max(0, evalsha - joins - orders) / max(polls, 1),
        "redis_cpu_s": redis_cpu,
        "max_poll_lag_s": max(part["max_lag_s"] for part in parts),
        "finals": dict(finals),
        "stream_entries": len(entries),
        "admitted_http": len(admitted),
        "sold_out_after_s": sold_out_s,
        "last_unit_place": last_place,
        "expected_sold_out_s": expected_s,
        "served_checked": len(served),
        "ready_time_inversions": inversions,
        "staying_buyers_refused_ahead_of_the_last_unit": ahead_refused,
        "abandoned": finals.get("abandoned", 0),
    }
    checks = {
        "admitted == stock": len(admitted) == args.stock == len(entries),
        "let through in place order": inversions == 0 and len(served) > 0,
        "everyone answered": not finals.get("gave_up"),
    }
    return {"facts": facts, "checks": checks, "ok": all(checks.values())}


def report(result: dict[str, Any]) -> str:
    """The tables printed at the end."""
    per = result["per_process"]
    calls = result["redis_per_request"]
    labels = {
        "bare": "bare view (GET /bare)",
        "join": "join (POST queue, new buyer)",
        "poll": "poll, waiting, with place token",
        "poll_ready": "poll, ready (signs the pass)",
        "poll_no_token": "poll without place token",
        "order": "order, sale without a queue",
        "order_pass": "order with a pass",
    }
    rows = [[labels[c], per["median_rps"][c], per["x_bare"][c], f"{calls[c]:.3f}"]
            for c in CASES]
    s = result["settings"]
    lines = [f"one web process, in-process WSGI, 1 thread; median of {s['rounds']} round(s) "
             f"of {s['seconds']} s per case",
             table(["case", "req/s", "x bare", "Redis calls/req"], rows), ""]
    f = result["sale"]["facts"]
    lines.append(f"simulated sale ({s['fairness']}): {s['buyers']:,} buyers in "
                 f"{s['processes']} web processes, {s['stock']:,} units, admit_rate "
                 f"{s['admit_rate']:g}/s, {s['abandon']:.0%} abandon once ready")
    rows = [[f["joins_per_s"], f["polls_per_buyer"], f"{f['redis_calls_per_poll']:.3f}",
             f["sold_out_after_s"], f["expected_sold_out_s"], f["last_unit_place"],
             f["abandoned"], f["ready_time_inversions"],
             "OK" if result["sale"]["ok"] else "FAILED"]]
    lines.append(table(["joins/s", "polls/buyer", "Redis calls/poll", "sold out s",
                        "expected s", "last unit's place", "abandoned", "order inversions",
                        "check"], rows))
    failed = [k for k, v in result["sale"]["checks"].items() if not v]
    lines.append("checks: " + ("all passed: " + ", ".join(result["sale"]["checks"])
                               if not failed else "FAILED: " + ", ".join(failed)))
    lines.append(f"staying buyers let through before the last unit's buyer yet refused: "
                 f"{f['staying_buyers_refused_ahead_of_the_last_unit']} (their poll or order came "
                 f"after the last unit went); final states {f['finals']}; the sale ran "
                 f"{f['sale_seconds']:.1f} s after joining; web process lag up to "
                 f"{f['max_poll_lag_s']:.2f} s; Redis CPU {f['redis_cpu_s']:.2f} s")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
