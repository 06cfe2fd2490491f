"""``chaos``: a flash sale under faults, real processes, every answer checked.

Each scenario starts its own world on 127.0.0.1: a ``redis-server`` with
``--appendonly yes --appendfsync everysec``, gunicorn (``--web-workers``
``gthread`` processes) serving :mod:`benchmarks.chaos_app`, ``--workers``
``flask flashsale worker`` processes kept alive by a small supervisor (like
systemd's ``Restart=always``: a worker that exits is started again, and
counted), and a host database (PostgreSQL at ``--pg``, else SQLite in WAL
mode) whose order table is keyed by the order id. Crowd processes
(:mod:`benchmarks.chaos_crowd`) then make ``--attempts`` order attempts on
``--stock`` units and record every HTTP answer. Once ``--trigger`` of the
stock is sold, the harness injects the scenario's fault, on real pids.

After the crowd: the queue is drained, and late buyers take whatever stock
came back until the sale is sold out again (so a unit given back by mistake
is sold twice and shows), in rounds until nothing more comes back. Then the
workers are stopped and :func:`benchmarks.chaos_check.check` judges the
answers against what Redis and the host database hold.

With ``--payment-timeout S`` every scenario runs on a sale with that payment
timeout (results in ``chaos-payments.json``): the crowds pay ``--pay-share``
of their tickets through the chaos app's payment endpoint (some twice, some
around or after ``pay_by``, see :mod:`benchmarks.chaos_crowd`), the rest
expire and the expiry hook marks their rows; "drained" then also means that
no hold is left in the deadline index (every ``pay_by`` has passed and the
workers expired what was unpaid), and the late buyers (and the poison order)
pay at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib

from flask_flashsale.keys import Keys
from flask_flashsale.orders import GROUP
from flask_flashsale.registry import live_workers

from . import common
from .chaos_app import HostDB
from .chaos_check import Calls, State, TicketState, check
from .chaos_crowd import Client
from .common import Processes, Redis, table
from .worker_bench import DEFAULT_PG

#: The buyer whose order kills the worker that handles it (scenario ``poison``).
POISON_BUYER = "poison-buyer"
#: A supervisor gives up on a worker slot after this many restarts.
MAX_RESTARTS = 100
#: Late-buyer rounds after the crowd (each: drain, then buy what came back).
LATE_ROUNDS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks chaos``."""
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from: " + ", ".join(SCENARIOS))
    parser.add_argument("--stock", type=int, default=1000)
    parser.add_argument("--attempts", type=int, default=20000, help="order attempts per scenario")
    parser.add_argument("--buyers", type=int, default=8000, help="size of the buyer pool")
    parser.add_argument("--per-user-limit", type=int, default=2)
    parser.add_argument("--crowds", type=int, default=2, help="crowd processes")
    parser.add_argument("--threads", type=int, default=12, help="threads per crowd process")
    parser.add_argument("--web-workers", type=int, default=3, help="gunicorn gthread workers")
    parser.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--workers", type=int, default=2, help="flask flashsale worker processes")
    parser.add_argument("--trigger", type=float, default=0.25,
                        help="share of the stock sold when the fault is injected")
    parser.add_argument("--claim-idle", type=float, default=1.5, help="FLASHSALE_CLAIM_IDLE")
    parser.add_argument("--hook-ms", type=float, default=1.0, help="host work per hook call")
    parser.add_argument("--fail-rate", type=float, default=0.3,
                        help="share of hook calls that raise (scenario hook-fail)")
    parser.add_argument("--pause", type=float, default=3.0,
                        help="seconds Redis stays SIGSTOPped (redis-stop) or down (redis-kill)")
    parser.add_argument("--max-crowd-seconds", type=float, default=120.0,
                        help="crowds start no attempt after this long")
    parser.add_argument("--drain-timeout", type=float, default=90.0,
                        help="upper bound on draining the queue after the crowd")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL conninfo of the host DB")
    parser.add_argument("--sqlite", action="store_true",
                        help="use SQLite (WAL) as the host DB even if PostgreSQL is there")
    parser.add_argument("--history-dir", default=None,
                        help="where the answer histories and logs go (default: a new temp dir)")
    parser.add_argument("--payment-timeout", type=float, default=None, metavar="S",
                        help="run on a sale with this payment timeout (s): buyers pay or "
                             "their holds expire; results in chaos-payments.json")
    parser.add_argument("--pay-share", type=float, default=0.6,
                        help="with --payment-timeout: share of the admitted tickets paid")
    parser.add_argument("--twice-share", type=float, default=0.2,
                        help="with --payment-timeout: share of the payments delivered twice")
    parser.add_argument("--late-share", type=float, default=0.15,
                        help="with --payment-timeout: share of the payments made around or "
                             "after pay_by")


def result_name(args: argparse.Namespace) -> str:
    """``chaos``, or ``chaos-payments`` with ``--payment-timeout``."""
    return "chaos" if args.payment_timeout is None else "chaos-payments"


def quick(args: argparse.Namespace) -> None:
    """``--quick``: 200 units, 4,000 attempts per scenario (~1 minute in all)."""
    args.stock = 200
    args.attempts = 4000
    args.buyers = 1600
    args.threads = 8
    args.claim_idle = 1.0
    args.pause = 2.0
    args.drain_timeout = 45.0
    args.max_crowd_seconds = 40.0


# -- the run of one scenario ------------------------------------------------------------------


class Supervisor:
    """Keeps ``n`` queue workers running: one that exits is started again (and counted).

    Like systemd's ``Restart=always`` with ``RestartSec=100ms``. :meth:`stop`
    ends the loop first, then stops each worker by pid (SIGTERM, then SIGKILL).
    """

    def __init__(self, procs: Processes, argv: list[str], env: dict[str, str],
                 logs: Path, n: int) -> None:
        self.procs = procs
        self.argv = argv
        self.env = env
        self.logs = logs
        self.workers: list[subprocess.Popen[bytes]] = []
        #: Restarts so far, and the exit codes seen (negative: killed by that signal).
        self.restarts = 0
        self.exits: Counter[int] = Counter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="supervisor")
        for i in range(n):
            self.workers.append(self._spawn(i))
        self._thread.start()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        with open(self.logs.with_name(f"{self.logs.name}{slot}.log"), "ab") as log:
            return self.procs.start(self.argv, cwd=common.ROOT, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT)

    def _loop(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                for slot, proc in enumerate(self.workers):
                    if proc.poll() is None or self._stopping.is_set():
                        continue
                    self.exits[proc.returncode] += 1
                    self.procs.stop(proc)
                    if self.restarts < MAX_RESTARTS:
                        self.restarts += 1
                        self.workers[slot] = self._spawn(slot)

    def pids(self) -> list[int]:
        """The live workers' pids."""
        with self._lock:
            return [p.pid for p in self.workers if p.poll() is None]

    def stop(self) -> None:
        """Stop supervising, then stop every worker (the order in hand is finished)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join(5)
        with self._lock:
            for proc in self.workers:
                code = self.procs.stop(proc)
                if code not in (0, None, -signal.SIGTERM):
                    self.exits[code] += 1


@dataclass
class Run:
    """One scenario's world: what a fault needs to reach, and what the harness recorded."""

    args: argparse.Namespace
    sale: str
    procs: Processes
    redis: Redis
    web: subprocess.Popen[bytes]
    base: str
    supervisor: Supervisor
    #: The harness's own orders (poison order, late buyers), in history format.
    records: list[dict[str, Any]] = field(default_factory=list)

    def buy(self, buyer: str, key: str, quantity: int = 1) -> dict[str, Any]:
        """One order from the harness, retried after a 503 or no answer; its last answer.

        With a payment timeout, an admitted order is paid at once.
        """
        client = Client(self.base)
        answers = client.attempt(self.sale, buyer, quantity, key, 5, random.Random())
        self.records += answers
        if self.args.payment_timeout is not None and answers[-1]["status"] == 202:
            self.records += client.pay_retrying(answers[-1]["ticket"], buyer, "late-buyer")
        client.close()
        return answers[-1]


def busy_worker(run: Run) -> tuple[int, int] | None:
    """A live queue worker with orders in its hands: ``(pid, orders)``, or None."""
    keys = Keys("flashsale")
    c = run.redis.client
    try:
        summary = c.xpending(keys.stream(run.sale), GROUP)
    except redis_lib.ResponseError:  # NOGROUP: no worker has read the stream yet
        return None
    holding = {x["name"]: int(x["pending"]) for x in summary.get("consumers") or []}
    pids = run.supervisor.pids()
    for w in live_workers(c, keys):
        if holding.get(w.name) and w.pid in pids:
            return w.pid, holding[w.name]
    return None


def kill_worker(run: Run) -> str:
    """SIGKILL a queue worker with orders in hand (the supervisor starts it again)."""
    deadline = time.monotonic() + 5
    found = None
    while found is None and time.monotonic() < deadline:
        found = busy_worker(run)
        time.sleep(0.005)
    pid, held = found or (run.supervisor.pids()[0], 0)
    os.kill(pid, signal.SIGKILL)
    return f"SIGKILL queue worker {pid} holding {held} order(s)"


def poison(run: Run) -> str:
    """Place the poison order: its hook exits the worker (code 17) at every delivery."""
    answer = run.buy(POISON_BUYER, "poison-1")
    return f"poison order placed: {answer['status']} {answer['ticket'] or answer['code']}"


def kill_redis(run: Run) -> str:
    """SIGKILL Redis, leave it down ``--pause`` s, start it again on the same AOF."""
    pid = run.redis.pid
    os.kill(pid, signal.SIGKILL)
    run.redis.proc.wait(10)
    time.sleep(run.args.pause)
    run.redis.restart()
    return f"SIGKILL redis-server {pid}, down {run.args.pause:g} s, restarted on its AOF"


def stop_redis(run: Run) -> str:
    """SIGSTOP Redis for ``--pause`` s, then SIGCONT."""
    pid = run.redis.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(run.args.pause)
    finally:
        os.kill(pid, signal.SIGCONT)
    return f"SIGSTOP redis-server {pid} for {run.args.pause:g} s, then SIGCONT"


def kill_web(run: Run) -> str:
    """SIGKILL one gunicorn worker (the master starts another)."""
    pid = common.children(run.web.pid)[0]
    os.kill(pid, signal.SIGKILL)
    return f"SIGKILL gunicorn worker {pid}"


@dataclass(frozen=True)
class Scenario:
    """One fault: what it is, the fault itself, and the workers' extra environment."""

    what: str
    fault: Callable[[Run], str] | None = None
    worker_env: Callable[[argparse.Namespace], dict[str, str]] = lambda args: {}


SCENARIOS: dict[str, Scenario] = {
    "baseline": Scenario("no fault"),
    "worker-kill": Scenario("SIGKILL a queue worker mid-sale; the supervisor restarts it",
                            kill_worker),
    "poison": Scenario("one order's hook exits its worker (os._exit(17)) at every delivery; "
                       "the supervisor restarts it", poison,
                       lambda args: {"CHAOS_POISON_USER": POISON_BUYER}),
    "redis-kill": Scenario("SIGKILL Redis mid-sale, restart it on the same AOF (everysec)",
                           kill_redis),
    "redis-stop": Scenario("SIGSTOP Redis mid-sale, SIGCONT after --pause s", stop_redis),
    "hook-fail": Scenario("the hook raises for --fail-rate of its calls, all run long", None,
                          lambda args: {"CHAOS_FAIL_RATE": str(args.fail_rate)}),
    "web-kill": Scenario("SIGKILL one gunicorn worker mid-sale; the master respawns it",
                         kill_web),
}


def host_db(args: argparse.Namespace, tmp: Path, table_prefix: str) -> tuple[HostDB, str]:
    """PostgreSQL at ``--pg`` if it answers (and not ``--sqlite``), else SQLite in WAL mode."""
    why = "--sqlite"
    if not args.sqlite:
        try:
            db = HostDB(f"postgres:{args.pg}", table_prefix)
            db.create()
            return db, "postgresql"
        except Exception as exc:  # ImportError, OperationalError: say why and fall back
            why = f"PostgreSQL unavailable: {type(exc).__name__}: {' '.join(str(exc).split())}"
    db = HostDB(f"sqlite:{tmp / 'host.sqlite3'}", table_prefix)
    db.create()
    return db, f"sqlite (WAL; {why})"


def inject(run: Run, scenario: Scenario, out: dict[str, Any]) -> None:
    """Wait until ``--trigger`` of the stock is sold (at most 10 s), then inject the fault."""
    args = run.args
    probe = redis_lib.Redis(port=run.redis.port, decode_responses=True, socket_timeout=0.5)
    sale_key = Keys("flashsale").sale(run.sale)
    started = time.perf_counter()
    sold = 0
    while time.perf_counter() - started < 10:
        with contextlib.suppress(redis_lib.RedisError):
            sold = args.stock - int(probe.hget(sale_key, "remaining") or args.stock)
        if sold >= args.trigger * args.stock:
            break
        time.sleep(0.01)
    out["at_s"] = round(time.perf_counter() - started, 2)
    out["sold_at_fault"] = sold
    probe.close()
    try:
        out["did"] = scenario.fault(run) if scenario.fault else "-"
    except Exception as exc:  # reported in the results, never hidden
        out["error"] = f"{type(exc).__name__}: {exc}"


def wait_drained(run: Run, deadline: float) -> bool:
    """Wait until every admitted order is settled (the stream is empty) and, with a
    payment timeout, no hold awaits payment (the deadline index is empty, read in the
    same transaction: an expiry queues its hook's call in the script that ends the
    hold); False at ``deadline``."""
    keys = Keys("flashsale")
    while time.monotonic() < deadline:
        with contextlib.suppress(redis_lib.RedisError):
            pipe = run.redis.client.pipeline(transaction=True)
            pipe.xlen(keys.stream(run.sale))
            pipe.zcard(keys.holds(run.sale))
            backlog, holds = pipe.execute()
            if int(backlog) == 0 and int(holds) == 0:
                return True
        time.sleep(0.1)
    return False


def settle(run: Run, ext: Any) -> dict[str, Any]:
    """Drain; late buyers take any stock that came back; repeat until none comes back."""
    started = time.monotonic()
    deadline = started + run.args.drain_timeout
    late = rounds = 0
    drained = False
    while rounds < LATE_ROUNDS:
        drained = wait_drained(run, deadline)
        sale = ext.get_sale(run.sale)
        if not drained or sale is None or sale.remaining <= 0:
            break
        rounds += 1
        for _ in range(sale.remaining + 20):
            late += 1
            answer = run.buy(f"late{late}", f"late{late}")
            if answer["code"] == "sold_out":
                break
    return {"drained": drained, "late_rounds": rounds, "late_buyers": late,
            "settle_s": round(time.monotonic() - started, 1)}


def read_state(run: Run, ext: Any, db: HostDB, max_attempts: int) -> State:
    """What Redis and the host hold for the sale (workers stopped)."""
    c = run.redis.client
    keys = Keys("flashsale")
    sale = ext.get_sale(run.sale)
    prefix = keys.ticket(run.sale, "")
    names = list(c.scan_iter(match=prefix + "*", count=1000))
    pipe = c.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, "u", "q", "s", "a", "d")

    def ms(value: str | None) -> int | None:
        return None if value in (None, "") else int(float(value))

    tickets = {f"{run.sale}~{name[len(prefix):]}": TicketState(u, int(q), s, ms(a), ms(d))
               for name, (u, q, s, a, d) in zip(names, pipe.execute(), strict=True)}
    calls = {order_id: Calls(n["start"], n["ok"], n["raised"], n["attempt"],
                             n["expiry_start"], n["expiry_ok"], n["expiry_raised"])
             for order_id, n in db.call_counts(run.sale).items()}
    dead = [f for _, f in c.xrange(keys.dead(run.sale))]

    def expiry(letter: dict[str, str]) -> bool:  # an expiry hook's call given up
        return str(letter.get("r", "")).startswith("expiry hook:")

    paid, expired = c.hmget(keys.payments(run.sale), "paid", "expired")
    return State(
        stock=sale.stock, remaining=sale.remaining, per_user_limit=sale.per_user_limit,
        max_attempts=max_attempts, tickets=tickets,
        users={u: int(n) for u, n in c.hgetall(keys.users(run.sale)).items()},
        dead_letters=[f["t"] for f in dead if not expiry(f)],
        backlog=int(c.xlen(keys.stream(run.sale))),
        rows=db.rows(run.sale), calls=calls,
        payment_timeout_ms=ms(c.hget(keys.sale(run.sale), "pay")),
        row_states=db.states(run.sale),
        expiry_dead_letters=[f["t"] for f in dead if expiry(f)],
        paid_counter=int(paid or 0), expired_counter=int(expired or 0))


def start_crowds(run: Run, history: Path, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """Start the crowd processes and wait until each is READY."""
    args = run.args
    crowds = []
    for i in range(args.crowds):
        argv = [*common.python_argv(), "-m", "benchmarks.chaos_crowd", "--url", run.base,
                "--sale", run.sale, "--threads", str(args.threads),
                "--count", str(args.attempts // args.crowds + (i < args.attempts % args.crowds)),
                "--buyers", str(args.buyers), "--seed", str(i),
                "--max-seconds", str(args.max_crowd_seconds),
                "--history", str(history.with_name(f"{history.name}{i}.jsonl"))]
        if args.payment_timeout is not None:
            argv += ["--payment-timeout", str(args.payment_timeout),
                     "--pay-share", str(args.pay_share), "--twice-share", str(args.twice_share),
                     "--late-share", str(args.late_share)]
        crowds.append(run.procs.start(argv, cwd=common.ROOT, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE))
    for proc in crowds:
        common.await_ready(proc, "chaos crowd")
    return crowds


def run_scenario(name: str, args: argparse.Namespace, db: HostDB, db_spec: str,
                 out_dir: Path) -> dict[str, Any]:
    """Run one scenario end to end; return its JSON-ready result."""
    from .chaos_app import create_app

    scenario = SCENARIOS[name]
    sale_id = f"chaos-{name}" if args.payment_timeout is None else f"chaos-pay-{name}"
    result: dict[str, Any] = {"scenario": name, "what": scenario.what}
    for old in [*out_dir.glob(f"{name}.*.jsonl"), *out_dir.glob(f"{name}.*.log")]:
        old.unlink()  # a previous run's, in a reused --history-dir
    with Processes() as procs:
        redis = Redis(procs, aof=True)
        env = common.env_for_children(
            BENCH_REDIS_URL=redis.url, BENCH_HOOK="", CHAOS_DB=db_spec,
            CHAOS_TABLE=db.orders.removesuffix("_orders"), CHAOS_CLAIM_IDLE=str(args.claim_idle),
            CHAOS_HOOK_MS=str(args.hook_ms), **scenario.worker_env(args))
        supervisor: Supervisor | None = None
        records: list[dict[str, Any]] = []  # the harness's own orders
        try:
            app = create_app(db=db, FLASHSALE_REDIS_URL=redis.url, FLASHSALE_CACHE_TTL=0)
            ext = app.extensions["flashsale"].ext
            max_attempts = int(app.config["FLASHSALE_MAX_ATTEMPTS"])
            with app.app_context():
                ext.create_sale(sale_id, stock=args.stock, price="10.00",
                                per_user_limit=args.per_user_limit,
                                payment_timeout=args.payment_timeout)
            connections = args.crowds * args.threads
            web, base = common.start_gunicorn(
                procs, redis_url=redis.url, workers=args.web_workers, worker_class="gthread",
                threads=args.web_threads, log=out_dir / f"{name}.gunicorn.log",
                worker_connections=connections, app="benchmarks.chaos_app:create_app()",
                env={k: v for k, v in env.items() if k.startswith("CHAOS_")} | {"BENCH_HOOK": ""})
            worker_argv = [*common.python_argv(), "-m", "flask", "--app",
                           "benchmarks.chaos_app:create_app", "flashsale", "worker"]
            supervisor = Supervisor(procs, worker_argv, env, out_dir / f"{name}.worker",
                                    args.workers)
            run = Run(args, sale_id, procs, redis, web, base, supervisor, records)
            crowds = start_crowds(run, out_dir / f"{name}.crowd", common.env_for_children())
            fault: dict[str, Any] = {}
            injector = threading.Thread(target=inject, args=(run, scenario, fault), daemon=True)
            for proc in crowds:
                common.send_go(proc)
            injector.start()
            parts = [common.read_result(proc, "chaos crowd", 300) for proc in crowds]
            injector.join(60)
            with app.app_context():
                result["settle"] = settle(run, ext)
                supervisor.stop()
                state = read_state(run, ext, db, max_attempts)
                try:
                    reports = ext.reconcile(sale_id)
                    result["reconcile"] = {"ok": all(r.ok for r in reports),
                                           "lines": [x for r in reports for x in r.describe()][:12]}
                except Exception as exc:  # reported, never hidden
                    result["reconcile"] = {"ok": False, "lines": [f"{type(exc).__name__}: {exc}"]}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(redis.pid, signal.SIGCONT)  # in case we stopped mid-pause
            if supervisor is not None:
                supervisor.stop()
            with open(out_dir / f"{name}.harness.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
            redis.cleanup()
    history = [json.loads(line) for path in sorted(out_dir.glob(f"{name}.*.jsonl"))
               for line in path.read_text().splitlines() if line]
    verdict = check(history, state)
    result.update({
        "fault": fault,
        "verdict": verdict.to_dict(),
        "restarts": supervisor.restarts,
        "worker_exits": {str(k): v for k, v in supervisor.exits.items()},
        # A fault that could not be injected makes the scenario prove nothing.
        "check": "NO FAULT" if "error" in fault else "OK" if verdict.ok else "FAIL",
        "crowd": {"wall_s": max(p["wall_s"] for p in parts),
                  "latency_ms_max": max(p["latency_ms"]["max"] for p in parts),
                  "latency_ms_p99": max(p["latency_ms"]["p99"] for p in parts)},
    })
    return result


def code_version() -> str:
    """The checkout's commit, ``+`` if it has uncommitted changes (``?`` outside git)."""
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=common.ROOT, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip() if done.returncode == 0 else "?"

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks/*.py")
    return git("rev-parse", "--short", "HEAD") + ("+" if dirty not in ("", "?") else "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every chosen scenario; return the JSON-ready result."""
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}: choose from {', '.join(SCENARIOS)}")
    out_dir = Path(args.history_dir or tempfile.mkdtemp(prefix="flashsale-chaos-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "chaos",
        "machine": common.machine(),
        "settings": {
            "stock": args.stock, "attempts": args.attempts, "buyers": args.buyers,
            "per_user_limit": args.per_user_limit,
            "web": f"gunicorn gthread, {args.web_workers} workers x {args.web_threads} threads",
            "workers": args.workers, "crowds": f"{args.crowds} processes x {args.threads} threads",
            "trigger": args.trigger, "claim_idle": args.claim_idle, "hook_ms": args.hook_ms,
            "fail_rate": args.fail_rate, "pause_s": args.pause,
            "redis": "--appendonly yes --appendfsync everysec",
            "payment_timeout": args.payment_timeout,
            **({} if args.payment_timeout is None else {
                "pay_share": args.pay_share, "twice_share": args.twice_share,
                "late_share": args.late_share}),
        },
        "history_dir": str(out_dir),
        "code": code_version(),
        "scenarios": [],
    }
    print(f"histories and logs go to {out_dir}", flush=True)
    nonce = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="flashsale-chaos-db-") as tmp:
        db, kind = host_db(args, Path(tmp), f"chaos_{nonce}")
        result["host_db"] = kind
        spec = f"{db.kind}:{db.target}"
        try:
            for name in names:
                started = time.perf_counter()
                print(f"-- {name}: {SCENARIOS[name].what}", flush=True)
                scenario = run_scenario(name, args, db, spec, out_dir)
                scenario["wall_s"] = round(time.perf_counter() - started, 1)
                result["scenarios"].append(scenario)
                print(f"   {scenario['check']} {scenario['verdict']['counts']} "
                      f"({scenario['wall_s']} s)", flush=True)
        finally:
            db.drop()
            db.close()
    result["loadavg_at_end"] = common.loadavg()
    return result


def report(result: dict[str, Any]) -> str:
    """The table, then how each fault went and what failed."""
    payments = result["settings"].get("payment_timeout") is not None
    rows = []
    for s in result["scenarios"]:
        c = s["verdict"]["counts"]
        if payments:
            rows.append([s["scenario"], c["attempts"], c["2xx"], c["4xx"], c["5xx"],
                         c["no_answer"], c["admitted"], c["paid"], c["expired"],
                         c["compensated"], c["payments"], c["too_late_answers"], c["paid_late"],
                         c["lost"], c["duplicated"], c["oversold"], s["restarts"], s["check"]])
        else:
            rows.append([s["scenario"], c["attempts"], c["2xx"], c["4xx"], c["5xx"],
                         c["no_answer"], c["admitted"], c["confirmed"], c["compensated"],
                         c["lost"], c["duplicated"], c["oversold"], s["restarts"], s["check"]])
    if payments:
        headers = ["scenario", "attempts", "2xx", "4xx", "5xx", "no answer", "admitted", "paid",
                   "expired", "failed", "payments", "too late", "paid late", "lost",
                   "duplicated", "oversold", "restarts", "check"]
    else:
        headers = ["scenario", "attempts", "2xx", "4xx", "5xx", "no answer", "admitted",
                   "confirmed", "compensated", "lost", "duplicated", "oversold", "restarts",
                   "check"]
    lines = [table(headers, rows), ""]
    for s in result["scenarios"]:
        v = s["verdict"]
        c = v["counts"]
        fault = s["fault"]
        settled = s["settle"]
        lines.append(f"{s['scenario']}: {fault.get('error') or fault.get('did', '-')} "
                     f"(at {fault.get('sold_at_fault')} sold, {fault.get('at_s')} s)")
        lines.append(f"  crowd {s['crowd']['wall_s']:.1f} s (max latency "
                     f"{s['crowd']['latency_ms_max']:.0f} ms); {settled['late_buyers']} late "
                     f"buyers; {'drained' if settled['drained'] else 'NOT drained'} in "
                     f"{settled['settle_s']} s; worker exits {s['worker_exits'] or 'none'}")
        lines.append(f"  {c['hook_calls']:,} hook calls, {c['redelivered']} after a "
                     f"redelivery; {c['unseen']} admitted unseen by clients; reconcile "
                     f"{'agrees' if s['reconcile']['ok'] else 'found drift'}")
        if payments:
            def ms(value: int | None) -> str:
                return "-" if value is None else f"{value} ms"

            lines.append(f"  {c['payments']:,} payment calls: {c['paid_answers']:,} paid "
                         f"({c['paid_twice']} tickets paid twice), {c['too_late_answers']} too "
                         f"late, {c['refused_answers']} refused, {c['pay_unanswered']} 503, 404 or "
                         f"unanswered; {c['expiry_calls']:,} expiry hook calls "
                         f"({c['expiry_redelivered']} tickets' more than once, "
                         f"{c['expiry_dead_letters']} given up); {c['dead_letters']} order "
                         "dead letter(s)")
            lines.append(f"  closest to pay_by: a payment accepted that began "
                         f"{ms(c['closest_paid_ms'])} before it, a too_late that ended "
                         f"{ms(c['closest_too_late_ms'])} after it; {c['pay_unverified']} paid "
                         "ticket(s) not timed (a payment call unanswered)")
        failed = [k for k, ok in v["checks"].items() if not ok]
        if failed:
            lines.append("  FAILED: " + "; ".join(failed))
            for kind, examples in v["problems"].items():
                more = f" (+{len(examples) - 1} more in the JSON)" if len(examples) > 1 else ""
                lines.append(f"    {kind}: {examples[0]}{more}")
    st = result["settings"]
    lines.append("")
    pay = ""
    if payments:
        pay = (f"payment timeout {st['payment_timeout']:g} s, {st['pay_share']:.0%} of the "
               f"tickets paid ({st['twice_share']:.0%} of those twice, {st['late_share']:.0%} "
               "around or after pay_by), the rest left to expire; ")
    lines.append(f"{st['stock']:,} units, {st['attempts']:,} attempts per scenario from "
                 f"{st['buyers']:,} buyers (limit {st['per_user_limit']}, 40% with an "
                 f"Idempotency-Key, retried after 503/no answer); {pay}{st['web']}; "
                 f"{st['workers']} queue workers under a supervisor; Redis {st['redis']}; host "
                 f"DB: {result['host_db']}; faults at {st['trigger']:.0%} of the stock sold; "
                 f"code at commit {result['code']}")
    return "\n".join(lines)
