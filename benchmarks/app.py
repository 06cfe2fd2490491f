"""The benchmark host app: the extension, an ``X-User`` identity loader and ``/bare``.

Served by gunicorn in the ``http`` and ``sellout`` benchmarks, and built
in-process by the others. Configured from the environment so that every
gunicorn worker builds the same app:

``BENCH_REDIS_URL``
    the throwaway Redis the runner started (required).
``BENCH_STRATEGY``
    ``FLASHSALE_INVENTORY_STRATEGY`` (default ``lua``).
``BENCH_FAST_ADMISSION``
    ``0`` turns ``FLASHSALE_FAST_ADMISSION`` off (redis-py's ``Script`` for
    admission), for an A/B run; default on.
``BENCH_HOOK``
    the worker's order hook: ``noop`` (default), ``sqlite:<path>`` or
    ``postgres:<conninfo>``, or a batch hook (``order_batch_handler``):
    ``sqlite-batch:<path>``, ``postgres-batch:<conninfo>``, ``noop-batch``
    (see :mod:`benchmarks.hooks`).

``/bare`` is the ceiling: a Flask JSON view in the same app, same server,
same headers, that does no work at all. ``/floor`` is that view plus one raw
Redis round trip of a trivial script (``EVALSHA`` of ``return 1``, through the
extension's own client and pool): the cost no admission can avoid.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from flask_flashsale import FlashSale

#: The trivial script of ``/floor``: one key, like admission's hash tag, no work.
FLOOR_SCRIPT = "return 1"


def create_app(**config: Any) -> Flask:
    """Build the bench app; ``config`` overrides the environment-derived config."""
    app = Flask("flashsale_bench")
    app.config.update(
        SECRET_KEY="bench-secret",
        FLASHSALE_REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"),
        FLASHSALE_INVENTORY_STRATEGY=os.environ.get("BENCH_STRATEGY", "lua"),
        FLASHSALE_INLINE_WORKER=False,
        FLASHSALE_FAST_ADMISSION=os.environ.get("BENCH_FAST_ADMISSION", "1") != "0",
    )
    app.config.update(config)
    flashsale = FlashSale(app)

    @flashsale.identity_loader
    def buyer() -> str | None:
        return request.headers.get("X-User")

    @app.get("/bare")
    def bare() -> dict[str, Any]:
        return {"ok": True, "user": request.headers.get("X-User")}

    floor = FlashSale.state(app).client.register_script(FLOOR_SCRIPT)

    @app.post("/floor")
    def floor_view() -> dict[str, Any]:
        user = request.headers.get("X-User")
        return {"ok": floor(keys=["bench:{floor}"], args=[user or ""]), "user": user}

    hook = os.environ.get("BENCH_HOOK", "noop")
    if hook:
        from .hooks import is_batch, make_batch_hook, make_hook

        if is_batch(hook):
            flashsale.order_batch_handler(make_batch_hook(hook))
        else:
            flashsale.order_handler(make_hook(hook))
    return app


def setup_app(redis_url: str, **config: Any) -> Flask:
    """The bench app for setting up and inspecting a run from the runner's process.

    Caching is off (``FLASHSALE_CACHE_TTL=0``): the runner wants Redis's
    answer every time, and no pub/sub thread that would outlive the run's Redis.
    """
    return create_app(FLASHSALE_REDIS_URL=redis_url, FLASHSALE_CACHE_TTL=0, **config)
