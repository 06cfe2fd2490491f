"""A crowd of buyers in one process: ``python -m benchmarks.crowd`` (used by the benchmarks).

Builds the bench app with the requested inventory strategy, starts
``--threads`` threads, prints ``READY`` and waits for a line on stdin, then
each thread calls :meth:`FlashSale.place_order` in a loop, every attempt a new
buyer, until ``--duration`` is over or ``--count`` attempts are made. Prints
``RESULT <json>``: attempts, statuses, latency percentiles, wall time.

Prints ``UNAVAILABLE <why>`` and exits 3 if the app does not actually use the
requested strategy (so no number is ever reported for a strategy that did
not run).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from typing import Any


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 if empty)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def main() -> int:
    """Run one crowd; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--strategy", default="lua")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--sales", required=True, help="comma-separated sale ids")
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0, help="attempts in total (all threads)")
    parser.add_argument("--nonce", required=True)
    args = parser.parse_args()

    from .app import create_app

    app = create_app(FLASHSALE_REDIS_URL=args.redis, FLASHSALE_INVENTORY_STRATEGY=args.strategy)
    state = app.extensions["flashsale"]
    name = getattr(state.strategy, "name", type(state.strategy).__name__)
    if name != args.strategy:
        print(f"UNAVAILABLE FLASHSALE_INVENTORY_STRATEGY={args.strategy!r} is accepted but the "
              f"extension admits with {type(state.strategy).__name__} ({name!r})", flush=True)
        return 3
    ext = state.ext
    sales = args.sales.split(",")
    with app.app_context():
        ext.get_sale(sales[0])  # connect and load what the first call needs
    per_thread = [args.count // args.threads + (i < args.count % args.threads)
                  for i in range(args.threads)]
    results: list[tuple[Counter[str], list[float]]] = []
    go = threading.Event()
    lock = threading.Lock()

    def buyer(index: int) -> None:
        statuses: Counter[str] = Counter()
        latencies: list[float] = []
        rng = random.Random(index)
        prefix = f"{args.nonce}-{index}-"
        quota = per_thread[index] if args.count else 0
        with app.app_context():
            go.wait()
            deadline = time.perf_counter() + args.duration
            n = 0
            while True:
                if quota:
                    if n >= quota:
                        break
                elif time.perf_counter() >= deadline:
                    break
                n += 1
                sale = sales[0] if len(sales) == 1 else rng.choice(sales)
                t0 = time.perf_counter()
                try:
                    status = ext.place_order(sale, f"{prefix}{n}").status
                except Exception as exc:  # counted and reported, never hidden
                    status = f"error:{type(exc).__name__}"
                latencies.append(time.perf_counter() - t0)
                statuses[status] += 1
        with lock:
            results.append((statuses, latencies))

    threads = [threading.Thread(target=buyer, args=(i,), daemon=True) for i in range(args.threads)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    for s, lat in results:
        statuses.update(s)
        latencies.extend(lat)
    latencies.sort()
    out: dict[str, Any] = {
        "attempts": sum(statuses.values()),
        "statuses": dict(statuses),
        "wall_s": wall,
        "latency_ms": {"p50": percentile(latencies, 50) * 1000,
                       "p99": percentile(latencies, 99) * 1000,
                       "max": (latencies[-1] if latencies else 0.0) * 1000},
    }
    counters = getattr(state.strategy, "counters", None)
    if counters is not None and hasattr(counters, "snapshot"):
        out["strategy_stats"] = counters.snapshot()
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
