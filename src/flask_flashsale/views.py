"""The JSON blueprint: list, detail, order, the buyer's tickets, ticket status, the
waiting room's queue, OpenAPI.

Every error is ``application/problem+json`` with a stable ``code``; no input
can produce a 500 or reach Redis unvalidated. Unsafe requests (``POST``...)
must be JSON from the app's own origin (or :data:`FLASHSALE_ALLOWED_ORIGINS`),
which turns away cross-site request forgery before anything reaches Redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from . import errors
from .admission import admit_checked, check_quantity, check_user_id
from .config import normalize_origin, redis_address
from .errors import FlashSaleError, InvalidSaleId, problem_from_http_exception
from .keys import check_sale_id
from .models import SOLD_OUT_FROM_MEMORY
from .openapi import openapi_document
from .responses import LocationPrefixes, TicketAccepted
from .waiting import PASS_HEADER, PLACE_COOKIE, PLACE_HEADER

if TYPE_CHECKING:
    from .extension import FlashSale
    from .models import Admission
    from .ratelimit import Rate
    from .waiting import QueueStatus

_REFUSALS: dict[str, type[FlashSaleError]] = {
    "sold_out": errors.SoldOut,
    "limit_reached": errors.LimitReached,
    "not_started": errors.NotStarted,
    "ended": errors.Ended,
    "rate_limited": errors.RateLimited,
    "not_found": errors.SaleNotFound,
    "busy": errors.BackendUnavailable,
    "idempotency_mismatch": errors.IdempotencyMismatch,
    "pass_required": errors.PassRequired,
    "pass_invalid": errors.PassInvalid,
}

#: Sale ids that :meth:`FlashSale.create_sale` refuses: the first path segments
#: of the blueprint's fixed routes (``<prefix>/openapi.json``,
#: ``<prefix>/orders/<ticket_id>``), which a sale with that id would collide
#: with. Keep in step with the routes in :func:`create_blueprint` (a test does).
RESERVED_SALE_IDS = frozenset({"openapi.json", "orders"})

#: Methods that change nothing: the cross-site checks leave them alone.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
JSON_MEDIA_TYPE = "application/json"

#: ``json.dumps(data, separators=(",", ":"))`` without making an encoder per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = _encode(data)
    return current_app.response_class(body, status, headers, mimetype="application/json")


def problem_response(error: FlashSaleError) -> Response:
    """Render ``error`` as a problem+json response without raising it.

    The order view returns its refusals (sold out, limit reached...) this way:
    raising them would send every "no" of a flash sale through Flask's
    exception handling and werkzeug's WSGI-app conversion of the exception,
    which costs about as much again as the rest of the request.
    """
    return current_app.response_class(error.get_body(), error.code, error.get_headers())


def cross_site_refusal(
    environ: dict[str, Any], allowed_origins: Callable[[], frozenset[str]]
) -> FlashSaleError | None:
    """Why the current unsafe request must be refused as cross-site, or ``None``.

    * ``Origin`` present and neither the app's own (``scheme://host[:port]`` of
      the request as Flask sees it; behind a proxy, :class:`ProxyFix` makes it
      right) nor in ``allowed_origins()`` (called only then): 403
      ``cross_origin``. ``Origin: null`` is always refused; no ``Origin`` at
      all (curl, apps, servers) is allowed.
    * A ``Content-Type`` other than ``application/json`` (parameters such as
      ``charset`` allowed; ``+json`` types are not), even with an empty body,
      or a body without a ``Content-Type``: 415 ``unsupported_media_type``.

    Costs no Redis call; reads ``environ`` only, unless there is something to check.
    """
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        claimed = normalize_origin(origin)
        own = normalize_origin(f"{request.scheme}://{request.host}")
        if claimed is None or (claimed != own and claimed not in allowed_origins()):
            return errors.CrossOrigin(f"requests from origin {origin[:100]!r} are not accepted")
    if environ.get("CONTENT_TYPE"):
        mimetype = request.mimetype
        if mimetype != JSON_MEDIA_TYPE:
            return errors.UnsupportedMediaType(
                f"the body must be {JSON_MEDIA_TYPE}, not {mimetype[:100]!r}"
            )
        return None
    length = environ.get("CONTENT_LENGTH")
    if (length and length.strip("0 \t")) or "HTTP_TRANSFER_ENCODING" in environ:
        return errors.UnsupportedMediaType(f"a body needs Content-Type: {JSON_MEDIA_TYPE}")
    return None


#: ``CONTENT_LENGTH`` values of a request without a body (when no
#: ``Transfer-Encoding`` is sent): werkzeug's ``content_length`` is ``None`` or 0.
NO_BODY = frozenset({None, "", "0"})
#: The WSGI environ keys of the order's headers (what ``request.headers.get`` reads).
IDEMPOTENCY_KEY_ENVIRON = "HTTP_IDEMPOTENCY_KEY"
PASS_ENVIRON = "HTTP_" + PASS_HEADER.upper().replace("-", "_")

#: The members an order body may have; any other is refused (422, naming it).
ORDER_FIELDS = frozenset({"quantity"})


def no_sale(sale_id: str) -> errors.SaleNotFound:
    """The one 404 of the API for a sale that does not exist (or whose id cannot be one)."""
    return errors.SaleNotFound(f"no sale {sale_id[:80]!r}")


def read_quantity(max_body: int, max_quantity: int) -> int:
    """Read and validate the optional JSON body ``{"quantity": n}``.

    Any other member is refused with 422 ``invalid_request`` naming it, so a
    misspelt ``{"qty": 3}`` is not taken as an order for one unit.
    """
    length = request.content_length
    if not length and "HTTP_TRANSFER_ENCODING" not in request.environ:
        return 1  # no body at all (the common case): nothing to read or parse
    if length is not None and length > max_body:
        raise errors.PayloadTooLarge(f"the body must be at most {max_body} bytes")
    raw = request.stream.read(max_body + 1)
    if len(raw) > max_body:
        raise errors.PayloadTooLarge(f"the body must be at most {max_body} bytes")
    if not raw.strip():
        return 1
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise errors.InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise errors.InvalidRequest("the body must be a JSON object")
    if not ORDER_FIELDS.issuperset(body):
        unknown = sorted(set(body) - ORDER_FIELDS)[0]
        raise errors.InvalidRequest(
            f"unknown field {unknown[:100]!r}: the body takes only 'quantity'", field=unknown[:100]
        )
    return check_quantity(body.get("quantity", 1), max_quantity)


def conditional(response: Response) -> Response:
    """Add an ``ETag`` and answer ``304`` to a matching ``If-None-Match``.

    werkzeug's ``make_conditional`` also sets a ``Date`` header, and the WSGI
    server (werkzeug's, gunicorn...) sends its own whatever the app set, so a
    response carried two: ours is dropped, the server's stays.
    """
    response.add_etag()
    response.make_conditional(request)
    response.headers.pop("Date", None)
    return response


def cache_control(max_age: int) -> str:
    """The ``Cache-Control`` of sale data: public for ``max_age`` seconds (0: revalidate)."""
    return f"public, max-age={max_age}" if max_age > 0 else "no-cache"


def refusal(
    admission: Admission, rate: Rate | None = None, sale_id: str | None = None
) -> FlashSaleError:
    """The problem+json error for an admission that was not ``queued``/``duplicate``.

    ``rate`` is the admission throttle that refused a ``rate_limited``
    attempt; it gives the ``RateLimit-*`` headers of the 429. ``sale_id``
    words a ``not_found`` as every other 404 of the API does.
    """
    if admission.status == "not_found" and sale_id is not None:
        return no_sale(sale_id)
    cls = _REFUSALS.get(admission.status, errors.BackendUnavailable)
    extra: dict[str, Any] = {}
    if admission.remaining is not None and cls is not errors.SaleNotFound:
        extra["remaining"] = admission.remaining
    headers: dict[str, str] = {}
    if rate is not None and admission.retry_after is not None:
        # The bucket is empty; it is full again (burst - 1) intervals after the next token.
        full_in = admission.retry_after + rate.interval_ms * (rate.burst - 1) / 1000.0
        headers = {
            "RateLimit-Limit": str(rate.burst),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(math.ceil(full_in)),
        }
    return cls(retry_after=admission.retry_after, headers=headers, **extra)


def create_blueprint(ext: FlashSale) -> Blueprint:
    """Build the blueprint served under ``FLASHSALE_URL_PREFIX``."""
    bp = Blueprint("flashsale", __name__)
    # The sold-out fast path answers with one shared Admission; its 409 is
    # rendered once here, so a refusal from memory costs no rendering at all.
    sold_out_from_memory = SOLD_OUT_FROM_MEMORY
    sold_out_error = refusal(sold_out_from_memory)
    sold_out_body = sold_out_error.get_body()
    sold_out_headers = sold_out_error.get_headers()
    location_prefixes = LocationPrefixes()

    @bp.before_request
    def refuse_cross_site() -> Response | None:
        # Every unsafe method of the blueprint, not only the order POST.
        environ = request.environ
        if environ["REQUEST_METHOD"] in SAFE_METHODS:
            return None
        error = cross_site_refusal(environ, allowed_origins)
        return None if error is None else problem_response(error)

    def allowed_origins() -> frozenset[str]:
        return ext.state().settings.allowed_origins

    @bp.get("")
    def list_sales() -> Response:
        max_age = ext.state().settings.cache_max_age
        response = _json(
            {"sales": [s.to_dict() for s in ext.list_sales()]},
            headers={"Cache-Control": cache_control(max_age)},
        )
        return conditional(response)

    @bp.get("/openapi.json")
    def openapi() -> Response:
        settings = ext.state().settings
        prefix = request.script_root + settings.url_prefix
        return _json(openapi_document(prefix, max_quantity=settings.max_quantity))

    @bp.get("/<sale_id>")
    def sale_detail(sale_id: str) -> Response:
        sale = ext.get_sale(check_sale_id(sale_id))
        if sale is None:
            raise no_sale(sale_id)
        max_age = ext.state().settings.cache_max_age
        response = _json(sale.to_dict(), headers={"Cache-Control": cache_control(max_age)})
        return conditional(response)

    @bp.post("/<sale_id>/order")
    def order(sale_id: str) -> Response:
        # The hot path of a flash sale: each proxy (``request``, ``current_app``)
        # is resolved once, headers are read from the WSGI environ (what
        # ``request.headers.get`` reads too), and the arguments are validated
        # here once (``place_order`` would validate them again).
        check_sale_id(sale_id)
        user_id = check_user_id(ext.current_user_id())
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        req = request._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions["flashsale"]
        environ = req.environ
        if "HTTP_TRANSFER_ENCODING" in environ or environ.get("CONTENT_LENGTH") not in NO_BODY:
            settings = state.settings
            quantity = read_quantity(settings.max_body, settings.max_quantity)
        else:
            quantity = 1  # no body at all (the common case): nothing to read or parse
        admission = admit_checked(
            state,
            sale_id,
            user_id,
            quantity,
            environ.get(IDEMPOTENCY_KEY_ENVIRON),
            environ.get(PASS_ENVIRON),
        )
        if admission is sold_out_from_memory:
            return app.response_class(sold_out_body, 409, sold_out_headers)  # type: ignore[no-any-return]
        status = admission.status
        if status != "queued" and status != "duplicate":
            rate = None
            if admission.throttled_by is not None:
                rate = state.order_rates[admission.throttled_by]
            return problem_response(refusal(admission, rate, sale_id))
        ticket_id = admission.ticket_id
        body = _encode({"ticket_id": ticket_id, "status": status, "remaining": admission.remaining})
        prefix = f"{req.script_root}{state.settings.url_prefix}/orders/"
        # The Location as a URI already, for TicketAccepted to send as is (see
        # responses.py); the host's own response class gets the plain path.
        uri = location_prefixes.get(prefix) if app.response_class is Response else None
        location = f"{prefix if uri is None else uri}{ticket_id}"
        headers = [("Location", location)]
        if status == "duplicate":
            headers.append(("Idempotent-Replayed", "true"))
        headers.append(("Content-Type", JSON_MEDIA_TYPE))
        if uri is not None:
            return TicketAccepted(body, headers, location)
        return app.response_class(body, 202, headers)  # type: ignore[no-any-return]

    @bp.get("/<sale_id>/orders")
    def buyer_tickets(sale_id: str) -> Response:
        check_sale_id(sale_id)
        user_id = ext.current_user_id()
        if user_id is None:
            raise errors.IdentityRequired()
        if ext.get_sale(sale_id) is None:
            raise no_sale(sale_id)
        tickets = [t.to_dict() for t in ext.user_tickets(sale_id, user_id)]
        return _json({"tickets": tickets}, headers={"Cache-Control": "no-store"})

    def queue_answer(sale_id: str, status: QueueStatus, sent: str | None) -> Response:
        response = _json(status.to_dict(), headers={"Cache-Control": "no-store"})
        token = status.place_token
        if token is not None:
            response.headers[PLACE_HEADER] = token
            if token != sent:
                path = f"{request.script_root}{ext.state().settings.url_prefix}/{sale_id}/queue"
                response.set_cookie(
                    PLACE_COOKIE,
                    token,
                    path=path,
                    secure=request.is_secure,
                    httponly=True,
                    samesite="Lax",
                )
        return response

    @bp.post("/<sale_id>/queue")
    def join_queue(sale_id: str) -> Response:
        check_sale_id(sale_id)
        user_id = ext.current_user_id()
        if user_id is None:
            raise errors.IdentityRequired()
        return queue_answer(sale_id, ext.join_queue(sale_id, user_id), None)

    @bp.get("/<sale_id>/queue")
    def queue_status(sale_id: str) -> Response:
        check_sale_id(sale_id)
        user_id = ext.current_user_id()
        if user_id is None:
            raise errors.IdentityRequired()
        # The header first (API clients), then the cookie (browsers); a token of
        # another buyer or an older queue is ignored (one Redis call then).
        sent = request.headers.get(PLACE_HEADER) or request.cookies.get(PLACE_COOKIE)
        status = ext.queue_status(sale_id, user_id, place_token=sent)
        return queue_answer(sale_id, status, sent)

    @bp.get("/orders/<ticket_id>")
    def ticket(ticket_id: str) -> Response:
        user_id = ext.current_user_id()
        if user_id is None:
            raise errors.IdentityRequired()
        found = ext.get_ticket(ticket_id)
        if found is None or found.user_id != user_id:
            raise errors.TicketNotFound()
        return _json(found.to_dict(), headers={"Cache-Control": "no-store"})

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> FlashSaleError:
        if isinstance(exc, InvalidSaleId):
            return no_sale(exc.sale_id)  # in a URL, an id that cannot be one is no sale
        return problem_from_http_exception(exc)

    @bp.errorhandler(redis.RedisError)
    def redis_error(exc: redis.RedisError) -> FlashSaleError:
        current_app.logger.warning(
            "flashsale: Redis error at %s: %s: %s",
            redis_address(ext.state().settings.redis_url),
            type(exc).__name__,
            exc,
        )
        return errors.BackendUnavailable("the sale backend is unavailable", retry_after=1)

    @bp.errorhandler(500)
    def internal_error(exc: HTTPException) -> FlashSaleError:
        return problem_from_http_exception(exc)

    return bp


def install_error_handlers(app: Flask, url_prefix: str) -> None:
    """Answer routing errors (404/405) under ``url_prefix`` as problem+json.

    Routing errors happen before a blueprint is chosen, so they need app-level
    handlers; these render only paths under our prefix and hand every other
    path to the handler the app had before (or Flask's default).
    """
    for code, cls in ((404, NotFound), (405, MethodNotAllowed)):
        previous = app.error_handler_spec[None][code].get(cls)

        def handler(exc: HTTPException, _previous: Any = previous) -> Any:
            path = request.path
            if path == url_prefix or path.startswith(url_prefix + "/"):
                return problem_from_http_exception(exc)
            return _previous(exc) if _previous is not None else exc

        app.register_error_handler(code, handler)
