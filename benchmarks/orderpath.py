"""``orderpath``: the extension's own Python per order, and Redis's CPU per admission.

No server and no sockets but Redis: the bench app (:mod:`benchmarks.app`) is
called straight through WSGI, one request after another, and each case is
timed in CPU microseconds per request (``time.process_time``). Cases:

``bare``         ``GET /bare``: a Flask JSON view that does nothing.
``blueprint_bare`` the bare view as a ``POST`` in a blueprint shaped like the
                 order route (prefix, ``<sale_id>`` converter, one no-op
                 ``before_request`` hook): Flask's share of ``order_python``
                 and ``sold_out``.
``floor``        ``POST /floor``: the bare view plus one raw ``EVALSHA`` of a
                 trivial script (a socket, the command packed once, hiredis):
                 what no admission can avoid, for ``order - floor``.
``raw_admission`` ``POST /raw-admission``: the bare view plus the order's own
                 admission script (same keys and arguments) on the same raw
                 round trip as ``floor``: ``order - raw_admission`` is the
                 extension's Python plus its client (:mod:`fastcall`).
``order``        ``POST`` an order (a new buyer each time, 10^9 stock): the whole
                 request, the ``EVALSHA`` round trip included.
``order_python`` the same with the admission script's call replaced by a canned
                 ``queued`` reply: the Python of the order path outside the Redis
                 call (what ``order_python - bare`` is, the extension costs).
``sold_out``     ``POST`` on a sold-out sale (answered from memory, no Redis).

Then Redis's side of one admission: ``INFO commandstats`` reset, ``--admissions``
orders admitted through :meth:`FlashSale.place_order`, and the ``evalsha``
``usec_per_call`` read back, with the commands the script ran per admission
(``INFO commandstats`` counts those too).

``--profile CASE`` prints the top of a cProfile of that case (by own time).
Numbers taken on a busy machine move together; compare cases of one run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

from .common import Processes, Redis, median, table

#: name -> (method, path, expected status)
CASES: dict[str, tuple[str, str, int]] = {
    "bare": ("GET", "/bare", 200),
    "blueprint_bare": ("POST", "/bench/blueprint-bare/hot/order", 200),
    "floor": ("POST", "/floor", 200),
    "raw_admission": ("POST", "/raw-admission", 200),
    "order": ("POST", "/api/flash-sales/hot/order", 202),
    "order_python": ("POST", "/api/flash-sales/hot/order", 202),
    "sold_out": ("POST", "/api/flash-sales/gone/order", 409),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks orderpath``."""
    parser.add_argument("--requests", type=int, default=5000, help="requests per case per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--admissions", type=int, default=20000,
                        help="admissions for Redis's usec_per_call")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--profile", default="", help="cProfile this case and print its top")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: small numbers."""
    args.requests = 1000
    args.rounds = 1
    args.admissions = 2000


def _caller(app: Any) -> Callable[[str, str, int], None]:
    counter = itertools.count()

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        start_response.status = int(status[:3])  # type: ignore[attr-defined]
        return lambda data: None

    def call(method: str, path: str, expected: int) -> None:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
            "CONTENT_LENGTH": "0", "HTTP_HOST": "bench",
            "HTTP_X_USER": f"orderpath-{next(counter)}", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
        }
        body = app(environ, start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()
        if start_response.status != expected:  # type: ignore[attr-defined]
            raise SystemExit(f"{method} {path}: {start_response.status}, "  # type: ignore[attr-defined]
                             f"expected {expected}")

    return call


def _canned(keys: Any, args: Any) -> list[Any]:
    """The admission script's reply to a queued order, without Redis."""
    return ["queued", args[2], 999, 0]


def commandstats(client: Any) -> dict[str, dict[str, float]]:
    """``INFO commandstats`` as ``{command: {calls, usec, usec_per_call}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in client.info("commandstats").items():
        out[key.removeprefix("cmdstat_")] = {
            k: float(value[k]) for k in ("calls", "usec", "usec_per_call")}
    return out


def redis_side(redis: Redis, ext: Any, app: Any, n: int) -> dict[str, Any]:
    """Redis CPU per admission: evalsha ``usec_per_call`` over ``n`` admissions."""
    client = redis.client
    with app.app_context():
        for i in range(200):  # script loaded, pools warm
            ext.place_order("hot", f"warm-{i}")
        client.config_resetstat()
        cpu0 = redis.cpu_seconds()
        for i in range(n):
            assert ext.place_order("hot", f"redis-side-{i}").status == "queued"
        cpu = (redis.cpu_seconds() - cpu0) / n * 1e6
    stats = commandstats(client)
    evalsha = stats.get("evalsha", {"calls": 0, "usec": 0, "usec_per_call": 0})
    inner = {name: round(v["calls"] / n, 2) for name, v in sorted(stats.items())
             if name not in ("evalsha", "config|resetstat", "info")}
    return {
        "admissions": n,
        "evalsha_calls": int(evalsha["calls"]),
        "evalsha_usec_per_call": round(evalsha["usec_per_call"], 2),
        "redis_cpu_us_per_admission": round(cpu, 1),
        "inner_commands_per_admission": inner,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    from .app import create_app

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if set(cases) - set(CASES):
        raise SystemExit(f"cases must be among {', '.join(CASES)}")
    result: dict[str, Any] = {"benchmark": "orderpath", "requests": args.requests,
                              "rounds": args.rounds}
    with Processes() as procs:
        redis = Redis(procs)
        try:
            app = create_app(FLASHSALE_REDIS_URL=redis.url)
            ext = app.extensions["flashsale"].ext
            state = app.extensions["flashsale"]
            with app.app_context():
                ext.create_sale("hot", stock=10**9, price="9.99", per_user_limit=1)
                ext.create_sale("gone", stock=1, price="9.99", per_user_limit=1)
                assert ext.place_order("gone", "first-buyer").status == "queued"
            call = _caller(app)
            real_script = state.strategy._script

            def run_case(case: str, n: int) -> None:
                method, path, expected = CASES[case]
                state.strategy._script = _canned if case == "order_python" else real_script
                try:
                    for _ in range(n):
                        call(method, path, expected)
                finally:
                    state.strategy._script = real_script

            for case in cases:
                run_case(case, 300)  # warm-up
            times: dict[str, list[float]] = {c: [] for c in cases}
            for _ in range(args.rounds):
                for case in cases:
                    t0 = time.process_time()
                    run_case(case, args.requests)
                    times[case].append((time.process_time() - t0) / args.requests * 1e6)
            result["cpu_us_per_request"] = {c: round(median(v), 1) for c, v in times.items()}
            result["cpu_us_all_rounds"] = {c: [round(x, 1) for x in v] for c, v in times.items()}
            result["redis"] = redis_side(redis, ext, app, args.admissions)
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                run_case(args.profile, args.requests)
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
                result["profile_text"] = text.getvalue()
            state.cache.stop()
        finally:
            redis.cleanup()
    return result


def report(result: dict[str, Any]) -> str:
    """The table printed at the end."""
    cpu = result["cpu_us_per_request"]
    bare = cpu.get("bare")
    rows = [[case, us, f"{us - bare:.1f}" if bare is not None else "-",
             f"{bare / us:.2f}x" if bare else "-"] for case, us in cpu.items()]
    lines = [table(["case", "CPU us/request", "over bare", "bare/case"], rows)]
    r = result["redis"]
    lines.append(
        f"Redis: {r['admissions']} admissions, evalsha usec_per_call "
        f"{r['evalsha_usec_per_call']}, redis-server CPU {r['redis_cpu_us_per_admission']} "
        f"us/admission; commands the script ran per admission: "
        + ", ".join(f"{k} {v:g}" for k, v in r["inner_commands_per_admission"].items()))
    if result.get("profile_text"):
        lines.append(result["profile_text"])
    lines.append(f"(median of {result['rounds']} rounds of {result['requests']} requests)")
    return "\n".join(lines)
