"""``http``: what the extension costs per request, as ratios to a bare Flask view.

One throwaway Redis and the bench app (:mod:`benchmarks.app`) under one
gunicorn per worker class (``sync``, ``gthread``, ``gevent`` by default, all
serving at once, same workers), and wrk on loopback. Each round runs every
case for every class (class A: bare floor ..., class B: ...); every ratio is
taken within one class and one round, so a noisy machine shifts the cases
being compared together.

Cases:

``bare``      ``GET /bare``: a Flask JSON view that does nothing (the ceiling).
``bare_post`` (not run unless asked) ``POST /bare``: the same view as a
              ``POST``, for what the method alone costs (the order and
              sold-out cases are POST requests).
``blueprint_bare`` the bare view as a ``POST`` shaped like the order route:
              in a blueprint under a prefix, with a ``<sale_id>`` converter and
              one no-op ``before_request`` hook. ``sold_out / blueprint_bare``
              is what the sold-out answer costs beyond Flask's machinery for
              a route of that shape.
``floor``     ``POST /floor``: the bare view plus one raw round trip of a trivial
              script (``EVALSHA`` of ``return 1``, raw socket per thread or
              greenlet, command packed up front, hiredis reader): the cost no
              admission can avoid. ``order / floor`` is the share of that
              budget the order path reaches (target: >= 0.9x).
``floor_redis_py`` (not run unless asked) the same script through redis-py on
              the extension's client: what the client library adds.
``raw_admission`` the bare view plus one raw round trip (as ``floor``) of the
              real admission script, with the very keys and arguments an
              order sends (a new buyer and ticket each time): the order's
              Redis work with none of the extension's Python around it. No
              order path written in Python can beat it, so
              ``raw_admission / floor`` bounds ``order / floor``.
``detail``    ``GET /api/flash-sales/hot``: one sale's JSON.
``order``     ``POST /api/flash-sales/hot/order`` on a sale with 10^9 stock,
              every request a new buyer (admission cost: one EVALSHA).
``sold_out``  ``POST`` on a sold-out sale (the fast path; target >= 0.97x bare).

Redis's cost of an admission is reported two ways per class: Redis's own CPU
(``INFO cpu``) per request, and ``EVALSHA`` microseconds per call from
``INFO commandstats`` (the script's run inside Redis, commands it calls
included).

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
    "bare_post": ("POST", "/bare", "200"),
    "blueprint_bare": ("POST", "/bench/blueprint-bare/hot/order", "200"),
    "floor": ("POST", "/floor", "200"),
    "floor_redis_py": ("POST", "/floor-redis-py", "200"),
    "raw_admission": ("POST", "/raw-admission", "200"),
    "detail": ("GET", "/api/flash-sales/hot", "200"),
    "order": ("POST", "/api/flash-sales/hot/order", "202"),
    "sold_out": ("POST", "/api/flash-sales/gone/order", "409:sold_out"),
}
DEFAULT_CASES = ["bare", "blueprint_bare", "floor", "raw_admission", "detail", "order",
                 "sold_out"]
#: case -> (reference case, the ratio case/reference must reach), per worker class
TARGETS = {"order": ("floor", 0.9), "sold_out": ("bare", 0.97)}
WORKER_CLASSES = ["sync", "gthread", "gevent"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks http``."""
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds")
    parser.add_argument("--duration", type=float, default=3, help="seconds per case per round")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-classes", default=",".join(WORKER_CLASSES),
                        help="comma-separated gunicorn worker classes, each its own server")
    parser.add_argument("--threads", type=int, default=4,
                        help="gunicorn threads per worker (gthread)")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated cases among {', '.join(CASES)}")
    parser.add_argument("--redis-cpus", default="",
                        help="pin Redis to these CPUs (e.g. 1); with --web-cpus and "
                             "--wrk-cpus, Redis on its own core as in production")
    parser.add_argument("--web-cpus", default="", help="pin the gunicorn servers to these CPUs")
    parser.add_argument("--wrk-cpus", default="", help="pin wrk to these CPUs")
    parser.add_argument(
        "--profile", nargs="?", const="order,sold_out", default="",
        help="after the rounds, profile these cases' gunicorn workers with py-spy "
             "(default: order,sold_out)",
    )


def result_name(args: argparse.Namespace) -> str:
    """``http``, or ``http-pinned`` for a run with CPUs pinned (``--*-cpus``)."""
    return "http-pinned" if pinned(args) else "http"


def pinned(args: argparse.Namespace) -> dict[str, set[int] | None]:
    """The CPUs given to Redis, the web servers and wrk (empty: none pinned)."""
    cpus = {who: common.parse_cpus(getattr(args, f"{who}_cpus", ""))
            for who in ("redis", "web", "wrk")}
    return {who: c for who, c in cpus.items() if c}


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round of 1 s per case and class, no warm-up runs (~30 s)."""
    args.rounds = 1
    args.duration = 1
    args.warm_up = False


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
                 args: argparse.Namespace, out_dir: Path, label: str = "") -> dict[str, Any]:
    """Run ``case`` under ``py-spy record`` and summarise where web CPU goes."""
    raw = out_dir / f"http-{label}{case}.pyspy.txt"
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
    classes = [c.strip() for c in args.worker_classes.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown or "bare" not in cases:
        raise SystemExit(f"cases must include 'bare' and be among {', '.join(CASES)}")
    if not classes or len(set(classes)) != len(classes):
        raise SystemExit("--worker-classes: one or more distinct gunicorn worker classes")
    warm_up = getattr(args, "warm_up", True)
    per_class = -(-args.connections // args.workers)
    cpus = pinned(args)
    result: dict[str, Any] = {
        "benchmark": "http",
        "machine": common.machine(),
        "settings": {
            "server": {
                cls: f"gunicorn {cls}, {args.workers} workers"
                     + (f" x {args.threads} threads" if cls == "gthread" else "")
                     + (f" x {per_class} connections" if cls in ("gevent", "eventlet") else "")
                     + ", benchmarks.app:create_app()"
                for cls in classes
            },
            "load": f"wrk -t{args.wrk_threads} -c{args.connections}, keep-alive, "
                    f"{args.duration:g} s per case, {args.rounds} interleaved rounds",
            "order": ["lua strategy", "1 EVALSHA per order", "distinct X-User per request"],
            "floor": "raw socket per thread/greenlet, pre-packed EVALSHA, hiredis reader",
            "cpus": {who: sorted(c) for who, c in cpus.items()} or "not pinned",
        },
        "worker_classes": classes,
        "cases": cases,
    }
    rounds: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            setup_sales(redis.url)
            servers: dict[str, tuple[int, str, list[int], Path]] = {}
            for cls in classes:
                log = Path(redis.dir) / f"gunicorn-{cls}.log"
                # (gunicorn turns sync with --threads > 1 into gthread: 1 thread there.)
                master, base = common.start_gunicorn(
                    procs, redis_url=redis.url, workers=args.workers, worker_class=cls,
                    threads=args.threads if cls == "gthread" else 1, log=log,
                    worker_connections=per_class,
                )
                servers[cls] = (master.pid, base, common.children(master.pid), log)
                if "web" in cpus:
                    for pid in (master.pid, *servers[cls][2]):
                        common.pin(pid, cpus["web"])
            if "redis" in cpus:
                common.pin(redis.proc.pid, cpus["redis"])
            result["probes"] = {cls: {c: probe(servers[cls][1], c) for c in cases}
                                for cls in classes}
            if warm_up:  # imports, pools, script caches
                for cls in classes:
                    for case in cases:
                        method, path, _ = CASES[case]
                        common.run_wrk(servers[cls][1], method=method, path=path,
                                       nonce=f"w{uuid.uuid4().hex[:6]}", duration=1,
                                       connections=args.connections, threads=args.wrk_threads,
                                       cpus=cpus.get("wrk"))
            rss: dict[str, Any] = {cls: {"start_kib": [common.rss_kib(p) for p in servers[cls][2]]}
                                   for cls in classes}
            admitted_total = 0
            mem_delta_total = 0
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for cls in classes:
                    _, base, workers, _ = servers[cls]
                    per_case: dict[str, Any] = {}
                    for case in cases:
                        data = run_case(redis, base, workers, case, args, nonce=f"r{rnd}{cls}")
                        if case == "order":
                            admitted_total += data["good"]
                            mem_delta_total += data.pop("memory_delta")
                        per_case[case] = data
                    add_ratios(per_case)
                    row[cls] = per_case
                rounds.append(row)
                for cls in classes:
                    rss[cls].setdefault("after_round_kib", []).append(
                        [common.rss_kib(p) for p in servers[cls][2]])
            result["rounds"] = rounds
            result["web_rss"] = rss
            result["redis_memory"] = redis_memory(redis, admitted_total, mem_delta_total)
            profiled = [c.strip() for c in args.profile.split(",") if c.strip() in CASES]
            if profiled:
                result["in_process"] = profile_in_process(redis.url, cases)
                result["profile"] = {
                    cls: {c: profile_case(c, servers[cls][1], servers[cls][0], 10, args,
                                          common.RESULTS, f"{cls}-") for c in profiled}
                    for cls in classes}
            for cls in classes:
                log = servers[cls][3]
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                if "Traceback" in tail or "ERROR" in tail:
                    result.setdefault("server_log_tail", {})[cls] = tail
        finally:
            redis.cleanup()
    result["summary"] = {cls: summarise(cases, [r[cls] for r in rounds]) for cls in classes}
    result["loadavg_at_end"] = common.loadavg()
    return result


def evalsha_stats(redis: Redis) -> tuple[int, int]:
    """``(calls, usec)`` of ``EVALSHA`` so far (``INFO commandstats``)."""
    stats = redis.client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def run_case(redis: Redis, base: str, workers: list[int], case: str,
             args: argparse.Namespace, *, nonce: str) -> dict[str, Any]:
    """One wrk run of ``case`` against one server: rates, latency and CPU per request."""
    method, path, expected = CASES[case]
    mem0 = redis.used_memory() if case == "order" else 0
    rcpu0 = redis.cpu_seconds()
    calls0, usec0 = evalsha_stats(redis)
    wcpu0 = common.cpu_seconds(workers)
    data = common.run_wrk(
        base, method=method, path=path, nonce=f"{nonce}{uuid.uuid4().hex[:6]}",
        duration=args.duration, connections=args.connections, threads=args.wrk_threads,
        cpus=pinned(args).get("wrk"),
    )
    n = max(1, data["requests"])
    calls1, usec1 = evalsha_stats(redis)
    data["redis_cpu_us_per_req"] = (redis.cpu_seconds() - rcpu0) / n * 1e6
    data["web_cpu_us_per_req"] = (common.cpu_seconds(workers) - wcpu0) / n * 1e6
    data["wrk_cpu_us_per_req"] = data.pop("cpu_s") / n * 1e6
    data["evalsha_calls"] = calls1 - calls0
    data["evalsha_us_per_call"] = (usec1 - usec0) / (calls1 - calls0) if calls1 > calls0 else None
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    good = int(data["statuses"].get(expected, 0))
    sock = sum(v for k, v in data["errors"].items() if k != "status")
    data["good"] = good
    data["errors_total"] = data["requests"] - good + sock
    if case == "order":
        delta = redis.used_memory() - mem0
        data["redis_bytes_per_order"] = delta / max(1, good)
        data["memory_delta"] = delta
    return data


def add_ratios(row: dict[str, Any]) -> None:
    """Ratios of each case to ``bare`` (and ``floor``) of the same class and round."""
    for case, data in row.items():
        data["ratio"] = data["rps"] / row["bare"]["rps"]
        if "floor" in row:
            data["vs_floor"] = data["rps"] / row["floor"]["rps"]
        if "raw_admission" in row:
            data["vs_raw_admission"] = data["rps"] / row["raw_admission"]["rps"]
        if "blueprint_bare" in row:
            data["vs_blueprint_bare"] = data["rps"] / row["blueprint_bare"]["rps"]
        # CPU spent per request by everything on the box (web workers, Redis,
        # wrk): other load steals time, not CPU per request, so this ratio is
        # steadier than req/s on a shared machine.
        cpu = {c: row[c]["web_cpu_us_per_req"] + row[c]["redis_cpu_us_per_req"]
               + row[c]["wrk_cpu_us_per_req"] for c in (case, "bare")}
        data["cpu_ratio"] = cpu["bare"] / cpu[case]
        # The same without Redis's own CPU: Redis on its own core/host.
        data["cpu_ratio_redis_elsewhere"] = (
            cpu["bare"] - row["bare"]["redis_cpu_us_per_req"]) / (
            cpu[case] - row[case]["redis_cpu_us_per_req"])


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
    """One worker class: medians over rounds of req/s, latency, errors, ratios."""
    out: dict[str, Any] = {}
    for case in cases:
        runs = [r[case] for r in rounds]
        ratios = [r["ratio"] for r in runs]
        evalsha = [r["evalsha_us_per_call"] for r in runs if r["evalsha_us_per_call"] is not None]
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
            "evalsha_us_per_call": median(evalsha) if evalsha else None,
            "evalsha_per_req": sum(r["evalsha_calls"] for r in runs)
                               / max(1, sum(r["requests"] for r in runs)),
            "wrk_cpu_us_per_req": median([r["wrk_cpu_us_per_req"] for r in runs]),
        }
        if "floor" in cases:
            out[case]["vs_floor"] = median([r["vs_floor"] for r in runs])
        if "raw_admission" in cases:
            out[case]["vs_raw_admission"] = median([r["vs_raw_admission"] for r in runs])
        if "blueprint_bare" in cases:
            out[case]["vs_blueprint_bare"] = median([r["vs_blueprint_bare"] for r in runs])
    for case, (reference, target) in TARGETS.items():
        if case in out and reference in cases:
            ratio = out[case]["ratio"] if reference == "bare" else out[case]["vs_floor"]
            out[case]["target"] = {"vs": reference, "ratio": target, "met": ratio >= target}
    return out


def _ratio(s: dict[str, Any], case: str, key: str) -> str:
    """``0.93x``, with the target's verdict when ``key`` is the one the target is on."""
    if case not in s or key not in s[case]:
        return "-"
    v = s[case]
    text = f"{v[key]:.2f}x"
    target = v.get("target")
    if target and key == ("ratio" if target["vs"] == "bare" else "vs_floor"):
        text += f" (>= {target['ratio']}x {'MET' if target['met'] else 'MISSED'})"
    return text


def report(result: dict[str, Any]) -> str:
    """One table per worker class, then the targets side by side."""
    lines: list[str] = []
    summary = result["summary"]
    for cls, s in summary.items():
        rows = []
        for case, v in s.items():
            floor = f"{v['vs_floor']:.2f}x" if "vs_floor" in v else "-"
            rows.append([case, v["rps"], v["p50_ms"], v["p99_ms"], v["requests"], v["errors"],
                         f"{v['ratio']:.2f}x ({v['ratio_min']:.2f}-{v['ratio_max']:.2f})", floor,
                         f"{v['cpu_ratio']:.2f}x", v["web_cpu_us_per_req"],
                         v["redis_cpu_us_per_req"], v["evalsha_per_req"],
                         v["evalsha_us_per_call"], v["wrk_cpu_us_per_req"]])
        cpus = result["settings"].get("cpus", "not pinned")
        pins = "" if cpus == "not pinned" else "; CPUs " + ", ".join(
            f"{who} {','.join(map(str, c))}" for who, c in cpus.items())
        lines.append(f"[{cls}] {result['settings']['server'][cls]}{pins}")
        lines.append(table(["case", "req/s", "p50 ms", "p99 ms", "requests", "errors",
                            "vs bare (min-max)", "vs floor", "CPU vs bare", "web us/req",
                            "redis us/req", "EVALSHA/req", "EVALSHA us", "wrk us/req"], rows))
        lines.append("")
    rows = []
    for cls, s in summary.items():
        order = s.get("order", {})
        rows.append([cls, _ratio(s, "order", "ratio"), _ratio(s, "order", "vs_floor"),
                     _ratio(s, "raw_admission", "vs_floor"),
                     _ratio(s, "order", "vs_raw_admission"),
                     _ratio(s, "sold_out", "ratio"), _ratio(s, "sold_out", "vs_blueprint_bare"),
                     _ratio(s, "blueprint_bare", "ratio"), _ratio(s, "floor", "ratio"),
                     order.get("evalsha_us_per_call"), order.get("redis_cpu_us_per_req")])
    lines.append(table(["class", "order/bare", "order/floor", "raw_admission/floor",
                        "order/raw_admission", "sold_out/bare", "sold_out/blueprint_bare",
                        "blueprint_bare/bare", "floor/bare",
                        "Redis EVALSHA us/admission", "Redis CPU us/admission"], rows))
    mem = result.get("redis_memory", {})
    if mem.get("bytes_per_order") is not None:
        lines.append(
            f"Redis per admitted order: {mem['bytes_per_order']:.0f} B "
            f"(ticket key {mem.get('ticket_key_bytes')} B, stream "
            f"{mem.get('stream_bytes_per_entry')} B/entry, users hash "
            f"{mem.get('users_hash_bytes_per_buyer')} B/buyer), target < 1024 B")
    for cls, rss in result.get("web_rss", {}).items():
        if rss.get("after_round_kib"):
            lines.append(f"{cls} worker RSS KiB: start {rss['start_kib']}, "
                         f"after last round {rss['after_round_kib'][-1]}")
    if result.get("in_process"):
        lines.append("in-process (WSGI call, no server), CPU us/request and cumulative share:")
        for case, v in result["in_process"].items():
            share = ", ".join(f"{k} {x:.0%}" for k, x in v["share"].items())
            lines.append(f"  {case}: {v['cpu_us_per_request']:.0f} us; {share}")
    for cls, profiles in result.get("profile", {}).items():
        for case, prof in profiles.items():
            if "layers" in prof:
                layers = ", ".join(f"{k} {v:.0%}" for k, v in prof["layers"].items())
                lines.append(f"py-spy, {cls}, {case}, web CPU by layer: {layers}")
                focus = ", ".join(f"{k} {v:.0%}" for k, v in prof["inclusive"].items())
                lines.append(f"  inclusive: {focus}")
            else:
                lines.append(f"profile {cls} {case}: {prof.get('skipped')}")
    lines.append("Ratios: median of per-round ratios within one worker class (range); "
                 "CPU vs bare: CPU per request of web+Redis+wrk, bare/case; redis us/req: "
                 "Redis process CPU per request; EVALSHA/req: calls per request, EVALSHA us: "
                 "usec per call (INFO commandstats)")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
