"""One worker process for the ``expiry`` benchmark: ``python -m benchmarks.expiry_proc``.

Builds the bench app (no-op order hook), with a no-op expiry hook when
``--expiry-hook`` is given, prints ``READY``, waits for a line on stdin, then
runs ``FlashSale.run_worker(burst=True)`` until every due hold is expired (and
every expiry hook call made), and prints ``RESULT <json>``: how many holds it
expired and when (``order_expired``), how many expiry hook calls it made and
when (``time.perf_counter``), and when it started and ended.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any


class Times:
    """A count with the first and last time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def hit(self, n: int = 1) -> None:
        """Record ``n`` events now."""
        now = time.perf_counter()
        with self._lock:
            if not self.count:
                self.first = now
            self.count += n
            self.last = now

    def as_dict(self) -> dict[str, float]:
        """``count``, ``first``, ``last``."""
        return {"count": self.count, "first": self.first, "last": self.last}


def main() -> int:
    """Run one burst worker; see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--expiry-hook", action="store_true")
    args = parser.parse_args()

    from flask_flashsale import Ticket, order_expired

    from .app import create_app

    app = create_app(FLASHSALE_REDIS_URL=args.redis)
    ext = app.extensions["flashsale"].ext
    if not hasattr(ext, "expiry_handler"):
        print("UNAVAILABLE FlashSale.expiry_handler does not exist (reservations, issue 13)",
              flush=True)
        return 3
    expired, hooked = Times(), Times()

    def heard(sender: Any, ticket: Ticket) -> None:
        expired.hit()

    order_expired.connect(heard, app)
    if args.expiry_hook:
        ext.expiry_handler(lambda ticket: hooked.hit())
    print("READY", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with app.app_context():
        ext.run_worker(burst=True)
    ended = time.perf_counter()
    out = {"expired": expired.as_dict(), "hooked": hooked.as_dict(),
           "started": started, "ended": ended}
    print("RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
