"""One worker process for the ``worker`` benchmark: ``python -m benchmarks.worker_proc``.

Builds the bench app with the hook named by ``--hook`` (see
:mod:`benchmarks.hooks`), prints ``READY``, waits for a line on stdin, then
runs ``FlashSale.run_worker(burst=True, concurrency=...)`` until the queue is
drained, and prints ``RESULT <json>`` with the hook's count and its first and
last call times (``time.perf_counter``, comparable across processes) and the
process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def main() -> int:
    """Run one burst worker; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--hook", default="noop")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--worker-batch", type=int, default=None,
                        help="FLASHSALE_WORKER_BATCH (default: the setting's)")
    args = parser.parse_args()
    os.environ["BENCH_HOOK"] = args.hook

    from .app import create_app
    from .hooks import STATS

    config = {} if args.worker_batch is None else {"FLASHSALE_WORKER_BATCH": args.worker_batch}
    app = create_app(FLASHSALE_REDIS_URL=args.redis, **config)
    ext = app.extensions["flashsale"].ext
    if not hasattr(ext, "run_worker"):
        print("UNAVAILABLE FlashSale.run_worker does not exist yet (the worker, issue 3, "
              "is not merged)", flush=True)
        return 3
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with app.app_context():
        ext.run_worker(burst=True, concurrency=args.concurrency)
    ended = time.perf_counter()
    out = {
        **STATS.as_dict(),
        "started": started,
        "ended": ended,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
