"""A host app served by a multi-worker gunicorn in tests/test_metrics_multiprocess.py.

``TEST_REDIS_URL`` says where Redis is; metrics are served at ``/metrics``;
each answer names the worker process that served it (``X-Pid``).
"""

from __future__ import annotations

import os

from flask import Flask, Response, request

from flask_flashsale import FlashSale


def create_app() -> Flask:
    """The app, configured from the environment."""
    app = Flask("metrics-host")
    app.config.update(
        SECRET_KEY="test-secret",
        FLASHSALE_REDIS_URL=os.environ["TEST_REDIS_URL"],
        FLASHSALE_INLINE_WORKER=False,
        FLASHSALE_METRICS_PATH="/metrics",
    )
    flashsale = FlashSale(app)
    flashsale.identity_loader(lambda: request.headers.get("X-User"))

    @app.after_request
    def name_the_process(response: Response) -> Response:
        response.headers["X-Pid"] = str(os.getpid())
        return response

    return app
