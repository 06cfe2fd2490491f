"""``expiry``: unpaid holds expired per second by one worker, with and without an expiry hook.

For each run: a sale with a payment timeout is filled with ``--holds``
admitted orders (:mod:`benchmarks.crowd`), a burst worker in this process
runs the order hook so every ticket is ``awaiting_payment``, and once every
``pay_by`` has passed (Redis time) one worker process runs
``FlashSale.run_worker(burst=True)``: it expires the holds in batches of
``EXPIRY_BATCH`` (one script call each) and, with an expiry hook, calls it for
each through the orders stream. Expiries per second: holds expired divided by
the time from the worker's start to the last ``order_expired``; with the hook,
also holds whose hook returned per second (start to last hook call). Checked
after each run: every ticket ``expired``, all the stock back, nothing left in
the deadline index or the stream. Runs alternate between the two modes.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import uuid
from typing import Any

from . import common
from .common import NotAvailable, Processes, Redis, median, table
from .strategies import commandstats

MODES = {"no hook": [], "no-op expiry hook": ["--expiry-hook"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks expiry``."""
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--holds", type=int, default=20000, help="holds per run")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="payment timeout (s): longer than filling and confirming take")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round of 4,000 holds."""
    args.rounds = 1
    args.holds = 4000
    args.timeout = 6.0


def fill(procs: Processes, redis: Redis, sale_id: str, args: argparse.Namespace) -> dict[str, Any]:
    """Create the sale, admit ``--holds`` orders, run their order hook: all awaiting payment."""
    from .app import setup_app

    app = setup_app(redis.url)
    ext = app.extensions["flashsale"].ext
    with app.app_context():
        ext.create_sale(sale_id, stock=args.holds, payment_timeout=args.timeout)
    mem0 = redis.used_memory()
    data = common.run_crowds(procs, redis_url=redis.url, processes=2, threads=8,
                             sales=[sale_id], nonce=f"x{uuid.uuid4().hex[:8]}", count=args.holds)
    if data["statuses"].get("queued", 0) != args.holds:
        raise SystemExit(f"filling {sale_id}: {data['statuses']}")
    mem_queued = redis.used_memory()
    with app.app_context():
        ext.run_worker(burst=True, name="bench-confirm")
    c = redis.client
    awaiting = int(c.zcard(f"flashsale:{{{sale_id}}}:holds"))
    if awaiting != args.holds:
        raise SystemExit(f"{sale_id}: {awaiting} of {args.holds} holds awaiting payment after "
                         f"the order hook; raise --timeout (now {args.timeout} s)")
    last_due = float(c.zrange(f"flashsale:{{{sale_id}}}:holds", -1, -1, withscores=True)[0][1])
    return {"mem_before": mem0, "mem_queued": mem_queued, "mem_awaiting": redis.used_memory(),
            "last_due_ms": last_due}


def redis_ms(redis: Redis) -> float:
    """Redis ``TIME`` in ms."""
    seconds, micros = redis.client.time()
    return float(seconds * 1000 + micros / 1000)


def one_run(procs: Processes, redis: Redis, mode: str, rnd: int,
            args: argparse.Namespace) -> dict[str, Any]:
    """Fill a fresh sale, wait for its deadlines, expire it with one worker process."""
    sale_id = f"x{rnd}{'h' if MODES[mode] else 'n'}"
    mem = fill(procs, redis, sale_id, args)
    while redis_ms(redis) < mem["last_due_ms"] + 5:
        time.sleep(0.05)
    argv = [*common.python_argv(), "-m", "benchmarks.expiry_proc", "--redis", redis.url,
            *MODES[mode]]
    proc = procs.start(argv, cwd=common.ROOT, env=common.env_for_children(),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        common.await_ready(proc, "expiry worker")
        calls0, cpu0 = commandstats(redis), redis.cpu_seconds()
        common.send_go(proc)
        part = common.read_result(proc, "expiry worker", 300)
        redis_cpu = redis.cpu_seconds() - cpu0
        calls1 = commandstats(redis)
    finally:
        procs.stop(proc)
    c = redis.client
    base = f"flashsale:{{{sale_id}}}:"
    statuses: dict[str, int] = {}
    for key in c.scan_iter(match=base + "t:*", count=1000):
        s = c.hget(key, "s") or "?"
        statuses[s] = statuses.get(s, 0) + 1
    expired = part["expired"]
    hooked = part["hooked"]
    ok = (statuses == {"expired": args.holds}
          and int(c.hget(base + "sale", "remaining")) == args.holds
          and c.zcard(base + "holds") == 0 and c.xlen(base + "orders") == 0
          and expired["count"] == args.holds
          and (not MODES[mode] or hooked["count"] == args.holds))
    from .app import setup_app

    app = setup_app(redis.url)
    with app.app_context():
        app.extensions["flashsale"].ext.delete_sale(sale_id)
    span = max(expired["last"] - part["started"], 1e-9)
    hook_span = max(hooked["last"] - part["started"], 1e-9)
    return {
        "round": rnd + 1, "mode": mode, "holds": args.holds,
        "expired": expired["count"],
        "expiries_per_s": expired["count"] / span,
        "hooks_per_s": hooked["count"] / hook_span if hooked["count"] else None,
        "expire_s": span, "worker_wall_s": part["ended"] - part["started"],
        "evalsha_per_hold": round((calls1.get("evalsha", 0) - calls0.get("evalsha", 0))
                                  / args.holds, 3),
        "redis_cpu_us_per_hold": redis_cpu / args.holds * 1e6,
        "redis_bytes_per_hold_awaiting": (mem["mem_awaiting"] - mem["mem_before"]) / args.holds,
        "redis_bytes_per_order_queued": (mem["mem_queued"] - mem["mem_before"]) / args.holds,
        "tickets_after": statuses, "all_expired_once": ok,
        "loadavg": common.loadavg(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    result: dict[str, Any] = {
        "benchmark": "expiry",
        "machine": common.machine(),
        "settings": {
            "worker": "1 process, run_worker(burst=True), holds all due when it starts",
            "holds": f"{args.holds} per run, payment_timeout {args.timeout} s",
            "rounds": args.rounds,
        },
        "unavailable": {},
    }
    runs: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            for rnd in range(args.rounds):
                for mode in MODES:
                    try:
                        runs.append(one_run(procs, redis, mode, rnd, args))
                    except NotAvailable as exc:
                        result["unavailable"][mode] = str(exc)
        finally:
            redis.cleanup()
    result["runs"] = runs
    summary: dict[str, Any] = {}
    for mode in MODES:
        sel = [r for r in runs if r["mode"] == mode]
        if not sel:
            continue
        summary[mode] = {
            "expiries_per_s": median([r["expiries_per_s"] for r in sel]),
            "hooks_per_s": median([r["hooks_per_s"] for r in sel]) if MODES[mode] else None,
            "holds": sum(r["holds"] for r in sel),
            "all_expired_once": all(r["all_expired_once"] for r in sel),
            "evalsha_per_hold": sel[-1]["evalsha_per_hold"],
            "redis_cpu_us_per_hold": median([r["redis_cpu_us_per_hold"] for r in sel]),
            "redis_bytes_per_hold_awaiting": median(
                [r["redis_bytes_per_hold_awaiting"] for r in sel]),
        }
    result["summary"] = summary
    result["loadavg_at_end"] = common.loadavg()
    return result


def report(result: dict[str, Any]) -> str:
    """The compact table printed at the end."""
    rows = []
    for mode, v in result["summary"].items():
        rows.append([mode, v["expiries_per_s"],
                     "-" if v["hooks_per_s"] is None else v["hooks_per_s"],
                     v["holds"], "yes" if v["all_expired_once"] else "NO",
                     v["evalsha_per_hold"], v["redis_cpu_us_per_hold"],
                     v["redis_bytes_per_hold_awaiting"]])
    lines = [table(["worker", "expiries/s", "hook calls/s", "holds", "all expired once",
                    "EVALSHA/hold", "redis us/hold", "B/hold awaiting"], rows)]
    lines += [f"{mode}: not available: {why}" for mode, why in result["unavailable"].items()]
    lines.append(f"{result['settings']['worker']}; {result['settings']['holds']}")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
