"""``cluster``: admissions on a local Redis Cluster against one Redis, in one run.

The cluster is 3 masters and 3 replicas on 127.0.0.1 (``tests/cluster.py``, the
test suite's own fixture), the single Redis a throwaway server; the same crowd
(:mod:`benchmarks.crowd`: ``--processes`` x ``--threads`` clients calling
:meth:`FlashSale.place_order`, a new buyer per attempt) runs for
``--duration`` seconds per case:

``hot``      one sale: all of it on one master (a sale's keys share a hash tag);
``spread``   12 sales, spread by hash slot over the masters.

Reported: admissions/s, the ratio to the single Redis in the same round, and
Redis CPU per admission on each node (``INFO cpu``). On a 2-core machine the
nodes, the clients and the cluster's replicas all share the same two cores, so
the cluster cannot show more throughput here: what it does show is where the
work goes (per-node CPU) and the client-side cost of cluster routing.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from . import common
from .common import Processes, Redis, median, table

SPREAD = [f"s{i:02d}" for i in range(12)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of ``python -m benchmarks cluster``."""
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5, help="seconds per case")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=8, help="client threads per process")


def quick(args: argparse.Namespace) -> None:
    """``--quick``: one round of 2 s cases."""
    args.rounds = 1
    args.duration = 2


def setup_sales(url: str) -> None:
    """``hot`` and ``s00``..``s11``, each with 10^9 units (never sells out here)."""
    from .app import setup_app

    app = setup_app(url)
    ext = app.extensions["flashsale"].ext
    with app.app_context():
        for sale_id in ["hot", *SPREAD]:
            ext.create_sale(sale_id, stock=10**9, price="1.00", per_user_limit=1)


def node_cpu(clients: dict[str, Any]) -> dict[str, float]:
    """Seconds of CPU each Redis node has used so far."""
    out = {}
    for name, client in clients.items():
        info = client.info("cpu")
        out[name] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return out


def one_case(procs: Processes, url: str, nodes: dict[str, Any], sales: list[str],
             args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One crowd against ``url``: admissions/s and CPU per admission on each node."""
    cpu0 = node_cpu(nodes)
    data = common.run_crowds(
        procs, redis_url=url, processes=args.processes, threads=args.threads,
        sales=sales, nonce=f"{tag}{uuid.uuid4().hex[:6]}", duration=args.duration,
    )
    cpu1 = node_cpu(nodes)
    queued = data["statuses"].get("queued", 0)
    attempts = max(1, data["attempts"])
    data["orders_per_s"] = queued / data["wall_s"]
    data["redis_cpu_us_per_attempt"] = {
        name: round((cpu1[name] - cpu0[name]) / attempts * 1e6, 1) for name in nodes
    }
    return data


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the JSON-ready result."""
    from tests.cluster import LocalCluster

    result: dict[str, Any] = {
        "benchmark": "cluster",
        "machine": common.machine(),
        "settings": {
            "clients": f"{args.processes * args.threads} ({args.processes} processes x "
                       f"{args.threads} threads), FlashSale.place_order, a new buyer each",
            "runs": f"{args.duration:g} s per case, {args.rounds} interleaved rounds",
            "cluster": "3 masters + 3 replicas on 127.0.0.1",
        },
    }
    rounds: list[dict[str, Any]] = []
    with Processes() as procs:
        single = Redis(procs)
        cluster = LocalCluster()
        try:
            cluster.start()
            setup_sales(single.url)
            setup_sales(cluster.url)
            masters = {
                f"master:{n.port}": n.client() for n in cluster.nodes
                if n.client().info("replication")["role"] == "master"
            }
            targets = {
                "single": (single.url, {"single": single.client}),
                "cluster": (cluster.url, masters),
            }
            for rnd in range(args.rounds):
                row: dict[str, Any] = {"round": rnd + 1, "loadavg": common.loadavg()}
                for scenario, sales in (("hot", ["hot"]), ("spread", SPREAD)):
                    row[scenario] = {
                        name: one_case(procs, url, nodes, sales, args, f"r{rnd}{name[0]}")
                        for name, (url, nodes) in targets.items()
                    }
                    single_rate = row[scenario]["single"]["orders_per_s"]
                    for data in row[scenario].values():
                        data["vs_single"] = data["orders_per_s"] / single_rate
                rounds.append(row)
        finally:
            cluster.cleanup()
            single.cleanup()
    result["rounds"] = rounds
    result["summary"] = {
        scenario: {
            name: {
                "orders_per_s": median([r[scenario][name]["orders_per_s"] for r in rounds]),
                "vs_single": median([r[scenario][name]["vs_single"] for r in rounds]),
                "p99_ms": max(r[scenario][name]["latency_ms"]["p99"] for r in rounds),
                "redis_cpu_us_per_attempt": rounds[-1][scenario][name][
                    "redis_cpu_us_per_attempt"],
                "other_outcomes": {k: v for k, v in rounds[-1][scenario][name][
                    "statuses"].items() if k != "queued"},
            }
            for name in ("single", "cluster")
        }
        for scenario in ("hot", "spread")
    }
    result["loadavg_at_end"] = common.loadavg()
    return result


def report(result: dict[str, Any]) -> str:
    """The table printed at the end."""
    rows = []
    for scenario, by_target in result["summary"].items():
        for name, v in by_target.items():
            cpu = ", ".join(f"{node.split(':')[-1]} {us:g}"
                            for node, us in v["redis_cpu_us_per_attempt"].items())
            rows.append([scenario, name, round(v["orders_per_s"]), f"{v['vs_single']:.2f}x",
                         v["p99_ms"], cpu, v["other_outcomes"] or "-"])
    lines = [table(["case", "redis", "orders/s", "vs single", "p99 ms",
                    "Redis CPU us/attempt per node", "other answers"], rows)]
    lines.append("2 cores shared by every node, replica and client: a cluster cannot add "
                 "throughput here; per-node CPU shows where the work goes ("
                 "'hot' stays on one master, 'spread' lands on all three)")
    lines.append(f"settings: {result['settings']['clients']}; {result['settings']['runs']}")
    lines.append(f"load average at start {result['machine']['loadavg_at_start']}, "
                 f"at end {result['loadavg_at_end']}")
    return "\n".join(lines)
