"""``admission-client``: client CPU per admission round trip, redis-py ``Script`` vs the fast path.

One process, one thread, one throwaway Redis: the same admission calls (a
new buyer and ticket each, every one admitted) are sent through

- ``redis-py``: the registered ``Script`` on the app's guarded client and
  pool (what ``FLASHSALE_FAST_ADMISSION=false`` runs);
- ``fast``: :class:`~flask_flashsale.fastcall.FastScript` called as redis-py's
  ``Script`` is (all 21 keys and arguments packed per call);
- ``template``: the same through the sale's
  :class:`~flask_flashsale.fastcall.Template`, as the ``lua`` strategy sends
  an order (only the order's own 8 values packed per call; checked to send
  the same bytes as ``fast``);
- ``raw``: the same packed bytes on a bare socket read with ``hiredis.Reader``,
  no breaker, no pool, no error handling: the floor for a Python client.

Client CPU is this process's CPU time (``time.process_time``) over the calls,
so Redis's own work is not in it; wall time per call is shown too. Cases run
interleaved over ``--rounds``; Redis is flushed between rounds.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from .common import Processes, Redis, median, table

CASES = ("redis-py", "fast", "template", "raw")
Call = tuple[list[str], list[Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks admission-client``."""
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20000, help="calls per case per round")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round of 3,000 calls per case."""
    args.rounds = 1
    args.calls = 3000


def capture(strategy: Any, sale: str, tag: str, n: int) -> list[Call]:
    """The ``(keys, args)`` of ``n`` admissions by new buyers, as the strategy sends them.

    ``tag`` (two characters) makes buyers and 22-character ticket tokens unique per case.
    """
    calls: list[Call] = []
    script = strategy._script

    def recorder(keys: list[str], args: list[Any]) -> list[Any]:
        calls.append((list(keys), list(args)))
        return ["queued", "", 1, 0]

    strategy._script = recorder
    try:
        for i in range(n):
            strategy.admit(sale, f"{tag}-u{i}", 1, f"{tag}{i:020d}")
    finally:
        strategy._script = script
    return calls


def raw_caller(port: int, fast: Any) -> tuple[Callable[[list[str], list[Any]], Any], socket.socket]:
    """A bare-socket ``script(keys, args)`` with ``hiredis.Reader``: the client floor."""
    import hiredis

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader(encoding="utf-8")
    buffer = bytearray(65536)
    pack = fast.pack

    def call(keys: list[str], args: list[Any]) -> Any:
        sock.sendall(pack(keys, args))
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            n = sock.recv_into(buffer)
            if not n:
                raise ConnectionError("closed")
            reader.feed(buffer, 0, n)

    return call, sock


def template_caller(strategy: Any, fast: Any, sale: str,
                    first: Call) -> Callable[[list[str], list[Any]], Any]:
    """``script(keys, args)`` through the sale's template, as ``LuaStrategy.admit`` sends it.

    The order's own values are picked from ``keys`` and ``args`` in the order
    the strategy fills the template's slots (ticket key, buyer's bucket key,
    buyer, quantity, ticket id, pass, fresh flag, token); ``first`` must pack
    to the same bytes as :meth:`FastScript.pack` would, or the run stops.
    """
    template = strategy._template(fast, sale)
    pack, run = template.pack, fast.run
    keys, args = first
    if pack(keys[2], keys[4], args[0], args[1], args[2], args[10], args[12],
            args[13]) != fast.pack(keys, args):
        raise SystemExit("the sale's template does not send what the strategy's keys and "
                         "arguments are: benchmarks/admission_client.py is out of date")

    def call(keys: list[str], args: list[Any]) -> Any:
        return run(pack(keys[2], keys[4], args[0], args[1], args[2], args[10], args[12],
                        args[13]))

    return call


def measure(fn: Callable[[list[str], list[Any]], Any], calls: Sequence[Call]) -> dict[str, float]:
    """Client CPU and wall microseconds per call; every reply must be ``queued``."""
    cpu, wall = time.process_time(), time.perf_counter()
    replies = [fn(keys, args) for keys, args in calls]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    statuses = {r[0] for r in replies}
    if statuses != {"queued"}:
        raise SystemExit(f"unexpected admission replies: {statuses}")
    return {"cpu_us": cpu / len(calls) * 1e6, "wall_us": wall / len(calls) * 1e6}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every case ``--rounds`` times, interleaved."""
    from flask_flashsale import FlashSale
    from flask_flashsale.fastcall import FastScript

    from .app import setup_app

    samples: dict[str, list[dict[str, float]]] = {c: [] for c in CASES}
    with Processes() as procs:
        redis = Redis(procs)
        app = setup_app(redis.url)
        state = FlashSale.state(app)
        strategy = state.strategy
        fast = strategy._script
        if not isinstance(fast, FastScript):
            raise SystemExit("the app does not run the fast admission path")
        callers: dict[str, Callable[[list[str], list[Any]], Any]] = {
            "redis-py": fast.redis_script,
            "fast": fast,
        }
        raw, sock = raw_caller(redis.port, fast)
        callers["raw"] = raw
        try:
            for r in range(args.rounds):
                redis.client.flushall()
                with app.app_context():
                    FlashSale.state(app).ext.create_sale("bench", stock=10**9)
                for n, case in enumerate(CASES):
                    calls = capture(strategy, "bench", f"{n}{r % 10}", args.calls)
                    if case == "template":
                        callers[case] = template_caller(strategy, fast, "bench", calls[0])
                    fn = callers[case]
                    measure(fn, calls[:200])  # connections made, caches warm
                    samples[case].append(measure(fn, calls[200:]))
        finally:
            sock.close()
            state.client.close()
    summary = {
        case: {
            "cpu_us": round(median([s["cpu_us"] for s in samples[case]]), 2),
            "wall_us": round(median([s["wall_us"] for s in samples[case]]), 2),
        }
        for case in CASES
    }
    base = summary["redis-py"]["cpu_us"]
    for v in summary.values():
        v["cpu_vs_redis_py"] = round(v["cpu_us"] / base, 2)
    return {"summary": summary, "samples": samples,
            "settings": {"rounds": args.rounds, "calls": args.calls}}


def report(result: dict[str, Any]) -> str:
    """The table printed at the end."""
    rows = [[case, v["cpu_us"], v["wall_us"], f"{v['cpu_vs_redis_py']:.2f}"]
            for case, v in result["summary"].items()]
    s = result["settings"]
    return (table(["path", "client CPU us/call", "wall us/call", "CPU vs redis-py"], rows)
            + f"\nmedian of {s['rounds']} rounds x {s['calls']} admissions per path")
