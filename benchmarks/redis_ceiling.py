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

``--parts``: where an admission's Redis time goes. The admission script is
run pipelined as it is and in variants with one part taken out (each a
copy of ``admission.lua`` loaded under its own SHA, same keys and
arguments); the difference in Redis CPU per call is that part's cost. The
``return at once`` variant answers ``queued`` before doing anything: what an
``EVALSHA`` with the admission's 21 keys and arguments costs by itself. Each
case starts from an empty keyspace (the sale alone), so all add the same
number of buyers and tickets.
Results go to ``redis-ceiling-parts.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
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
    parser.add_argument("--parts", action="store_true",
                        help="the admission script without each of its parts, instead")


def result_name(args: argparse.Namespace) -> str:
    """``redis-ceiling`` or, with ``--parts``, ``redis-ceiling-parts``."""
    return "redis-ceiling-parts" if args.parts else "redis-ceiling"


#: ``--parts``: variant name -> (what it leaves out, the pattern(s) removed from
#: the script's source, in order). Each pattern must match (see script_parts).
PARTS: dict[str, tuple[tuple[str, str], ...]] = {
    "without the ticket (HSET + EXPIRE)": (
        (r"redis\.call\('HSET', KEYS\[3\].*?now\)\n", ""),
        (r"redis\.call\('EXPIRE', KEYS\[3\].*?\)\)\n", ""),
    ),
    "without the stream entry (XADD)": ((r"redis\.call\('XADD'.*?now\)\n", ""),),
    "without the buyer's ticket list (HGET + HSET)": (
        (r"local tokens = redis\.call\('HGET', KEYS\[7\].*?"
         r"redis\.call\('HSET', KEYS\[7\], ARGV\[1\], tokens\)\n", ""),
    ),
    "without the units per buyer (HGET + HINCRBY)": (
        (r"tonumber\(redis\.call\('HGET', KEYS\[2\], ARGV\[1\]\) or '0'\)", "0"),
        (r"redis\.call\('HINCRBY', KEYS\[2\], ARGV\[1\], qty\)\n", ""),
    ),
    "without Redis TIME": ((r"local now = now_ms\(\)", "local now = 1700000000000"),),
}
#: ``--parts``: the variant that answers before doing anything.
RETURN_AT_ONCE = "return at once (the call itself)"


def script_parts(source: str) -> dict[str, str]:
    """The admission script's ``--parts`` variants: name -> Lua source.

    Raises ``ValueError`` when a pattern no longer matches the script (the
    script changed: the variant would measure nothing).
    """
    variants = {"the whole script": source}
    for name, removals in PARTS.items():
        variant = source
        for pattern, replacement in removals:
            variant, count = re.subn(pattern, lambda _m, r=replacement: r, variant,
                                     count=1, flags=re.S)
            if count != 1:
                raise ValueError(f"{name}: {pattern!r} is not in the admission script")
        variants[name] = variant
    variants[RETURN_AT_ONCE] = "return {'queued', '', 1, 0}"
    return variants


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
                     "requests": args.requests, "rounds": args.rounds, "parts": args.parts},
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
            if args.parts:
                cases = {}
                whole = app.extensions["flashsale"].strategy._script.script
                for name, variant in script_parts(whole).items():
                    variant_sha = redis.client.script_load(variant)
                    cases[name] = (["EVALSHA", variant_sha, *admit[2:]], args.pipeline,
                                   args.requests)
            else:
                cases = {
                    f"PING -P{args.pipeline}": (["PING"], args.pipeline, args.requests),
                    f"admit EVALSHA -P{args.pipeline}": (admit, args.pipeline, args.requests),
                    "admit EVALSHA -P1": (admit, 1, max(10000, args.requests // 3)),
                    f"sold-out EVALSHA -P{args.pipeline}": (soldout, args.pipeline,
                                                            args.requests),
                }
            admitted = 0
            mem_delta = 0
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for name, (command, pipeline, requests) in cases.items():
                    if args.parts:
                        # Each variant from the same empty keyspace: a keyspace
                        # grown by the cases before would charge its rehashing
                        # and allocation to whichever case came later.
                        redis.client.flushall()
                        with app.app_context():
                            ext.create_sale("hot", stock=10**9, price="9.99", per_user_limit=1)
                    before_remaining = int(redis.client.hget("flashsale:{hot}:sale", "remaining"))
                    mem0 = redis.used_memory()
                    cpu0 = redis.cpu_seconds()
                    data = redis_benchmark(redis.port, command, requests=requests,
                                           clients=args.clients, pipeline=pipeline)
                    data["redis_cpu_us_per_call"] = (redis.cpu_seconds() - cpu0) / requests * 1e6
                    sold = before_remaining - int(
                        redis.client.hget("flashsale:{hot}:sale", "remaining"))
                    if sold and not args.parts:  # variants write less than an order
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
    if result["settings"].get("parts"):
        return report_parts(result)
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


def report_parts(result: dict[str, Any]) -> str:
    """``--parts``: each variant's Redis CPU per call, and what its part costs."""
    summary = result["summary"]
    whole = summary["the whole script"]["redis_cpu_us_per_call"]
    rows = []
    for name in ("the whole script", *PARTS, RETURN_AT_ONCE):
        cpu = summary[name]["redis_cpu_us_per_call"]
        rows.append([name, summary[name]["rps"], cpu,
                     None if name == "the whole script" else whole - cpu])
    lines = [table(["admission script", "calls/s", "redis CPU us/call", "the part costs us"],
                   rows)]
    settings = result["settings"]
    lines.append(f"redis-benchmark -P{settings['pipeline']} -c {settings['clients']}, "
                 f"{settings['requests']:,} calls per case, medians of {settings['rounds']} "
                 f"interleaved rounds; a new buyer and ticket per call; the whole script "
                 f"less 'return at once' is what its commands cost")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
