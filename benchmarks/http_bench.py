"""``http``: what the extension costs per request, as ratios to a bare Flask view.

One throwaway Redis, the bench app (:mod:`benchmarks.app`) under gunicorn with
the same worker settings for every case, and wrk on loopback. Cases run
interleaved (A B C D, A B C D, ...) and every ratio is taken within a round,
so a noisy machine shifts all cases together and the ratios stay stable.

Cases:

``bare``      ``GET /bare``: a Flask JSON view that does nothing (the ceiling).
``floor``     ``POST /floor``: the bare view plus one raw round trip of a trivial
              script (``EVALSHA`` of ``return 1`` on the extension's client):
              the cost no admission can avoid. ``order / floor`` is the share
              of that budget the order path reaches (issue target: >= 0.9x).
``detail``    ``GET /api/flash-sales/hot``: one sale's JSON.
``order``     ``POST /api/flash-sales/hot/order`` on a sale with 10^9 stock,
              every request a new buyer (admission cost: one EVALSHA).
``sold_out``  ``POST`` on a sold-out sale (the fast path).

Why wrk: it is C with one cheap Lua hook per request, so on 2 shared cores it
leaves far more CPU to the server than a Python load generator (locust) would,
and loads the server harder.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from . import common
from .common import Processes, Redis, median, table

CASES: dict[str, tuple[str, str, str]] = {
    # name: (method, path, expected outcome: status[:problem code])
    "bare": ("GET", "/bare", "200"),
    "floor": ("POST", "/floor", "200"),
    "detail": ("GET", "/api/flash-sales/hot", "200"),
    "order": ("POST", "/api/flash-sales/hot/order", "202"),
    "sold_out": ("POST", "/api/flash-sales/gone/order", "409:sold_out"),
}
TARGETS = {"order": 0.8, "sold_out": 0.95}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks http``."""
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=3, help="seconds per case per round")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument(
        "--profile", nargs="?", const="order,sold_out", default="",
        help="after the rounds, profile these cases' gunicorn workers with py-spy "
             "(default: order,sold_out)",
    )


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one short round (~20 s)."""
    args.rounds = 1
    args.duration = 3


def setup_sales(redis_url: str) -> None:
    """``hot``: 10^9 units, 1 per buyer; ``gone``: sold out (its one unit bought)."""
    from .app import setup_app

    app = setup_app(redis_url)
    ext = app.extensions["flashsale"].ext
    with app.app_context():
        ext.create_sale("hot", stock=10**9, price="9.99", per_user_limit=1,
                        info={"name": "Benchmark item"})
        ext.create_sale("gone", stock=1, price="9.99", per_user_limit=1)
        assert ext.place_order("gone", "first-buyer").status == "queued"


def probe(base: str, case: str) -> dict[str, Any]:
    """One request of ``case`` through urllib: status and problem ``code``, for the record."""
    method, path, _ = CASES[case]
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None,
                                 headers={"X-User": f"probe-{uuid.uuid4().hex}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        code = json.loads(body).get("code")
    except ValueError:
        code = None
    return {"status": status, "code": code}


def profile_case(case: str, base: str, master: int, duration: float,
                 args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Run ``case`` under ``py-spy record`` and summarise where web CPU goes."""
    raw = out_dir / f"http-{case}.pyspy.txt"
    raw.unlink(missing_ok=True)
    spy = common.start_pyspy(master, raw, duration=duration, subprocesses=True)
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    try:
        time.sleep(0.5)
        method, path, _ = CASES[case]
        common.run_wrk(base, method=method, path=path, nonce=f"prof{uuid.uuid4().hex[:6]}",
                       duration=duration - 1, connections=args.connections,
                       threads=args.wrk_threads)
        spy.wait(duration + 30)
    finally:
        if spy.poll() is None:
            os.killpg(spy.pid, 9)
            spy.wait()
    return common.summarise_profile(raw, BUCKETS, FOCUS)


IN_PROCESS_FOCUS = ["full_dispatch_request", "dispatch_request", "place_order", "admit",
                    "read_quantity", "current_user_id", "make_response", "force_type",
                    "run_wsgi_app", "open_session", "handle_user_exception"]


def profile_in_process(redis_url: str, cases: list[str], n: int = 3000) -> dict[str, Any]:
    """Each case called straight through WSGI (no server, no sockets but Redis).

    CPU microseconds per request without a profiler, then the share of the
    request's time (cProfile, cumulative) spent in the functions that matter.
    Deterministic, so it shows the extension's own Python cost beside the
    sampled server-side profile.
    """
    import cProfile
    import io
    import itertools
    import pstats
    import sys

    from .app import create_app

    app = create_app(FLASHSALE_REDIS_URL=redis_url)
    counter = itertools.count()

    def call(method: str, path: str) -> None:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "CONTENT_LENGTH": "0",
            "HTTP_X_USER": f"inproc-{next(counter)}", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
        }
        body = app(environ, lambda *args: lambda data: None)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    out: dict[str, Any] = {}
    try:
        for case in cases:
            method, path, _ = CASES[case]
            for _ in range(200):
                call(method, path)
            t0 = os.times()
            for _ in range(n):
                call(method, path)
            t1 = os.times()
            cpu = (t1.user - t0.user + t1.system - t0.system) / n * 1e6
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(n):
                call(method, path)
            profiler.disable()
            stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
            total = sum(v[2] for v in stats.values())  # tottime summed = all time
            shares: dict[str, float] = {}
            for (_, _, name), v in stats.items():
                if name in IN_PROCESS_FOCUS:
                    shares[name] = max(shares.get(name, 0.0), v[3] / total)
            out[case] = {"cpu_us_per_request": round(cpu, 1),
                         "share": {k: round(shares[k], 3) for k in IN_PROCESS_FOCUS
                                   if shares.get(k, 0) >= 0.01}}
    finally:
        app.extensions["flashsale"].cache.stop()
    return out


BUCKETS = [
    # (label, substring of a frame): a sample goes to the first label found
    # walking from the leaf towards the root.
    ("redis-py + socket (the EVALSHA round trip)", "redis/"),
    ("redis-py + socket (the EVALSHA round trip)", "hiredis"),
    ("flask_flashsale (views, admission, cache)", "flask_flashsale/"),
    ("json", "json/"),
    ("flask/werkzeug (request, routing, response)", "werkzeug/"),
    ("flask/werkzeug (request, routing, response)", "flask/"),
    ("gunicorn (HTTP parsing, socket I/O)", "gunicorn/"),
]
FOCUS = ["Flask.wsgi_app", "Flask.full_dispatch_request", "FlashSale.place_order",
         "LuaStrategy.admit", "Script.__call__", "read_quantity", "FlashSale.current_user_id",
         "Flask.make_response", "Response.force_type", "run_wsgi_app",
         "Flask.handle_user_exception", "SaleCache.sold_out"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown or "bare" not in cases:
        raise SystemExit(f"cases must include 'bare' and be among {', '.join(CASES)}")
    result: dict[str, Any] = {
        "benchmark": "http",
        "machine": common.machine(),
        "settings": {
            "server": f"gunicorn {args.worker_class}, {args.workers} workers x "
                      f"{args.threads} threads, keep-alive, benchmarks.app:create_app()",
            "load": f"wrk -t{args.wrk_threads} -c{args.connections}, "
                    f"{args.duration:g} s per case, {args.rounds} interleaved rounds",
            "order": ["lua strategy", "1 EVALSHA per order", "distinct X-User per request"],
        },
    }
    per_round: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            setup_sales(redis.url)
            log = Path(redis.dir) / "gunicorn.log"
            master, base = common.start_gunicorn(
                procs, redis_url=redis.url, workers=args.workers,
                worker_class=args.worker_class, threads=args.threads, log=log,
                worker_connections=-(-args.connections // args.workers),
            )
            result["probes"] = {c: probe(base, c) for c in cases}
            for case in cases:  # warm-up: imports, pools, script caches
                method, path, _ = CASES[case]
                common.run_wrk(base, method=method, path=path, nonce=f"w{uuid.uuid4().hex[:6]}",
                               duration=1, connections=args.connections,
                               threads=args.wrk_threads)
            workers = common.children(master.pid)
            rss: dict[str, Any] = {"start_kib": [common.rss_kib(p) for p in workers]}
            admitted_total = 0
            mem_delta_total = 0
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for case in cases:
                    method, path, expected = CASES[case]
                    mem0 = redis.used_memory() if case == "order" else 0
                    rcpu0 = redis.cpu_seconds()
                    wcpu0 = common.cpu_seconds(workers)
                    data = common.run_wrk(
                        base, method=method, path=path, nonce=f"r{rnd}{uuid.uuid4().hex[:6]}",
                        duration=args.duration, connections=args.connections,
                        threads=args.wrk_threads,
                    )
                    n = max(1, data["requests"])
                    data["redis_cpu_us_per_req"] = (redis.cpu_seconds() - rcpu0) / n * 1e6
                    data["web_cpu_us_per_req"] = (common.cpu_seconds(workers) - wcpu0) / n * 1e6
                    data["wrk_cpu_us_per_req"] = data.pop("cpu_s") / n * 1e6
                    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
                    good = int(data["statuses"].get(expected, 0))
                    sock = sum(v for k, v in data["errors"].items() if k != "status")
                    data["errors_total"] = data["requests"] - good + sock
                    if case == "order":
                        delta = redis.used_memory() - mem0
                        data["redis_bytes_per_order"] = delta / max(1, good)
                        admitted_total += good
                        mem_delta_total += delta
                    row[case] = data
                for case in cases:
                    row[case]["ratio"] = row[case]["rps"] / row["bare"]["rps"]
                    # CPU spent per request by everything on the box (web workers,
                    # Redis, wrk): other load steals time, not CPU per request, so
                    # this ratio is steadier than req/s on a shared machine.
                    cpu = {c: row[c]["web_cpu_us_per_req"] + row[c]["redis_cpu_us_per_req"]
                           + row[c]["wrk_cpu_us_per_req"] for c in (case, "bare")}
                    row[case]["cpu_ratio"] = cpu["bare"] / cpu[case]
                    # The same without Redis's own CPU: Redis on its own core/host.
                    row[case]["cpu_ratio_redis_elsewhere"] = (
                        cpu["bare"] - row["bare"]["redis_cpu_us_per_req"]) / (
                        cpu[case] - row[case]["redis_cpu_us_per_req"])
                per_round.append(row)
                rss.setdefault("after_round_kib", []).append(
                    [common.rss_kib(p) for p in workers])
            result["rounds"] = per_round
            result["web_rss"] = rss
            result["redis_memory"] = redis_memory(redis, admitted_total, mem_delta_total)
            profiled = [c.strip() for c in args.profile.split(",") if c.strip() in CASES]
            if profiled:
                result["in_process"] = profile_in_process(redis.url, cases)
                result["profile"] = {c: profile_case(c, base, master.pid, 10, args,
                                                     common.RESULTS) for c in profiled}
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if "Traceback" in tail or "ERROR" in tail:
                result["server_log_tail"] = tail
        finally:
            redis.cleanup()
    result["summary"] = summarise(cases, per_round)
    result["loadavg_at_end"] = common.loadavg()
    return result


def redis_memory(redis: Redis, admitted: int, delta: int) -> dict[str, Any]:
    """Bytes of Redis per admitted order, overall and per structure."""
    c = redis.client
    ticket = next(iter(c.scan_iter(match="flashsale:{hot}:t:*", count=1000)), None)
    stream_len = int(c.xlen("flashsale:{hot}:orders"))
    users_len = int(c.hlen("flashsale:{hot}:users"))
    out: dict[str, Any] = {
        "admitted_orders": admitted,
        "used_memory_delta_bytes": delta,
        "bytes_per_order": round(delta / admitted, 1) if admitted else None,
    }
    if ticket and stream_len and users_len:
        out["ticket_key_bytes"] = c.memory_usage(ticket, samples=0)
        out["stream_bytes_per_entry"] = round(
            (c.memory_usage("flashsale:{hot}:orders", samples=0) or 0) / stream_len, 1)
        out["users_hash_bytes_per_buyer"] = round(
            (c.memory_usage("flashsale:{hot}:users", samples=0) or 0) / users_len, 1)
    return out


def summarise(cases: list[str], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds: req/s, latency, errors, ratio to ``bare``."""
    out: dict[str, Any] = {}
    for case in cases:
        runs = [r[case] for r in rounds]
        ratios = [r["ratio"] for r in runs]
        out[case] = {
            "rps": median([r["rps"] for r in runs]),
            "p50_ms": median([r["latency_us"]["p50"] for r in runs]) / 1000,
            "p99_ms": median([r["latency_us"]["p99"] for r in runs]) / 1000,
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors_total"] for r in runs),
            "ratio": median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "cpu_ratio": median([r["cpu_ratio"] for r in runs]),
            "cpu_ratio_redis_elsewhere": median([r["cpu_ratio_redis_elsewhere"] for r in runs]),
            "web_cpu_us_per_req": median([r["web_cpu_us_per_req"] for r in runs]),
            "redis_cpu_us_per_req": median([r["redis_cpu_us_per_req"] for r in runs]),
            "wrk_cpu_us_per_req": median([r["wrk_cpu_us_per_req"] for r in runs]),
        }
        if case in TARGETS:
            out[case]["target"] = TARGETS[case]
            out[case]["met"] = out[case]["ratio"] >= TARGETS[case]
    if "floor" in cases:
        for case in cases:
            per_round = [r[case]["rps"] / r["floor"]["rps"] for r in rounds]
            out[case]["vs_floor"] = median(per_round)
    return out


def report(result: dict[str, Any]) -> str:
    """The compact table printed at the end."""
    s = result["summary"]
    rows = []
    for case, v in s.items():
        target = f">= {v['target']}x {'MET' if v['met'] else 'MISSED'}" if "target" in v else ""
        floor = f"{v['vs_floor']:.2f}x" if "vs_floor" in v else "-"
        rows.append([case, v["rps"], v["p50_ms"], v["p99_ms"], v["requests"], v["errors"],
                     f"{v['ratio']:.2f}x ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})", floor,
                     f"{v['cpu_ratio']:.2f}x", f"{v['cpu_ratio_redis_elsewhere']:.2f}x",
                     v["web_cpu_us_per_req"], v["redis_cpu_us_per_req"], v["wrk_cpu_us_per_req"],
                     target])
    lines = [table(["case", "req/s", "p50 ms", "p99 ms", "requests", "errors",
                    "vs bare (min-max)", "vs floor", "CPU vs bare", "w/o Redis CPU", "web us/req",
                    "redis us/req", "wrk us/req", "target"], rows)]
    mem = result.get("redis_memory", {})
    if mem.get("bytes_per_order") is not None:
        lines.append(
            f"Redis per admitted order: {mem['bytes_per_order']:.0f} B "
            f"(ticket key {mem.get('ticket_key_bytes')} B, stream "
            f"{mem.get('stream_bytes_per_entry')} B/entry, users hash "
            f"{mem.get('users_hash_bytes_per_buyer')} B/buyer), target < 1024 B")
    rss = result.get("web_rss", {})
    if rss.get("after_round_kib"):
        lines.append(f"gunicorn worker RSS KiB: start {rss['start_kib']}, "
                     f"after last round {rss['after_round_kib'][-1]}")
    if result.get("in_process"):
        lines.append("in-process (WSGI call, no server), CPU us/request and cumulative share:")
        for case, v in result["in_process"].items():
            share = ", ".join(f"{k} {x:.0%}" for k, x in v["share"].items())
            lines.append(f"  {case}: {v['cpu_us_per_request']:.0f} us; {share}")
    for case, prof in result.get("profile", {}).items():
        if "layers" in prof:
            layers = ", ".join(f"{k} {v:.0%}" for k, v in prof["layers"].items())
            lines.append(f"py-spy, {case}, web CPU by layer: {layers}")
            focus = ", ".join(f"{k} {v:.0%}" for k, v in prof["inclusive"].items())
            lines.append(f"  inclusive: {focus}")
        else:
            lines.append(f"profile {case}: {prof.get('skipped')}")
    lines.append("vs bare: req/s ratio, median of per-round ratios (range); CPU vs bare: "
                 "CPU per request of web+Redis+wrk, bare/case; w/o Redis CPU: the same "
                 "without Redis's own CPU (Redis on other cores)")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
