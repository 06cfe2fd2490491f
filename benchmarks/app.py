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
Redis round trip of a trivial script (``EVALSHA`` of ``return 1`` with the
buyer as its argument): the cost no admission can avoid. Raw means as cheap as
a round trip gets from Python: each thread (or greenlet) keeps its own socket
to Redis, the command is packed once up front (only the buyer is appended),
and the reply is parsed by hiredis; no client library, pool or breaker.
``/floor-redis-py`` is the same script through redis-py, on the extension's own
client (pool, breaker): what the client library adds to the round trip.
``/bench/blueprint-bare/<sale>/order`` is the bare view shaped like the order
route (a blueprint under a prefix, a path converter, one no-op
``before_request`` hook): what Flask's blueprint machinery costs.
``/raw-admission`` (``lua`` strategy only) is the bare view plus the order's own
admission, the real script with the keys and arguments an order on sale
``hot`` sends (a new ticket token each time), on the same kind of raw round
trip: an order with none of the extension's Python, which no order path
written in Python can beat.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from flask import Blueprint, Flask, request

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

    @app.route("/bare", methods=["GET", "POST"])
    def bare() -> dict[str, Any]:
        return {"ok": True, "user": request.headers.get("X-User")}

    # The bare view again, shaped like the order route: in a blueprint under a
    # prefix, with a path converter and one before_request hook (the order's
    # origin check), both doing nothing: what Flask's blueprint machinery costs.
    shaped = Blueprint("bench_blueprint_bare", __name__)

    @shaped.before_request
    def no_op_hook() -> None:
        return None

    @shaped.post("/<sale_id>/order")
    def blueprint_bare(sale_id: str) -> dict[str, Any]:
        return {"ok": True, "user": request.headers.get("X-User")}

    app.register_blueprint(shaped, url_prefix="/bench/blueprint-bare")

    client = FlashSale.state(app).client
    floor_redis_py = client.register_script(FLOOR_SCRIPT)

    @app.post("/floor-redis-py")
    def floor_redis_py_view() -> dict[str, Any]:
        user = request.headers.get("X-User")
        return {"ok": floor_redis_py(keys=["bench:{floor}"], args=[user or ""]), "user": user}

    # No round trip while the app is built (a worker booting while Redis is
    # down must still boot): the script is loaded by its first NOSCRIPT.
    round_trip = RawRoundTrip(app.config["FLASHSALE_REDIS_URL"], FLOOR_SCRIPT,
                              ["1", "bench:{floor}", USER_SLOT], (USER_SLOT,))

    @app.post("/floor")
    def floor_view() -> dict[str, Any]:
        user = request.headers.get("X-User")
        return {"ok": round_trip(user or ""), "user": user}

    #: The raw round trips, for a test to close its sockets.
    app.extensions["bench_round_trips"] = [round_trip]
    if app.config["FLASHSALE_INVENTORY_STRATEGY"] == "lua":
        admission = raw_admission(app, "hot")
        app.extensions["bench_round_trips"].append(admission)

        @app.post("/raw-admission")
        def raw_admission_view() -> tuple[dict[str, Any], int]:
            user = request.headers.get("X-User") or ""
            status = admission(user, secrets.token_urlsafe(16))[0]
            return {"ok": status.decode(), "user": user}, 200 if status == b"queued" else 409

    hook = os.environ.get("BENCH_HOOK", "noop")
    if hook:
        from .hooks import is_batch, make_batch_hook, make_hook

        if is_batch(hook):
            flashsale.order_batch_handler(make_batch_hook(hook))
        else:
            flashsale.order_handler(make_hook(hook))
    return app


class RawRoundTrip:
    """One ``EVALSHA`` on a raw socket per thread (or greenlet), packed up front.

    Written by hand on purpose: it is the reference the order path is measured
    against, so it must cost only what no client can avoid (one ``send``,
    one ``recv``, one reply parsed in C by ``hiredis``, which the ``bench`` and
    ``dev`` extras install). No Redis call while the app is built: a worker
    that boots while Redis is down must boot; the script is loaded by the
    first ``NOSCRIPT``.

    ``template`` is what follows the sha (``numkeys``, the keys, the
    arguments). An element holding one of ``slots`` is filled in per call with
    the values given (``str.replace``); every other element is packed once,
    here, so a call packs only the elements that change.
    """

    def __init__(self, redis_url: str, script: str, template: Sequence[str],
                 slots: Sequence[str]) -> None:
        url = urlsplit(redis_url)
        self.address = (url.hostname or "127.0.0.1", url.port or 6379)
        source = script.encode()
        sha = hashlib.sha1(source).hexdigest().encode()
        self.load = b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%d\r\n%s\r\n" % (
            len(source), source)
        self.slots = tuple(slots)
        # Constant runs packed into bytes; the elements to fill in kept as str.
        self.parts: list[bytes | str] = []
        packed = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n" % (
            len(template) + 2, len(sha), sha)
        for element in template:
            if any(slot in element for slot in self.slots):
                self.parts.append(packed)
                self.parts.append(element)
                packed = b""
            else:
                data = element.encode()
                packed += b"$%d\r\n%s\r\n" % (len(data), data)
        self.parts.append(packed)
        # Created when the app is built: under gevent that is after patching,
        # so it is per greenlet there.
        self.local = threading.local()

    def pack(self, *values: str) -> bytes:
        """The command with ``values`` in the slots, in ``slots`` order."""
        out = []
        for part in self.parts:
            if type(part) is str:
                for slot, value in zip(self.slots, values, strict=True):
                    part = part.replace(slot, value)
                data = part.encode()
                out.append(b"$%d\r\n%s\r\n" % (len(data), data))
            else:
                out.append(part)  # type: ignore[arg-type]
        return b"".join(out)

    def __call__(self, *values: str) -> Any:
        """One round trip; the script's reply."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            sock = socket.create_connection(self.address, timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self.local.conn = (sock, hiredis.Reader())
        sock, reader = conn
        command = self.pack(*values)
        try:
            reply = self._send(sock, reader, command)
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                self._send(sock, reader, self.load)
                reply = self._send(sock, reader, command)
            return reply
        except BaseException:
            self.local.conn = None
            sock.close()
            raise

    def close(self) -> None:
        """Close this thread's (or greenlet's) socket, if it has one."""
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            conn[0].close()

    @staticmethod
    def _send(sock: socket.socket, reader: Any, command: bytes) -> Any:
        sock.sendall(command)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            reader.feed(chunk)
            reply = reader.gets()
            if reply is not False:
                return reply


#: Placeholders of :func:`raw_admission`'s template: the buyer and the ticket token.
USER_SLOT = "\x00user\x00"
TOKEN_SLOT = "\x00token\x00"


def raw_admission(app: Flask, sale_id: str) -> RawRoundTrip:
    """The order path's own ``EVALSHA`` for ``sale_id``, on a :class:`RawRoundTrip`.

    The keys and arguments are the ones the extension's ``lua`` strategy
    sends for an order without an ``Idempotency-Key`` (recorded once, here, by
    running its ``admit`` with a script that records instead of calling
    Redis), with the buyer and the ticket token left as slots: so the
    ``raw_admission`` case runs the very same admission in Redis as
    ``order``, with none of the extension's Python around it.
    """
    state = FlashSale.state(app)
    strategy = state.strategy
    recorded: list[Sequence[str]] = []

    def record(keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        recorded.append([str(len(keys)), *keys, *(str(a) for a in args)])
        return ["queued", "", 1, 0]

    real = strategy._script  # type: ignore[attr-defined]
    strategy._script = record  # type: ignore[attr-defined]
    try:
        strategy.admit(sale_id, USER_SLOT, 1, TOKEN_SLOT, fresh_token=True)
    finally:
        strategy._script = real  # type: ignore[attr-defined]
    return RawRoundTrip(app.config["FLASHSALE_REDIS_URL"], real.script, recorded[0],
                        (USER_SLOT, TOKEN_SLOT))


def setup_app(redis_url: str, **config: Any) -> Flask:
    """The bench app for setting up and inspecting a run from the runner's process.

    Caching is off (``FLASHSALE_CACHE_TTL=0``): the runner wants Redis's
    answer every time, and no pub/sub thread that would outlive the run's Redis.
    """
    return create_app(FLASHSALE_REDIS_URL=redis_url, FLASHSALE_CACHE_TTL=0, **config)
