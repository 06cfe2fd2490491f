"""``worker``: orders/s drained by one worker and by N, with a no-op, SQLite or PostgreSQL hook.

For each run: a sale is filled with ``--orders`` admitted orders through the
public API (:mod:`benchmarks.crowd`), then 1 or ``--workers`` processes run
``FlashSale.run_worker(burst=True)`` until the queue is drained. Throughput is
orders handled divided by the time between the first and the last hook call
(start-up and shutdown excluded). Runs are interleaved (1, N, 1, N...).

The hooks write one row per order, keyed by ``order.id``, committed per order
(SQLite in WAL mode; PostgreSQL at ``--pg``, ``INSERT .. ON CONFLICT DO
NOTHING``, autocommit). The batch hooks (``sqlite-batch``, ``postgres-batch``,
registered with ``order_batch_handler``) write the orders of one worker read
(``FLASHSALE_WORKER_BATCH``, ``--worker-batch``) in one transaction, PostgreSQL
with one ``INSERT ... SELECT * FROM unnest(...) ON CONFLICT (id) DO NOTHING``
(see :mod:`benchmarks.hooks`); the summary gives each batch hook's rate
against its per-order twin measured in the same run. Also reported: Redis
bytes per order while queued and after the drain, and each worker's peak RSS.

``--autoscale``: the time to drain ``--autoscale-orders`` orders (50,000) with a
``--hook-ms`` (1 ms) sleeping hook, by one ``flask flashsale worker`` and by
``flask flashsale worker --autoscale 1,<--autoscale-max>`` with the default
``FLASHSALE_AUTOSCALE_*`` settings, one after the other in one run. The clock
starts when the process is launched (start-up included for both) and stops
when the sale's stream is empty (every order settled); the number of worker
processes is sampled from the registry meanwhile. Written to
``results/worker-autoscale.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import common, hooks
from .common import NotAvailable, Processes, Redis, median, table

DEFAULT_PG = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
TARGET_NOOP_ONE = 5000.0
#: One worker into PostgreSQL with the batch hook (DESIGN.md, performance budget).
TARGET_PG_BATCH_ONE = 10000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks worker``."""
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--orders", type=int, default=30000, help="orders per no-op run")
    parser.add_argument("--db-orders", type=int, default=6000, help="orders per database run")
    parser.add_argument("--batch-orders", type=int, default=20000,
                        help="orders per batch-hook run")
    parser.add_argument("--worker-batch", type=int, default=None,
                        help="FLASHSALE_WORKER_BATCH of the workers (default: the setting's)")
    parser.add_argument("--workers", type=int, default=2, help="N for the N-worker runs")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="run_worker(concurrency=...) in each process")
    parser.add_argument("--hooks",
                        default="noop,sqlite,postgres,sqlite-batch,postgres-batch,"
                                "postgres-batch@128",
                        help="noop, sqlite, postgres, and the batch hooks noop-batch, "
                             "sqlite-batch, postgres-batch; <hook>@N: with "
                             "FLASHSALE_WORKER_BATCH=N (orders per read)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL conninfo")
    parser.add_argument("--profile", action="store_true",
                        help="after the runs, profile one no-op worker with py-spy")
    parser.add_argument("--autoscale", action="store_true",
                        help="instead: drain time, one worker vs flask flashsale worker "
                             "--autoscale 1,MAX")
    parser.add_argument("--autoscale-orders", type=int, default=50000,
                        help="orders to drain in --autoscale mode")
    parser.add_argument("--autoscale-max", type=int, default=4, help="MAX of --autoscale 1,MAX")
    parser.add_argument("--hook-ms", type=float, default=1.0,
                        help="--autoscale mode: the hook sleeps this long per order")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round, small batches."""
    args.rounds = 1
    args.orders = 8000
    args.db_orders = 2000
    args.batch_orders = 6000
    args.autoscale_orders = 8000


def result_name(args: argparse.Namespace) -> str:
    """``worker``, or ``worker-autoscale`` for ``--autoscale``."""
    return "worker-autoscale" if args.autoscale else "worker"


def split_name(name: str, default: int | None) -> tuple[str, int | None]:
    """``postgres-batch@128`` -> ``("postgres-batch", 128)``; without ``@N``: ``default``."""
    hook, _, size = name.partition("@")
    return hook, int(size) if size else default


def hook_spec(name: str, args: argparse.Namespace, tmp: Path) -> str:
    """``noop`` / ``sqlite:<file>`` / ``postgres:<conninfo>`` (``-batch``: the batch hooks).

    Raises NotAvailable if unusable.
    """
    name = split_name(name, None)[0]
    if name in ("noop", "noop-batch"):
        return name
    kind = name.removesuffix("-batch")
    if kind == "sqlite":
        return f"{name}:{tmp / 'bench-orders.sqlite3'}"
    if kind == "postgres":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise NotAvailable("psycopg is not installed: pip install -e '.[bench]'") from None
        spec = f"{name}:{args.pg}"
        try:
            hooks.prepare_table(spec)
        except Exception as exc:
            raise NotAvailable(f"PostgreSQL at {args.pg!r}: {exc}") from None
        return spec
    raise SystemExit(f"unknown hook {name!r}")


def fill(procs: Processes, redis: Redis, sale_id: str, orders: int) -> dict[str, Any]:
    """Create ``sale_id`` with ``orders`` units and admit exactly that many orders."""
    from .app import setup_app

    app = setup_app(redis.url)
    with app.app_context():
        app.extensions["flashsale"].ext.create_sale(sale_id, stock=orders, price="5.00")
    mem0 = redis.used_memory()
    data = common.run_crowds(procs, redis_url=redis.url, processes=2, threads=8,
                             sales=[sale_id], nonce=f"f{uuid.uuid4().hex[:8]}", count=orders)
    queued = data["statuses"].get("queued", 0)
    if queued != orders:
        raise SystemExit(f"filling {sale_id}: {queued} of {orders} admitted: {data['statuses']}")
    return {"mem_before": mem0, "mem_queued": redis.used_memory(), "fill_s": data["wall_s"]}


def drain(procs: Processes, redis: Redis, spec: str, workers: int,
          concurrency: int, profile: Path | None = None,
          worker_batch: int | None = None) -> dict[str, Any]:
    """Start ``workers`` burst workers together; wait until all exit; merge their results.

    ``profile``: record the first worker with py-spy into this file.
    ``worker_batch``: their ``FLASHSALE_WORKER_BATCH`` (default: the setting's).
    """
    argv = [*common.python_argv(), "-m", "benchmarks.worker_proc", "--redis", redis.url,
            "--hook", spec, "--concurrency", str(concurrency)]
    if worker_batch is not None:
        argv += ["--worker-batch", str(worker_batch)]
    started: list[subprocess.Popen[bytes]] = []
    rss_peak: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for p in started:
                rss_peak[p.pid] = max(rss_peak.get(p.pid, 0), common.rss_kib(p.pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        for _ in range(workers):
            started.append(procs.start(argv, cwd=common.ROOT, env=common.env_for_children(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in started:
            common.await_ready(proc, "worker")
        sampler.start()
        spy = None
        if profile is not None:
            spy = common.start_pyspy(started[0].pid, profile, duration=120)
            time.sleep(0.5)
        cpu0 = redis.cpu_seconds()
        for proc in started:
            common.send_go(proc)
        parts = [common.read_result(proc, "worker", 300) for proc in started]
        redis_cpu = redis.cpu_seconds() - cpu0
        if spy is not None:
            spy.wait(30)
    finally:
        stop.set()
        for proc in started:
            procs.stop(proc)
    handled = sum(p["count"] for p in parts)
    active = [p for p in parts if p["count"]]
    first = min(p["first"] for p in active) if active else 0.0
    last = max(p["last"] for p in active) if active else 0.0
    span = max(last - first, 1e-9)
    return {
        "handled": handled,
        "orders_per_s": handled / span if handled > 1 else 0.0,
        "span_s": span,
        "wall_s": max(p["ended"] for p in parts) - min(p["started"] for p in parts),
        "per_worker": [p["count"] for p in parts],
        "redis_cpu_us_per_order": redis_cpu / max(1, handled) * 1e6,
        "worker_rss_peak_kib": [rss_peak.get(p.pid, 0) for p in started],
    }


def queue_state(redis: Redis, sale_id: str) -> dict[str, Any]:
    """Stream length, consumer groups' pending/lag, and ticket statuses (sampled)."""
    c = redis.client
    stream = f"flashsale:{{{sale_id}}}:orders"
    groups = [{"name": g["name"], "pending": g["pending"], "lag": g.get("lag")}
              for g in c.xinfo_groups(stream)] if c.exists(stream) else []
    statuses: dict[str, int] = {}
    for key in c.scan_iter(match=f"flashsale:{{{sale_id}}}:t:*", count=1000):
        s = c.hget(key, "s") or "?"
        statuses[s] = statuses.get(s, 0) + 1
    return {"stream_len": int(c.xlen(stream)) if c.exists(stream) else 0,
            "groups": groups, "tickets": statuses}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    if args.autoscale:
        return run_autoscale(args)
    result: dict[str, Any] = {
        "benchmark": "worker",
        "machine": common.machine(),
        "settings": {
            "workers": f"1 and {args.workers} processes, run_worker(burst=True, "
                       f"concurrency={args.concurrency})",
            "orders": f"{args.orders} per no-op run, {args.db_orders} per database run, "
                      f"{args.batch_orders} per batch-hook database run",
            "worker_batch": args.worker_batch or _default_worker_batch(),
            "rounds": args.rounds,
        },
        "unavailable": {},
    }
    runs: list[dict[str, Any]] = []
    names = [h.strip() for h in args.hooks.split(",") if h.strip()]
    from flask_flashsale import FlashSale

    if not hasattr(FlashSale, "run_worker"):
        why = "FlashSale.run_worker does not exist yet (the worker, issue 3, is not merged)"
        result["unavailable"] = {n: why for n in names}
        names_to_run: list[str] = []
    else:
        names_to_run = names
    with Processes() as procs, tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            for rnd in range(args.rounds):
                for name in names_to_run:
                    if name in result["unavailable"]:
                        continue
                    try:
                        spec = hook_spec(name, args, Path(tmp))
                        for workers in (1, args.workers):
                            runs.append(one_run(procs, redis, name, spec, workers, rnd, args))
                    except NotAvailable as exc:
                        result["unavailable"][name] = str(exc)
            if args.profile and "noop" in names_to_run and "noop" not in result["unavailable"]:
                result["profile"] = profile_worker(procs, redis, args)
        finally:
            redis.cleanup()
    result["runs"] = runs
    result["summary"] = summarise(runs, names, args.workers, result["unavailable"])
    result["loadavg_at_end"] = common.loadavg()
    return result


def _default_worker_batch() -> int:
    from flask_flashsale.config import DEFAULTS

    return int(DEFAULTS["FLASHSALE_WORKER_BATCH"])


def one_run(procs: Processes, redis: Redis, name: str, spec: str, workers: int, rnd: int,
            args: argparse.Namespace) -> dict[str, Any]:
    """Fill a fresh sale, drain it with ``workers`` processes, check nothing was lost."""
    hook, worker_batch = split_name(name, args.worker_batch)
    if hook.startswith("noop"):
        orders = args.orders
    else:
        orders = args.batch_orders if hook.endswith("-batch") else args.db_orders
    # One sale per run (a deleted sale's tickets stay until they expire).
    sale_id = f"w{rnd}-{name.replace('@', '-')}-{workers}"
    hooks.prepare_table(spec)
    mem = fill(procs, redis, sale_id, orders)
    from .strategies import commandstats

    calls0 = commandstats(redis)
    data = drain(procs, redis, spec, workers, args.concurrency, worker_batch=worker_batch)
    calls1 = commandstats(redis)
    # INFO commandstats also counts what scripts run inside Redis; XREADGROUP
    # and EVALSHA are only ever sent by clients, so those two are round trips.
    data["redis_calls_per_order"] = {
        k: round((calls1[k] - calls0.get(k, 0)) / orders, 2)
        for k in sorted(calls1, key=lambda k: calls0.get(k, 0) - calls1[k])[:8]
        if calls1[k] - calls0.get(k, 0) and k != "info"}
    time.sleep(0.2)
    state = queue_state(redis, sale_id)
    mem_after = redis.used_memory()
    rows = hooks.count_rows(spec)
    # A burst worker reads every known sale's stream each turn (one XREADGROUP
    # per sale), so finished sales left in Redis would slow the next runs.
    from .app import setup_app

    app = setup_app(redis.url)
    with app.app_context():
        app.extensions["flashsale"].ext.delete_sale(sale_id)
    return {
        "round": rnd + 1, "hook": name, "workers": workers, "orders": orders,
        "worker_batch": worker_batch or _default_worker_batch(),
        "loadavg": common.loadavg(), **data,
        "rows": rows, "queue_after": state,
        "all_confirmed": state["tickets"].get("confirmed", 0) == orders,
        "redis_bytes_per_order_queued": (mem["mem_queued"] - mem["mem_before"]) / orders,
        "redis_bytes_per_order_after_drain": (mem_after - mem["mem_before"]) / orders,
        "fill_s": mem["fill_s"],
    }


BUCKETS = [
    ("redis-py + socket (read, ticket status, confirm)", "redis/"),
    ("redis-py + socket (read, ticket status, confirm)", "hiredis"),
    ("the hook", "benchmarks/hooks"),
    ("flask app context", "flask/"),
    ("flask app context", "werkzeug/"),
    ("flask_flashsale (worker loop, order building)", "flask_flashsale/"),
]
FOCUS = ["Worker.step", "Worker._handle", "OrderQueue.read", "OrderQueue.ticket_status",
         "OrderQueue.confirm", "Delivery.order", "AppContext.push", "AppContext.pop", "hook",
         "OrderQueue.ticket_statuses", "OrderQueue.confirm_many", "Worker._settle"]


def profile_worker(procs: Processes, redis: Redis, args: argparse.Namespace) -> dict[str, Any]:
    """One no-op worker draining ``--orders`` orders under py-spy: where its CPU goes."""
    import shutil

    if shutil.which("py-spy") is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[bench]')"}
    hooks.prepare_table("noop")
    fill(procs, redis, "wprof", args.orders)  # the only sale left: runs delete theirs
    raw = common.RESULTS / "worker-noop.pyspy.txt"
    raw.unlink(missing_ok=True)
    data = drain(procs, redis, "noop", 1, args.concurrency, profile=raw)
    out = common.summarise_profile(raw, BUCKETS, FOCUS)
    out["orders_per_s_while_profiled"] = data["orders_per_s"]
    return out


def summarise(runs: list[dict[str, Any]], names: list[str], n: int,
              unavailable: dict[str, str]) -> dict[str, Any]:
    """Medians per hook and worker count; the N/1 scaling ratio."""
    out: dict[str, Any] = {}
    for name in names:
        if name in unavailable:
            out[name] = {"unavailable": unavailable[name]}
            continue
        entry: dict[str, Any] = {}
        for workers in (1, n):
            sel = [r for r in runs if r["hook"] == name and r["workers"] == workers]
            if not sel:
                continue
            entry[str(workers)] = {
                "orders_per_s": median([r["orders_per_s"] for r in sel]),
                "handled": sum(r["handled"] for r in sel),
                "orders": sum(r["orders"] for r in sel),
                "all_confirmed": all(r["all_confirmed"] for r in sel),
                "rows_ok": all(r["rows"] in (None, r["orders"]) for r in sel),
                "redis_cpu_us_per_order": median([r["redis_cpu_us_per_order"] for r in sel]),
                "redis_calls_per_order": sel[-1]["redis_calls_per_order"],
                "worker_rss_peak_kib": max(max(r["worker_rss_peak_kib"]) for r in sel),
                "redis_bytes_per_order_queued": median(
                    [r["redis_bytes_per_order_queued"] for r in sel]),
                "redis_bytes_per_order_after_drain": median(
                    [r["redis_bytes_per_order_after_drain"] for r in sel]),
            }
        if "1" in entry and str(n) in entry and entry["1"]["orders_per_s"]:
            entry["scaling"] = entry[str(n)]["orders_per_s"] / entry["1"]["orders_per_s"]
        targets = {"noop": TARGET_NOOP_ONE, "postgres-batch": TARGET_PG_BATCH_ONE}
        hook = split_name(name, None)[0]
        if hook in targets and "1" in entry:
            entry["target_one_worker"] = targets[hook]
            entry["met"] = entry["1"]["orders_per_s"] >= targets[hook]
        out[name] = entry
    # Each batch hook against its per-order twin, from the same run.
    ratios: dict[str, dict[str, float]] = {}
    for name in names:
        twin = split_name(name, None)[0].removesuffix("-batch")
        if twin == split_name(name, None)[0] or not isinstance(out.get(twin), dict):
            continue
        batch, single = out[name], out[twin]
        ratios[name] = {
            workers: batch[workers]["orders_per_s"] / single[workers]["orders_per_s"]
            for workers in ("1", str(n))
            if workers in batch and workers in single and single[workers]["orders_per_s"]
        }
    if ratios:
        out["batch_vs_per_order"] = ratios
    return out


def run_autoscale(args: argparse.Namespace) -> dict[str, Any]:
    """``--autoscale``: drain time of one worker, then of the supervisor, in one run."""
    from flask_flashsale.config import DEFAULTS

    from .app import setup_app

    maximum = args.autoscale_max
    orders = args.autoscale_orders
    spec = f"sleep:{args.hook_ms / 1000:g}"
    result: dict[str, Any] = {
        "benchmark": "worker-autoscale",
        "machine": common.machine(),
        "settings": {
            "orders": orders,
            "hook": f"time.sleep({args.hook_ms:g} ms) per order",
            "fixed": "flask flashsale worker",
            "autoscale": f"flask flashsale worker --autoscale 1,{maximum}",
            "config": {k: v for k, v in DEFAULTS.items()
                       if k.startswith("FLASHSALE_AUTOSCALE_") or k == "FLASHSALE_WORKER_BATCH"},
        },
    }
    runs = []
    with Processes() as procs, tempfile.TemporaryDirectory(prefix="flashsale-bench-") as tmp:
        redis = Redis(procs)
        try:
            result["machine"]["redis"] = redis.version()
            for mode, autoscale in (("fixed", None), ("autoscale", f"1,{maximum}")):
                sale_id = f"as-{mode}"
                fill(procs, redis, sale_id, orders)
                run = drain_cli(procs, redis, sale_id, spec, autoscale, Path(tmp) / f"{mode}.log")
                tickets = queue_state(redis, sale_id)["tickets"]
                runs.append({"mode": mode, "orders": orders,
                             "all_confirmed": tickets.get("confirmed", 0) == orders, **run})
                app = setup_app(redis.url)
                with app.app_context():
                    app.extensions["flashsale"].ext.delete_sale(sale_id)
        finally:
            redis.cleanup()
    fixed, scaled = runs
    result["runs"] = runs
    result["summary"] = {
        "fixed_drain_s": fixed["drain_s"],
        "autoscale_drain_s": scaled["drain_s"],
        "speedup": fixed["drain_s"] / scaled["drain_s"],
        "max_workers_seen": scaled["max_workers"],
        "max_allowed": maximum,
    }
    result["loadavg_at_end"] = common.loadavg()
    return result


def drain_cli(procs: Processes, redis: Redis, sale_id: str, spec: str, autoscale: str | None,
              log: Path) -> dict[str, Any]:
    """Launch ``flask flashsale worker [--autoscale]``; time it until ``sale_id`` is drained.

    Samples the orders left and the worker processes (from the registry)
    every 50 ms, then stops the process group with SIGTERM and records the
    exit status.
    """
    from flask_flashsale.keys import Keys
    from flask_flashsale.registry import live_supervisors, live_workers

    keys = Keys("flashsale")
    stream = keys.stream(sale_id)
    name = f"bench-{sale_id}"
    argv = [*common.python_argv(), "-m", "flask", "--app", "benchmarks.app:create_app",
            "flashsale", "worker", "--name", name]
    if autoscale:
        argv += ["--autoscale", autoscale]
    total = int(redis.client.xlen(stream))
    timeline: list[tuple[float, int, int]] = []  # (seconds, orders left, worker processes)
    first_settled: float | None = None
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = procs.start(argv, cwd=common.ROOT, stdout=out, stderr=subprocess.STDOUT,
                           env=common.env_for_children(BENCH_REDIS_URL=redis.url,
                                                       BENCH_HOOK=spec))
        try:
            while True:
                now = time.perf_counter() - t0
                left = int(redis.client.xlen(stream))
                if autoscale:
                    sup = [s for s in live_supervisors(redis.client, keys) if s.name == name]
                    workers = len(sup[0].children) if sup else 0
                else:
                    workers = len(live_workers(redis.client, keys))
                if not timeline or timeline[-1][2] != workers or left == 0:
                    timeline.append((round(now, 2), left, workers))
                if first_settled is None and left < total:
                    first_settled = now
                if left == 0:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"the worker exited {proc.returncode}: see {log}")
                if now > 900:
                    raise SystemExit(f"not drained after 900 s: {left} orders left")
                time.sleep(0.05)
        finally:
            code = procs.stop(proc)  # SIGTERM to the process group, as a terminal's Ctrl-C
    text = log.read_text(errors="replace")
    return {
        "drain_s": now,
        "first_settled_s": first_settled,
        "orders_per_s": total / now,
        "max_workers": max(w for _, _, w in timeline),
        "workers_timeline": timeline,
        "decisions": [line.split("supervisor ", 1)[1] for line in text.splitlines()
                      if " scaling " in line],
        "exit_code": code,
    }


def report_autoscale(result: dict[str, Any]) -> str:
    """The table printed at the end of ``--autoscale``."""
    rows = []
    fixed_s = result["summary"]["fixed_drain_s"]
    for r in result["runs"]:
        label = result["settings"][r["mode"]].replace("flask flashsale ", "")
        rows.append([label, r["orders"], r["drain_s"], r["orders_per_s"], r["max_workers"],
                     f"{fixed_s / r['drain_s']:.2f}x", "yes" if r["all_confirmed"] else "NO",
                     r["exit_code"]])
    lines = [table(["mode", "orders", "drain s", "orders/s", "peak workers", "vs 1 worker",
                    "all confirmed", "exit"], rows)]
    scaled = result["runs"][-1]
    steps = ", ".join(f"{w} at {t:.1f}s" for t, _, w in scaled["workers_timeline"])
    lines.append(f"autoscale: worker processes {steps}")
    lines += [f"  {d}" for d in scaled["decisions"]]
    config = ", ".join(f"{k.removeprefix('FLASHSALE_')}={v:g}"
                       for k, v in result["settings"]["config"].items())
    lines.append(f"hook: {result['settings']['hook']}; the clock runs from process launch to "
                 f"an empty stream")
    lines.append(f"settings (defaults): {config}")
    lines.append(f"{result['machine']['cores']} cores; load average at start "
                 f"{result['machine']['loadavg_at_start']}, at end {result['loadavg_at_end']}")
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    """The compact table printed at the end."""
    if result["benchmark"] == "worker-autoscale":
        return report_autoscale(result)
    rows = []
    notes = []
    for name, entry in result["summary"].items():
        if name == "batch_vs_per_order":
            continue
        if "unavailable" in entry:
            notes.append(f"{name}: not available yet: {entry['unavailable']}")
            continue
        for workers in sorted(k for k in entry if k.isdigit()):
            v = entry[workers]
            target = ""
            if workers == "1" and "met" in entry:
                verdict = "MET" if entry["met"] else "MISSED"
                target = f">= {entry['target_one_worker']:,.0f} {verdict}"
            scaling = f"{entry['scaling']:.2f}x" if workers != "1" and "scaling" in entry else ""
            rows.append([name, workers, v["orders_per_s"], scaling,
                         f"{v['handled']}/{v['orders']}",
                         "yes" if v["all_confirmed"] and v["rows_ok"] else "NO",
                         v["redis_cpu_us_per_order"], v["worker_rss_peak_kib"] / 1024,
                         v["redis_bytes_per_order_queued"],
                         v["redis_bytes_per_order_after_drain"], target])
    lines = []
    if rows:
        lines.append(table(["hook", "workers", "orders/s", "vs 1", "handled", "all confirmed",
                            "redis us/order", "peak RSS MiB", "B/order queued",
                            "B/order drained", "target"], rows))
    lines += notes
    for name, ratio in result["summary"].get("batch_vs_per_order", {}).items():
        twin = split_name(name, None)[0].removesuffix("-batch")
        per = ", ".join(f"{w} worker(s) {r:.2f}x" for w, r in ratio.items())
        lines.append(f"{name} vs {twin} (per-order hook), same run: {per}")
    if result["settings"].get("worker_batch"):
        lines.append(f"FLASHSALE_WORKER_BATCH={result['settings']['worker_batch']} unless "
                     f"<hook>@N says N (orders per read: what one batch-hook call gets)")
    noop = result["summary"].get("noop", {}).get("1")
    if noop:
        lines.append(f"Redis calls per order, 1 no-op worker (commandstats; XREADGROUP and "
                     f"EVALSHA are client round trips): {noop['redis_calls_per_order']}")
    prof = result.get("profile")
    if prof and "layers" in prof:
        layers = ", ".join(f"{k} {v:.0%}" for k, v in prof["layers"].items())
        lines.append(f"py-spy, one no-op worker, CPU by layer: {layers}")
        focus = ", ".join(f"{k} {v:.0%}" for k, v in prof["inclusive"].items())
        lines.append(f"  inclusive: {focus}")
    elif prof:
        lines.append(f"profile: {prof.get('skipped')}")
    lines.append(f"{result['settings']['workers']}; {result['settings']['orders']}")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
