"""Entry point: ``python -m benchmarks NAME`` (``python -m benchmarks --help`` lists them).

Run from the repository root. This checkout's ``src/`` goes first on the path
(here and in every process a benchmark starts), so the numbers are always
those of the code in front of you, whatever else is installed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

#: benchmark name -> module
BENCHMARKS = {
    "http": "benchmarks.http_bench",
    "strategies": "benchmarks.strategies",
    "worker": "benchmarks.worker_bench",
    "expiry": "benchmarks.expiry_bench",
    "sellout": "benchmarks.sellout",
    "redis-ceiling": "benchmarks.redis_ceiling",
    "soak": "benchmarks.soak",
    "chaos": "benchmarks.chaos",
    "queue": "benchmarks.queue_bench",
    "cluster": "benchmarks.cluster_bench",
    "admission-client": "benchmarks.admission_client",
    "orderpath": "benchmarks.orderpath",
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one benchmark (or render the charts)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument("--quick", action="store_true", help="a ~20 s smoke run")
        p.add_argument("--no-save", action="store_true",
                       help="do not write benchmarks/results/<name>.json")
        p.add_argument("--json", default=None, metavar="PATH",
                       help="write the JSON result here instead of benchmarks/results/")
        module.add_arguments(p)
    chart = sub.add_parser("chart", help="render PNG charts from benchmarks/results/*.json")
    chart.add_argument("--out", default=None, help="output directory (default: results dir)")
    chart.add_argument("--docs", action="store_true",
                       help="also copy performance.png to docs/_static/ for the docs")
    args = parser.parse_args(argv)

    if args.name == "chart":
        from .chart import render_all

        for path in render_all(Path(args.out) if args.out else None, docs=args.docs):
            print(path)
        return 0

    from . import common

    module = importlib.import_module(BENCHMARKS[args.name])
    if args.quick:
        module.quick(args)
    started = time.perf_counter()
    result = module.run(args)
    result["quick"] = bool(args.quick)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    text = module.report(result)
    print(text)
    print(f"({result['wall_seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    elif not args.no_save:
        # A module with several modes names the result of each (``result_name``).
        name = module.result_name(args) if hasattr(module, "result_name") else args.name
        path = common.write_results(name, result)
        # The printed table too, for the docs (docs/performance.rst includes it).
        path.with_suffix(".txt").write_text(f"$ {result['command']}\n{text}\n")
        print(f"wrote {path.relative_to(ROOT)} and {path.with_suffix('.txt').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
