"""One process of the ``soak`` benchmark: ``python -m benchmarks.soak_proc {admit,work}``.

``admit``: builds the bench app, starts ``--threads`` threads, prints
``READY``, waits for a line on stdin, then the threads call
:meth:`FlashSale.place_order` ``--count`` times in all, every call a new buyer.
Only a status counter is kept (no per-call list), so the process's own
bookkeeping does not grow with the number of orders. Prints ``RESULT <json>``
and then waits for one more line on stdin before exiting, so that the runner
can read its RSS after the last order.

``work``: builds the bench app with the no-op hook, prints ``READY``, waits for
a line on stdin, then runs ``FlashSale.run_worker()`` (not burst) until
SIGTERM, and prints ``RESULT <json>`` with the hook's count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter


def admit(args: argparse.Namespace) -> int:
    """The admitting role; see the module docstring."""
    from .app import create_app

    app = create_app(FLASHSALE_REDIS_URL=args.redis)
    ext = app.extensions["flashsale"].ext
    with app.app_context():
        ext.get_sale(args.sale)  # connect and load what the first call needs
    per_thread = [args.count // args.threads + (i < args.count % args.threads)
                  for i in range(args.threads)]
    totals: Counter[str] = Counter()
    lock = threading.Lock()
    go = threading.Event()

    def buyer(index: int) -> None:
        statuses: Counter[str] = Counter()
        prefix = f"{args.nonce}-{index}-"
        with app.app_context():
            go.wait()
            for n in range(per_thread[index]):
                try:
                    status = ext.place_order(args.sale, f"{prefix}{n}").status
                except Exception as exc:  # counted and reported, never hidden
                    status = f"error:{type(exc).__name__}"
                statuses[status] += 1
        with lock:
            totals.update(statuses)

    threads = [threading.Thread(target=buyer, args=(i,), daemon=True)
               for i in range(args.threads)]
    for t in threads:
        t.start()
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    out = {"attempts": sum(totals.values()), "statuses": dict(totals),
           "wall_s": time.perf_counter() - started}
    print("RESULT " + json.dumps(out), flush=True)
    sys.stdin.readline()
    return 0


def work(args: argparse.Namespace) -> int:
    """The worker role; see the module docstring."""
    os.environ["BENCH_HOOK"] = "noop"
    from .app import create_app
    from .hooks import STATS

    app = create_app(FLASHSALE_REDIS_URL=args.redis)
    ext = app.extensions["flashsale"].ext
    print("READY", flush=True)
    sys.stdin.readline()
    with app.app_context():
        settled = ext.run_worker()
    print("RESULT " + json.dumps({**STATS.as_dict(), "settled": settled}), flush=True)
    return 0


def main() -> int:
    """Parse the command line and run one role."""
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["admit", "work"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--sale", default="soak")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--nonce", default="s")
    args = parser.parse_args()
    return admit(args) if args.role == "admit" else work(args)


if __name__ == "__main__":
    sys.exit(main())
