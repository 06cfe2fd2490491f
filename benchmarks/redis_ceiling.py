"""``redis-ceiling``: redis-benchmark of the admission script via EVALSHA (one Redis core's limit).

The exact ``KEYS``/``ARGV`` the extension sends for one order are captured
from the running strategy, the buyer and ticket token are replaced by
redis-benchmark's ``__rand_int__`` (a new buyer and ticket per call), and
redis-benchmark (C, pipelined) sends them as fast as one Redis core takes
them. ``PING`` is the floor of a round trip on the same setup. redis-benchmark
shares the 2 cores with Redis, so calls/s can be client-bound; "1 core at
100%" (10^6 / Redis CPU microseconds per call) is the physical limit. Cases run
interleaved over ``--rounds``. Also reports Redis CPU per call and Redis
bytes per admitted order at scale.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
from typing import Any

from . import common
from .common import NotAvailable, Processes, Redis, median, table

USER = "bench-user-placeholder"
TOKEN = "TOKENPLACEHOLDER012345"  # 22 characters, like a real token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks redis-ceiling``."""
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300000,
                        help="calls per pipelined case per round")
    parser.add_argument("--clients", type=int, default=50, help="redis-benchmark -c")
    parser.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round, fewer calls."""
    args.rounds = 1
    args.requests = 60000


def capture_call(redis_url: str, sale_id: str) -> tuple[str, list[str], list[str]]:
    """``(sha, keys, args)`` of one admission, as the current strategy sends it."""
    from .app import setup_app

    app = setup_app(redis_url)
    state = app.extensions["flashsale"]
    strategy = state.strategy
    script = getattr(strategy, "_script", None)
    if script is None or not hasattr(script, "sha"):
        raise NotAvailable(f"{type(strategy).__name__} has no admission script to capture")
    seen: dict[str, list[str]] = {}

    def recorder(keys: list[Any], args: list[Any], client: Any = None) -> list[Any]:
        seen["keys"] = [str(k) for k in keys]
        seen["args"] = [str(a) for a in args]
        return ["queued", f"{sale_id}~{TOKEN}", 1, 0]

    strategy._script = recorder
    try:
        strategy.admit(sale_id, USER, 1, TOKEN, fresh_token=True)  # as an order without a key
    finally:
        strategy._script = script
    state.client.script_load(script.script)
    return script.sha, seen["keys"], seen["args"]


def randomise(values: list[str]) -> list[str]:
    """Buyer and token -> ``__rand_int__`` (12 digits: ``u<12>``, ``<10 chars><12>``)."""
    return [v.replace(TOKEN, "tok0123456__rand_int__").replace(USER, "u__rand_int__")
            for v in values]


def redis_benchmark(port: int, command: list[str], *, requests: int, clients: int,
                    pipeline: int) -> dict[str, float]:
    """Run redis-benchmark once; return rps and latency (ms) from its CSV."""
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
            "-n", str(requests), "-P", str(pipeline), "-r", "2000000000", "--csv", *command]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if out.returncode or not rows:
        raise SystemExit(f"redis-benchmark failed: {out.stderr.strip() or out.stdout[-300:]}")
    row = rows[-1]
    return {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark is not installed: apt-get install -y redis-tools")
    result: dict[str, Any] = {
        "benchmark": "redis-ceiling",
        "machine": common.machine(),
        "settings": {"clients": args.clients, "pipeline": args.pipeline,
                     "requests": args.requests, "rounds": args.rounds},
    }
    rounds: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            from .app import setup_app

            app = setup_app(redis.url)
            ext = app.extensions["flashsale"].ext
            with app.app_context():
                ext.create_sale("hot", stock=10**9, price="9.99", per_user_limit=1)
                ext.create_sale("gone", stock=1, price="9.99", per_user_limit=1)
                ext.place_order("gone", "first")
            try:
                sha, keys, argv = capture_call(redis.url, "hot")
                _, gone_keys, gone_argv = capture_call(redis.url, "gone")
            except NotAvailable as exc:
                result["unavailable"] = str(exc)
                return result
            result["script_call"] = {"sha": sha, "keys": keys, "args": argv}
            admit = ["EVALSHA", sha, str(len(keys)), *randomise(keys), *randomise(argv)]
            soldout = ["EVALSHA", sha, str(len(gone_keys)), *randomise(gone_keys),
                       *randomise(gone_argv)]
            cases = {
                f"PING -P{args.pipeline}": (["PING"], args.pipeline, args.requests),
                f"admit EVALSHA -P{args.pipeline}": (admit, args.pipeline, args.requests),
                "admit EVALSHA -P1": (admit, 1, max(10000, args.requests // 3)),
                f"sold-out EVALSHA -P{args.pipeline}": (soldout, args.pipeline, args.requests),
            }
            admitted = 0
            mem_delta = 0
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for name, (command, pipeline, requests) in cases.items():
                    before_remaining = int(redis.client.hget("flashsale:{hot}:sale", "remaining"))
                    mem0 = redis.used_memory()
                    cpu0 = redis.cpu_seconds()
                    data = redis_benchmark(redis.port, command, requests=requests,
                                           clients=args.clients, pipeline=pipeline)
                    data["redis_cpu_us_per_call"] = (redis.cpu_seconds() - cpu0) / requests * 1e6
                    sold = before_remaining - int(
                        redis.client.hget("flashsale:{hot}:sale", "remaining"))
                    if sold:
                        data["admitted"] = sold
                        admitted += sold
                        mem_delta += redis.used_memory() - mem0
                    row[name] = data
                rounds.append(row)
            result["redis_bytes_per_admitted_order"] = (
                round(mem_delta / admitted, 1) if admitted else None)
            result["admitted_total"] = admitted
        finally:
            redis.cleanup()
    result["rounds"] = rounds
    result["summary"] = {
        name: {
            "rps": median([r[name]["rps"] for r in rounds]),
            "p50_ms": median([r[name]["p50_ms"] for r in rounds]),
            "p99_ms": median([r[name]["p99_ms"] for r in rounds]),
            "redis_cpu_us_per_call": median([r[name]["redis_cpu_us_per_call"] for r in rounds]),
        }
        for name in (rounds[0].keys() - {"round", "loadavg"} if rounds else [])
    }
    result["loadavg_at_end"] = common.loadavg()
    return result


def report(result: dict[str, Any]) -> str:
    """The compact table printed at the end."""
    if "unavailable" in result:
        return f"redis-ceiling: not available: {result['unavailable']}"
    rows = [[name, v["rps"], v["p50_ms"], v["p99_ms"], v["redis_cpu_us_per_call"],
             1e6 / v["redis_cpu_us_per_call"] if v["redis_cpu_us_per_call"] else None]
            for name, v in sorted(result["summary"].items(), key=lambda kv: -kv[1]["rps"])]
    lines = [table(["redis-benchmark case", "calls/s", "p50 ms", "p99 ms", "redis CPU us/call",
                    "1 core at 100%"], rows)]
    lines.append(f"Redis bytes per admitted order: {result['redis_bytes_per_admitted_order']} "
                 f"over {result['admitted_total']:,} orders (tokens as long as real ones)")
    lines.append(f"-c {result['settings']['clients']}, medians of {result['settings']['rounds']}"
                 f" interleaved rounds; load average at start "
                 f"{result['machine']['loadavg_at_start']}, at end {result['loadavg_at_end']}")
    return "\n".join(lines)
