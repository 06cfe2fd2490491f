"""``sellout``: a realistic spike: 1,000 units, 20,000 buyers arriving at once.

The bench app under gunicorn (same settings as ``http``), one sale, and wrk
with ``--connections`` open connections sending exactly ``--buyers`` order
attempts, each from a different buyer, as fast as the server answers.
Reports the time from the first request to the last unit sold (from the
orders stream's entry ids, which are Redis timestamps), the time to answer
every buyer, admitted/rejected counts, latency, and a correctness check:
admitted == stock, every admission in the stream, the ticket table and the
per-buyer counts, nobody twice, and (when the worker exists) every order
handed to the hook exactly once, none lost.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path
from typing import Any

from . import common, hooks
from .common import NotAvailable, Processes, Redis, table

SALE = "spike"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks sellout``."""
    parser.add_argument("--stock", type=int, default=1000)
    parser.add_argument("--buyers", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=256, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="upper bound on the spike (wrk duration)")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: 200 units, 4,000 buyers."""
    args.stock = 200
    args.buyers = 4000


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the spike; return the JSON-ready result."""
    if args.buyers % args.wrk_threads:
        raise SystemExit("--buyers must be a multiple of --wrk-threads")
    result: dict[str, Any] = {
        "benchmark": "sellout",
        "machine": common.machine(),
        "settings": {
            "stock": args.stock, "buyers": args.buyers,
            "server": f"gunicorn {args.worker_class}, {args.workers} workers x "
                      f"{args.threads} threads, benchmarks.app:create_app()",
            "load": f"wrk -t{args.wrk_threads} -c{args.connections}, one attempt per buyer",
        },
    }
    with Processes() as procs, tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            from .app import setup_app

            app = setup_app(redis.url)
            with app.app_context():
                app.extensions["flashsale"].ext.create_sale(
                    SALE, stock=args.stock, price="19.99", per_user_limit=1)
            master, base = common.start_gunicorn(
                procs, redis_url=redis.url, workers=args.workers,
                worker_class=args.worker_class, threads=args.threads,
                log=Path(tmp) / "gunicorn.log",
                worker_connections=-(-args.connections // args.workers))
            common.run_wrk(base, method="GET", path="/bare", nonce="warm", duration=1,
                           connections=min(args.connections, 32), threads=1)
            workers = common.children(master.pid)
            seconds, micros = redis.client.time()
            start_ms = seconds * 1000 + micros // 1000
            cpu0 = redis.cpu_seconds()
            data = common.run_wrk(
                base, method="POST", path=f"/api/flash-sales/{SALE}/order",
                nonce=f"b{uuid.uuid4().hex[:6]}", duration=args.max_seconds,
                connections=args.connections, threads=args.wrk_threads,
                quota=args.buyers // args.wrk_threads, timeout=30)
            result["redis_cpu_s"] = redis.cpu_seconds() - cpu0
            result["wrk"] = data
            result["timing"] = timing(redis, start_ms, data)
            result["web_rss_kib"] = [common.rss_kib(p) for p in workers]
            result["check"] = check(redis, args, data)
            result["worker_check"] = worker_check(procs, redis, args, Path(tmp))
        finally:
            redis.cleanup()
    result["loadavg_at_end"] = common.loadavg()
    return result


def timing(redis: Redis, start_ms: int, data: dict[str, Any]) -> dict[str, Any]:
    """Time to the first and the last unit sold (stream ids are Redis ms timestamps)."""
    stream = f"flashsale:{{{SALE}}}:orders"
    first = redis.client.xrange(stream, count=1)
    last = redis.client.xrevrange(stream, count=1)

    def ms(entries: list[Any]) -> int | None:
        return int(entries[0][0].split("-")[0]) - start_ms if entries else None

    return {
        "first_sale_ms": ms(first),
        "sold_out_ms": ms(last),
        "all_answered_ms": data["duration_us"] / 1000,
        "buyers_per_s": sum(v for k, v in data["statuses"].items() if k != "200")
        / (data["duration_us"] / 1e6),
    }


def check(redis: Redis, args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """Admitted == stock everywhere, no buyer twice, every buyer answered."""
    c = redis.client
    base = f"flashsale:{{{SALE}}}:"
    statuses = data["statuses"]
    admitted = statuses.get("202", 0)
    sold_out = statuses.get("409:sold_out", 0)
    other = {k: v for k, v in statuses.items() if k not in ("202", "409:sold_out", "200")}
    socket_errors = sum(v for k, v in data["errors"].items() if k != "status")
    entries = c.xrange(base + "orders")
    stream_users = [fields["u"] for _, fields in entries]
    users = c.hgetall(base + "users")
    tickets = sum(1 for _ in c.scan_iter(match=base + "t:*", count=1000))
    remaining = int(c.hget(base + "sale", "remaining") or -1)
    facts = {
        "admitted_http": admitted,
        "rejected_sold_out_http": sold_out,
        "other_outcomes": other,
        "socket_errors": socket_errors,
        "stream_entries": len(entries),
        "distinct_buyers_in_stream": len(set(stream_users)),
        "users_hash_sum": sum(int(v) for v in users.values()),
        "tickets": tickets,
        "remaining": remaining,
    }
    checks = {
        "admitted == stock": admitted == args.stock,
        "every buyer answered": admitted + sold_out == args.buyers and not other
        and not socket_errors,
        "stream == stock": len(entries) == args.stock,
        "no buyer twice": len(set(stream_users)) == len(stream_users),
        "per-buyer counts == stock": facts["users_hash_sum"] == args.stock,
        "tickets == stock": tickets == args.stock,
        "remaining == 0": remaining == 0,
    }
    return {"facts": facts, "checks": checks, "ok": all(checks.values())}


def worker_check(procs: Processes, redis: Redis, args: argparse.Namespace,
                 tmp: Path) -> dict[str, Any]:
    """Drain the sale with one worker into SQLite: every order once, none lost."""
    from .worker_bench import drain, queue_state

    spec = f"sqlite:{tmp / 'sellout.sqlite3'}"
    hooks.prepare_table(spec)
    try:
        data = drain(procs, redis, spec, 1, 1)
    except NotAvailable as exc:
        return {"unavailable": str(exc)}
    rows = hooks.count_rows(spec)
    state = queue_state(redis, SALE)
    return {
        "orders_per_s": data["orders_per_s"],
        "hook_calls": data["handled"],
        "rows": rows,
        "tickets": state["tickets"],
        "ok": rows == args.stock and state["tickets"].get("confirmed", 0) == args.stock,
    }


def report(result: dict[str, Any]) -> str:
    """The compact summary printed at the end."""
    t = result["timing"]
    lat = result["wrk"]["latency_us"]
    facts = result["check"]["facts"]
    rows = [[f"{result['settings']['stock']:,} units, {result['settings']['buyers']:,} buyers",
             t["first_sale_ms"], t["sold_out_ms"], t["all_answered_ms"], t["buyers_per_s"],
             facts["admitted_http"], facts["rejected_sold_out_http"],
             lat["p50"] / 1000, lat["p99"] / 1000, lat["max"] / 1000,
             "OK" if result["check"]["ok"] else "FAILED"]]
    lines = [table(["spike", "1st sale ms", "sold out ms", "all answered ms", "buyers/s",
                    "admitted", "rejected", "p50 ms", "p99 ms", "max ms", "check"], rows)]
    failed = [k for k, v in result["check"]["checks"].items() if not v]
    lines.append("checks: " + ("all passed: " + ", ".join(result["check"]["checks"])
                               if not failed else "FAILED: " + ", ".join(failed)))
    lines.append(f"facts: {facts}")
    wc = result["worker_check"]
    if "unavailable" in wc:
        lines.append(f"none lost (worker drain): not available yet: {wc['unavailable']}")
    else:
        lines.append(f"none lost (1 worker, SQLite hook): {wc['rows']} rows, tickets "
                     f"{wc['tickets']}, {wc['orders_per_s']:,.0f} orders/s: "
                     f"{'OK' if wc['ok'] else 'FAILED'}")
    lines.append(f"server: {result['settings']['server']}; load: {result['settings']['load']}"
                 "; latency includes the few /bare fillers at the end")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
