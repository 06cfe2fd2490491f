"""``strategies``: lua vs optimistic (WATCH/MULTI) vs lock, on one hot item and on 1,000.

64 concurrent clients (``--processes`` x ``--threads``, default 4 x 16) call
:meth:`FlashSale.place_order` through the public API, every attempt a new
buyer, for ``--duration`` seconds per run. Strategies and scenarios run
interleaved (lua, optimistic, lock, lua, ...) and each ratio is taken within
a round. Reports admitted orders/s, the strategies' retries and timeouts
(their own counters when they expose ``stats``, else derived from Redis
``INFO commandstats``), Redis commands per attempt, and the ratio to lua.

A strategy that the extension does not actually run (the setting accepted but
another class admitting) is reported as "not available yet", never measured.
"""

from __future__ import annotations

import argparse
import os
import uuid
from typing import Any

from . import common
from .common import NotAvailable, Processes, Redis, median, table

STRATEGIES = ("lua", "optimistic", "lock")
TARGETS = {"optimistic": 3.0, "lock": 5.0}  # lua must be at least this many times faster
SPREAD_ITEMS = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks strategies``."""
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8, help="seconds per run")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--threads", type=int, default=16, help="client threads per process")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round of 2 s runs."""
    args.rounds = 1
    args.duration = 2


def setup_sales(redis_url: str) -> list[str]:
    """``hot`` plus ``s0000``..``s0999``, each with 10^9 units (never sells out here)."""
    from .app import setup_app

    app = setup_app(redis_url)
    ext = app.extensions["flashsale"].ext
    spread = [f"s{i:04d}" for i in range(SPREAD_ITEMS)]
    with app.app_context():
        for sale_id in ["hot", *spread]:
            ext.create_sale(sale_id, stock=10**9, price="1.00", per_user_limit=1)
    return spread


def commandstats(redis: Redis) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``)."""
    stats = redis.client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if "lua" not in strategies or set(strategies) - set(STRATEGIES):
        raise SystemExit(f"--strategies must include lua and be among {', '.join(STRATEGIES)}")
    clients = args.processes * args.threads
    result: dict[str, Any] = {
        "benchmark": "strategies",
        "machine": common.machine(),
        "settings": {
            "clients": f"{clients} ({args.processes} processes x {args.threads} threads), "
                       "FlashSale.place_order, a new buyer per attempt",
            "runs": f"{args.duration:g} s per run, {args.rounds} interleaved rounds",
            "scenarios": {"hot": "one item", "spread": f"{SPREAD_ITEMS} items, random pick"},
        },
        "unavailable": {},
    }
    rounds: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            spread = setup_sales(redis.url)
            scenarios = {"hot": ["hot"], "spread": spread}
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for scenario, sales in scenarios.items():
                    row[scenario] = {}
                    for strategy in strategies:
                        if strategy in result["unavailable"]:
                            continue
                        try:
                            row[scenario][strategy] = one_run(
                                procs, redis, strategy, sales, args, f"r{rnd}{scenario[0]}")
                        except NotAvailable as exc:
                            result["unavailable"][strategy] = str(exc)
                    lua = row[scenario]["lua"]["orders_per_s"]
                    for data in row[scenario].values():
                        data["vs_lua"] = data["orders_per_s"] / lua if lua else 0.0
                        data["lua_speedup"] = lua / data["orders_per_s"] if data[
                            "orders_per_s"] else None
                rounds.append(row)
        finally:
            redis.cleanup()
    result["rounds"] = rounds
    result["summary"] = summarise(rounds, strategies, result["unavailable"])
    result["loadavg_at_end"] = common.loadavg()
    return result


def one_run(procs: Processes, redis: Redis, strategy: str, sales: list[str],
            args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One strategy, one scenario, ``args.duration`` seconds."""
    before = commandstats(redis)
    cpu0 = redis.cpu_seconds()
    times0 = os.times()
    data = common.run_crowds(
        procs, redis_url=redis.url, processes=args.processes, threads=args.threads,
        sales=sales, nonce=f"{tag}{strategy[:2]}{uuid.uuid4().hex[:6]}",
        strategy=strategy, duration=args.duration,
    )
    times1 = os.times()
    after = commandstats(redis)
    calls = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    calls.pop("info", None)
    attempts = max(1, data["attempts"])
    queued = data["statuses"].get("queued", 0)
    data["orders_per_s"] = queued / data["wall_s"]
    data["attempts_per_s"] = data["attempts"] / data["wall_s"]
    data["redis_cpu_us_per_attempt"] = (redis.cpu_seconds() - cpu0) / attempts * 1e6
    data["client_cpu_us_per_attempt"] = (
        (times1.children_user - times0.children_user)
        + (times1.children_system - times0.children_system)) / attempts * 1e6
    data["redis_calls_per_attempt"] = {k: round(v / attempts, 2) for k, v in
                                       sorted(calls.items(), key=lambda kv: -kv[1])[:8]}
    stats = data.get("strategy_stats") or {}
    # Retries: the strategy's own "retries" counter when it has one; else the
    # calls beyond an uncontended admission's (see calibration()): refused
    # EXECs for optimistic, failed lock polls for lock. Timeouts: attempts
    # answered "busy" (retries or lock wait exhausted), plus any exception.
    if "retries" in stats:
        data["retries"] = stats["retries"]
    elif strategy == "lua":
        data["retries"] = 0
    else:
        command, per_admission = calibration(redis, strategy)
        data["retries"] = max(0, calls.get(command, 0) - round(per_admission * queued))
    refused = {k: v for k, v in data["statuses"].items() if k != "queued"}
    data["timeouts"] = refused.get("busy", 0) + sum(
        v for k, v in refused.items() if k.startswith("error:"))
    data["other_outcomes"] = refused
    return data


_CALIBRATION: dict[tuple[int, str], tuple[str, float]] = {}


def calibration(redis: Redis, strategy: str) -> tuple[str, float]:
    """``(command, calls per admission)`` of ``strategy`` with no contention at all.

    ``EXEC`` for optimistic, ``EVALSHA`` for lock (acquire, release and any
    lease check are scripts). Measured once per Redis with 20 sequential
    admissions on a sale of its own; calls beyond this under load are retries
    (refused EXECs, failed lock polls).
    """
    command = "exec" if strategy == "optimistic" else "evalsha"
    key = (redis.port, strategy)
    if key not in _CALIBRATION:
        from .app import setup_app

        app = setup_app(redis.url, FLASHSALE_INVENTORY_STRATEGY=strategy)
        ext = app.extensions["flashsale"].ext
        with app.app_context():
            ext.create_sale(f"calib-{strategy}", stock=100, per_user_limit=1)
            before = commandstats(redis).get(command, 0)
            for i in range(20):
                ext.place_order(f"calib-{strategy}", f"calibration-{i}")
            after = commandstats(redis).get(command, 0)
        _CALIBRATION[key] = (command, (after - before) / 20)
    return _CALIBRATION[key]


def summarise(rounds: list[dict[str, Any]], strategies: list[str],
              unavailable: dict[str, str]) -> dict[str, Any]:
    """Per scenario and strategy: medians over rounds."""
    out: dict[str, Any] = {}
    for scenario in ("hot", "spread"):
        out[scenario] = {}
        for strategy in strategies:
            if strategy in unavailable:
                out[scenario][strategy] = {"unavailable": unavailable[strategy]}
                continue
            runs = [r[scenario][strategy] for r in rounds if strategy in r[scenario]]
            speedups = [r["lua_speedup"] for r in runs if r["lua_speedup"]]
            entry: dict[str, Any] = {
                "orders_per_s": median([r["orders_per_s"] for r in runs]),
                "p50_ms": median([r["latency_ms"]["p50"] for r in runs]),
                "p99_ms": median([r["latency_ms"]["p99"] for r in runs]),
                "retries": sum(r["retries"] or 0 for r in runs)
                if any(r["retries"] is not None for r in runs) else None,
                "timeouts": sum(r["timeouts"] for r in runs),
                "attempts": sum(r["attempts"] for r in runs),
                "vs_lua": median([r["vs_lua"] for r in runs]),
                "lua_speedup": median(speedups) if speedups else None,
                "redis_cpu_us_per_attempt": median(
                    [r["redis_cpu_us_per_attempt"] for r in runs]),
                "client_cpu_us_per_attempt": median(
                    [r["client_cpu_us_per_attempt"] for r in runs]),
                "redis_calls_per_attempt": runs[-1]["redis_calls_per_attempt"],
                "strategy_counters": runs[-1].get("strategy_stats", {}),
                "outcomes": runs[-1]["other_outcomes"],
            }
            if scenario == "hot" and strategy in TARGETS:
                entry["target_lua_speedup"] = TARGETS[strategy]
                entry["met"] = (entry["lua_speedup"] or 0) >= TARGETS[strategy]
            out[scenario][strategy] = entry
    return out


def report(result: dict[str, Any]) -> str:
    """The compact table printed at the end."""
    rows = []
    notes = []
    for scenario, per in result["summary"].items():
        for strategy, v in per.items():
            if "unavailable" in v:
                if scenario == "hot":
                    notes.append(f"{strategy}: not available yet: {v['unavailable']}")
                continue
            if v["strategy_counters"] or v["outcomes"]:
                notes.append(f"{scenario}/{strategy} last run: counters {v['strategy_counters']}"
                             f", refusals {v['outcomes']}")
            target = ""
            if "met" in v:
                target = f"lua >= {v['target_lua_speedup']:g}x {'MET' if v['met'] else 'MISSED'}"
            rows.append([scenario, strategy, v["orders_per_s"], v["p50_ms"], v["p99_ms"],
                         v["retries"], v["timeouts"], f"{v['vs_lua']:.2f}",
                         f"{v['lua_speedup']:.1f}x" if v["lua_speedup"] else "-",
                         v["redis_cpu_us_per_attempt"], v["client_cpu_us_per_attempt"], target])
    lines = [table(["scenario", "strategy", "orders/s", "p50 ms", "p99 ms", "retries",
                    "timeouts", "vs lua", "lua is", "redis us/att", "client us/att",
                    "target"], rows)]
    lines += notes
    lines.append(f"clients: {result['settings']['clients']}; {result['settings']['runs']}; "
                 f"p99 = worst client process")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
