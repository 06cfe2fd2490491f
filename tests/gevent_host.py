"""A host app served by gunicorn's gevent worker in tests/test_gevent.py.

``TEST_REDIS_URL`` says where Redis is; ``TEST_FLASHSALE_CONFIG`` (JSON) adds
``FLASHSALE_*`` keys. The buyer comes from ``X-User``. Two routes of the host's
own:

``GET /patched``
    whether this worker process runs monkey-patched (so a test knows it
    really is under gevent) and its pid.
``POST /hold/<name>``
    takes the host lock ``name`` (``flashsale.lock``), waiting up to 30 s:
    while another process holds it, a slow request that polls Redis.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, request

from flask_flashsale import FlashSale


def create_app() -> Flask:
    """The app, configured from the environment."""
    app = Flask("gevent-host")
    app.config.update(
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=os.environ["TEST_REDIS_URL"],
        FLASHSALE_INLINE_WORKER=False,
        **json.loads(os.environ.get("TEST_FLASHSALE_CONFIG", "{}")),
    )
    flashsale = FlashSale(app)
    flashsale.identity_loader(lambda: request.headers.get("X-User"))

    @app.get("/patched")
    def patched() -> dict[str, Any]:
        from gevent import monkey

        return {
            "threading": monkey.is_module_patched("threading"),
            "socket": monkey.is_module_patched("socket"),
            "pid": os.getpid(),
        }

    @app.post("/hold/<name>")
    def hold(name: str) -> dict[str, Any]:
        with flashsale.lock(name, timeout=30, blocking_timeout=30) as token:
            return {"token": token}

    return app
