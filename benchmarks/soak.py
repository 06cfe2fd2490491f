"""``soak``: memory of the admitting and worker processes and of Redis over a million orders.

A sale with ``--orders`` units is created; ``--processes`` client processes
(``--threads`` threads each) admit exactly that many orders through
:meth:`FlashSale.place_order`, every order a new buyer, while one
``FlashSale.run_worker()`` process with a no-op hook drains them. The worker
is released once 10% of the orders are admitted, so that Redis's cost of a
*queued* order is measured on 10% of the run; after that it keeps up.

Every 5% of progress (orders admitted, or orders settled by the worker) the
runner records the RSS of each process (``VmRSS``), Redis ``used_memory`` and
the stream length. Reported per process: RSS at start, at 10% of its own
progress (the end of warm-up), at 100% and the maximum, and the least-squares
slope of RSS over orders after warm-up. Tickets stay in Redis until
``FLASHSALE_TICKET_TTL`` (default 7 days), so "after draining" is what a
drained queue still holds, not zero.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
import uuid
from typing import Any

from flask_flashsale.keys import Keys

from . import common
from .common import Processes, Redis, table

SALE = "soak"
#: Verdict threshold: growth after warm-up, bytes per order (see :func:`verdict`).
FLAT_BYTES_PER_ORDER = 8.0
#: ... or total growth after warm-up below one pymalloc arena (1 MiB).
FLAT_KIB = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks soak``."""
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders to admit")
    parser.add_argument("--processes", type=int, default=2, help="admitting processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per admitting process")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: 50,000 orders."""
    args.orders = 50_000


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of ``(orders, kib)`` points, in KiB per order."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def verdict(growth_kib: int, slope_kib_per_order: float) -> str:
    """``flat`` if RSS after warm-up grows by less than 8 B per order, or by under 1 MiB.

    8 B per order is well under the smallest thing a process could keep per
    order (a Python int is 28 B, a buyer id string ~60 B, a dict slot more), so
    any per-order leak shows at 3x the threshold or more; over 900,000 orders
    it still leaves ~7 MiB for the allocator's step-wise growth. Short runs
    (``--quick``) are judged by the 1 MiB floor, one pymalloc arena.
    """
    if slope_kib_per_order * 1024 < FLAT_BYTES_PER_ORDER or growth_kib < FLAT_KIB:
        return "flat"
    return "GROWING"


class Reader(threading.Thread):
    """Reads a child's stdout lines; keeps the first ``RESULT`` payload."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.result: dict[str, Any] | None = None
        self.done = threading.Event()

    def run(self) -> None:
        """Read until EOF."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT "):])
                self.done.set()
        self.done.set()


def start_child(procs: Processes, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a :mod:`benchmarks.soak_proc` role and wait for its ``READY``."""
    proc = procs.start([*common.python_argv(), "-m", "benchmarks.soak_proc", *argv],
                       cwd=common.ROOT, env=common.env_for_children(),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    common.await_ready(proc, f"soak {argv[0]}")
    return proc


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    n = args.orders
    result: dict[str, Any] = {
        "benchmark": "soak",
        "machine": common.machine(),
        "settings": {
            "orders": n,
            "admitting": f"{args.processes} processes x {args.threads} threads, "
                         "place_order, a new buyer per order",
            "worker": "1 process, run_worker() with a no-op hook, released at 10% admitted",
            "ticket_ttl": "FLASHSALE_TICKET_TTL default (7 days)",
            "flat_threshold": f"< {FLAT_BYTES_PER_ORDER:g} B/order after warm-up "
                              f"or < {FLAT_KIB} KiB growth",
        },
    }
    samples: list[dict[str, Any]] = []
    with Processes() as procs:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            from .app import setup_app

            app = setup_app(redis.url)
            with app.app_context():
                app.extensions["flashsale"].ext.create_sale(SALE, stock=n, price="5.00",
                                                            per_user_limit=1)
            keys = Keys("flashsale")
            sale_key, stream = keys.sale(SALE), keys.stream(SALE)
            c = redis.client
            worker = start_child(procs, ["work", "--redis", redis.url])
            worker_reader = Reader(worker)
            worker_reader.start()
            nonce = uuid.uuid4().hex[:8]
            admitters = [
                start_child(procs, ["admit", "--redis", redis.url, "--sale", SALE,
                                   "--threads", str(args.threads), "--nonce", f"{nonce}p{i}",
                                   "--count", str(n // args.processes + (i < n % args.processes))])
                for i in range(args.processes)]
            readers = [Reader(p) for p in admitters]
            for r in readers:
                r.start()
            mem0 = redis.used_memory()

            def sample(label: str) -> dict[str, Any]:
                admitted = n - int(c.hget(sale_key, "remaining") or 0)
                stream_len = int(c.xlen(stream))
                s = {
                    "label": label, "t": round(time.perf_counter() - t0, 2),
                    "admitted": admitted, "stream_len": stream_len,
                    "settled": max(0, admitted - stream_len) if worker_released else 0,
                    "redis_used_memory": redis.used_memory(),
                    "rss_kib": {**{f"admit{i}": common.rss_kib(p.pid)
                                   for i, p in enumerate(admitters)},
                                "worker": common.rss_kib(worker.pid)},
                }
                samples.append(s)
                return s

            t0 = time.perf_counter()
            worker_released = False
            sample("start")
            for p in admitters:
                common.send_go(p)
            marks = (0, 0)
            deadline = time.monotonic() + 1800
            while True:
                time.sleep(0.05)
                admitted = n - int(c.hget(sale_key, "remaining") or 0)
                if not worker_released and admitted >= n // 10:
                    s = sample("queued")
                    result["redis_bytes_per_order_queued"] = (
                        (s["redis_used_memory"] - mem0) / max(1, s["admitted"]))
                    result["queued_at_release"] = s["stream_len"]
                    worker_released = True
                    common.send_go(worker)
                settled = max(0, admitted - int(c.xlen(stream))) if worker_released else 0
                now = (admitted * 20 // n, settled * 20 // n)
                admitters_done = all(r.done.is_set() for r in readers)
                if now != marks:
                    sample(f"{now[0] * 5}% / {now[1] * 5}%")
                    marks = now
                if admitters_done and (settled >= admitted or not worker_released):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("soak did not finish within 30 minutes")
            sample("end")
            result["admitted_s"] = max((r.result or {}).get("wall_s", 0.0) for r in readers)
            result["wall_to_drained_s"] = round(time.perf_counter() - t0, 1)
            for p in admitters:
                common.send_go(p)  # let them exit
            procs.stop(worker)
            worker_reader.done.wait(10)
            time.sleep(0.2)
            mem_end = redis.used_memory()
            statuses: dict[str, int] = {}
            for r in readers:
                for k, v in (r.result or {}).get("statuses", {}).items():
                    statuses[k] = statuses.get(k, 0) + v
            admitted_total = samples[-1]["admitted"]
            result.update({
                "statuses": statuses,
                "admitted": admitted_total,
                "worker": worker_reader.result,
                "redis_used_memory_before": mem0,
                "redis_used_memory_after_drain": mem_end,
                "redis_bytes_per_order_after_drain": (mem_end - mem0) / max(1, admitted_total),
                "tickets_left": sum(1 for _ in c.scan_iter(match=keys.ticket(SALE, "*"),
                                                           count=10_000)),
            })
        finally:
            redis.cleanup()
    result["samples"] = samples
    result["processes"] = analyse(samples, n)
    result["loadavg_at_end"] = common.loadavg()
    return result


def analyse(samples: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """RSS at start / 10% / 100% / max, growth and slope after warm-up, per process."""
    out: dict[str, Any] = {}
    for name in samples[0]["rss_kib"]:
        axis = "settled" if name == "worker" else "admitted"
        live = [(s[axis], s["rss_kib"][name]) for s in samples if s["rss_kib"][name]]
        warm = [(x, y) for x, y in live if x >= n // 10]
        if not warm:
            out[name] = {"skipped": "no sample after warm-up"}
            continue
        at10, at100 = warm[0][1], warm[-1][1]
        k = slope(warm)
        out[name] = {
            "progress": axis,
            "rss_start_kib": live[0][1],
            "rss_10_kib": at10,
            "rss_100_kib": at100,
            "rss_max_kib": max(y for _, y in live),
            "growth_after_warmup_kib": at100 - at10,
            "slope_kib_per_100k": k * 100_000,
            "verdict": verdict(at100 - at10, k),
        }
    return out


def report(result: dict[str, Any]) -> str:
    """The compact tables printed at the end."""
    n = result["settings"]["orders"]
    rows = []
    for name, v in result["processes"].items():
        if "skipped" in v:
            rows.append([name, "-", "-", "-", "-", "-", "-", v["skipped"]])
            continue
        rows.append([name, v["progress"], v["rss_start_kib"] / 1024, v["rss_10_kib"] / 1024,
                     v["rss_100_kib"] / 1024, v["rss_max_kib"] / 1024,
                     v["slope_kib_per_100k"], v["verdict"]])
    lines = [table(["process", "progress", "RSS start MiB", "at 10% MiB", "at 100% MiB",
                    "max MiB", "KiB/100k orders", "verdict"], rows)]
    lines.append("")
    picked = [s for s in result["samples"]
              if s["label"] in ("start", "queued", "end")
              or (s["admitted"] * 10 // n != 0 and s is first_at(result["samples"], s, n))]
    srows = [[s["label"], s["t"], s["admitted"], s["settled"], s["stream_len"],
              (s["redis_used_memory"] - result["redis_used_memory_before"]) / 2**20,
              *(s["rss_kib"][k] / 1024 for k in s["rss_kib"])] for s in picked]
    lines.append(table(["sample (admitted / settled)", "s", "admitted", "settled", "stream",
                        "Redis +MiB", *(f"{k} MiB" for k in result["samples"][0]["rss_kib"])],
                       srows))
    lines.append("")
    bad = {k: v for k, v in result["statuses"].items() if k != "queued"}
    worker = result.get("worker") or {}
    lines.append(f"{result['admitted']:,} of {n:,} orders admitted in {result['admitted_s']:.0f} s"
                 f" ({result['admitted'] / max(result['admitted_s'], 1e-9):,.0f}/s); "
                 f"other answers: {bad or 'none'}; worker handled "
                 f"{worker.get('count', '?'):,} (drained {result['wall_to_drained_s']} s after "
                 f"the start)")
    lines.append(f"Redis per admitted order: {result['redis_bytes_per_order_queued']:.0f} B while "
                 f"queued ({result['queued_at_release']:,} orders in the stream), "
                 f"{result['redis_bytes_per_order_after_drain']:.0f} B after draining "
                 f"({result['tickets_left']:,} tickets kept until FLASHSALE_TICKET_TTL, "
                 f"7 days by default, plus each buyer's entries in the users and buyers hashes)")
    lines.append(f"verdict: flat = RSS after warm-up (10%) grows < "
                 f"{FLAT_BYTES_PER_ORDER:g} B/order (least squares) or < {FLAT_KIB} KiB in all")
    lines.append(f"{result['settings']['admitting']}; worker: {result['settings']['worker']}")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)


def first_at(samples: list[dict[str, Any]], s: dict[str, Any], n: int) -> dict[str, Any] | None:
    """The first sample at ``s``'s 10% step of orders admitted (for the compact table)."""
    step = s["admitted"] * 10 // n
    return next((x for x in samples if x["label"] not in ("start", "queued", "end")
                 and x["admitted"] * 10 // n == step), None)
