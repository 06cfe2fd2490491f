"""The ``FlashSaleError`` tree.

Every error the extension raises subclasses :class:`FlashSaleError`, which is a
:class:`werkzeug.exceptions.HTTPException`: a host's ``@app.errorhandler`` works
on it, and when nothing handles it, it renders itself as an RFC 9457
``application/problem+json`` document with a stable ``code``.

``code`` in the JSON body is the stable machine-readable slug (``"sold_out"``);
on the Python object that slug is :attr:`FlashSaleError.error_code`, because
werkzeug already uses the attribute ``code`` for the HTTP status. The
problem's ``type`` is a link to that code's entry on the docs page
``problems.html`` (:data:`PROBLEM_TYPES`).

``str(error)`` is the message alone (the problem's ``detail``), without
werkzeug's ``"500 Internal Server Error: "`` prefix: a
:class:`ConfigurationError` raised while the app starts reads as one line
naming the key, its value and what to do. Errors that are about the
deployment rather than a request (:class:`ConfigurationError`,
:class:`NotInitializedError`) are still part of the tree, so ``except
FlashSaleError`` catches everything the extension raises; they would render as
a ``500`` only if a host let one escape from a view.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

PROBLEM_JSON = "application/problem+json"

#: The docs page listing every ``code``; a problem's ``type`` is this URL plus
#: ``#`` and the code's anchor (:func:`problem_type`).
PROBLEM_TYPES = "https://flask-flashsale.readthedocs.io/en/latest/problems.html"


def problem_type(error_code: str) -> str:
    """The ``type`` URL of a problem: the ``error_code``'s entry on the problems page.

    Sphinx spells the anchor of a section titled ``sold_out`` as ``sold-out``.
    """
    return f"{PROBLEM_TYPES}#{error_code.replace('_', '-')}"


class FlashSaleError(HTTPException):
    """Base class of every error raised by Flask-FlashSale."""

    #: HTTP status used when the error reaches a client.
    code: int = 500
    #: Stable machine-readable identifier, sent as ``code`` in problem+json.
    error_code: str = "internal_error"
    #: Short human-readable summary, sent as ``title``.
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        #: Seconds after which a retry may succeed (sent as ``Retry-After``).
        self.retry_after = retry_after
        #: Extra members of the problem document (``remaining``, ``limit``...).
        self.extra = extra
        self._headers = dict(headers or {})

    def problem(self) -> dict[str, Any]:
        """Return the RFC 9457 problem document of this error."""
        doc: dict[str, Any] = {
            "type": problem_type(self.error_code),
            "title": self.title,
            "status": self.code,
            "code": self.error_code,
            "detail": self.description,
        }
        if self.retry_after is not None:
            doc["retry_after"] = self.retry_after
        doc.update(self.extra)
        return doc

    def __str__(self) -> str:
        """The message alone (``detail``), without werkzeug's HTTP status prefix."""
        return str(self.description)

    def get_body(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, Any] | None = None
    ) -> str:
        """Render the problem document as JSON."""
        return json.dumps(self.problem(), separators=(",", ":"))

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        """Problem content type, plus ``Retry-After`` and any extra headers."""
        headers = [("Content-Type", PROBLEM_JSON)]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(max(1, int(-(-self.retry_after // 1))))))
        headers.extend(self._headers.items())
        return headers


class ConfigurationError(FlashSaleError):
    """The app's ``FLASHSALE_*`` configuration is invalid (raised at start-up).

    Also raised when something the configuration needs is missing (an extra
    such as ``memory``, a hook such as ``@flashsale.reconcile_source``). Its
    message names the key, the value and what to do.
    """

    error_code = "configuration_error"
    title = "Flask-FlashSale is misconfigured"


class NotInitializedError(FlashSaleError):
    """The extension was used before ``init_app`` was called for this app."""

    error_code = "not_initialized"
    title = "Flask-FlashSale is not initialised for this app"


class IdentityRequired(FlashSaleError):
    """No buyer identity: the identity loader returned ``None``."""

    code = 401
    error_code = "identity_required"
    title = "Sign in to buy"


class CrossOrigin(FlashSaleError):
    """A state-changing request came from another site (its ``Origin`` is not ours).

    Only the app's own origin and :data:`FLASHSALE_ALLOWED_ORIGINS` may send
    unsafe requests (``POST``...) to the blueprint; ``Origin: null`` never may.
    """

    code = 403
    error_code = "cross_origin"
    title = "Cross-origin request refused"


class PassRequired(FlashSaleError):
    """An order for a sale with a waiting room came without a ``FlashSale-Pass``.

    Join the queue (``POST <prefix>/<sale_id>/queue``) and order with the pass
    it hands out once the buyer is ``ready``.
    """

    code = 403
    error_code = "pass_required"
    title = "Join the queue first: this sale needs a pass"


class PassInvalid(FlashSaleError):
    """The ``FlashSale-Pass`` is not a valid, unexpired pass for this buyer and sale."""

    code = 403
    error_code = "pass_invalid"
    title = "Invalid or expired pass"


class SaleNotFound(FlashSaleError):
    """The sale does not exist (or its id is not a valid sale id)."""

    code = 404
    error_code = "sale_not_found"
    title = "No such sale"


class InvalidSaleId(SaleNotFound):
    """The string cannot be a sale id: not 1-64 of ``A-Z a-z 0-9 _ . -``, or reserved.

    A :class:`SaleNotFound` (no sale can have that id, so ``except
    SaleNotFound`` still catches it) with a code of its own, so that
    ``create_sale("bad/id")`` does not read as "no such sale". The blueprint
    answers an invalid id in a URL like an unknown one: ``404
    sale_not_found``.
    """

    error_code = "invalid_sale_id"
    title = "Invalid sale id"

    def __init__(self, sale_id: object, detail: str | None = None) -> None:
        shown = str(sale_id)[:80]
        super().__init__(
            detail or f"{shown!r} is not a valid sale id: use 1-64 characters of A-Z a-z 0-9 _ . -"
        )
        #: The id (its first 80 characters).
        self.sale_id = shown


class TicketNotFound(FlashSaleError):
    """The ticket does not exist, has expired, or belongs to someone else."""

    code = 404
    error_code = "ticket_not_found"
    title = "No such order ticket"


class NotInQueue(FlashSaleError):
    """The buyer has no place in the sale's waiting room (never joined)."""

    code = 404
    error_code = "not_in_queue"
    title = "Not in the queue"


class NotFound(FlashSaleError):
    """No such resource under the extension's URL prefix."""

    code = 404
    error_code = "not_found"
    title = "Not found"


class SoldOut(FlashSaleError):
    """Not enough stock is left for the requested quantity."""

    code = 409
    error_code = "sold_out"
    title = "Sold out"


class LimitReached(FlashSaleError):
    """The buyer already holds the per-user limit of this sale."""

    code = 409
    error_code = "limit_reached"
    title = "Per-buyer limit reached"


class NotStarted(FlashSaleError):
    """The sale window has not opened yet."""

    code = 409
    error_code = "not_started"
    title = "The sale has not started"


class NoQueue(FlashSaleError):
    """The sale has no waiting room (``fairness="none"``): order directly."""

    code = 409
    error_code = "no_queue"
    title = "This sale has no queue"


class QueueNotOpen(FlashSaleError):
    """The sale's waiting room opens later (``queue_opens_at``); ``retry_after`` says when."""

    code = 409
    error_code = "queue_not_open"
    title = "The queue is not open yet"


class Ended(FlashSaleError):
    """The sale window has closed."""

    code = 410
    error_code = "ended"
    title = "The sale has ended"


class PayloadTooLarge(FlashSaleError):
    """The request body is larger than ``FLASHSALE_MAX_BODY``."""

    code = 413
    error_code = "payload_too_large"
    title = "Request body too large"


class InvalidRequest(FlashSaleError):
    """The request is malformed (bad JSON, wrong types, out-of-range values)."""

    code = 422
    error_code = "invalid_request"
    title = "Invalid request"


class UnsupportedMediaType(FlashSaleError):
    """A state-changing request's body is not ``application/json``.

    Also raised for a non-JSON ``Content-Type`` with an empty body, and for a
    body without any ``Content-Type``: a cross-site form always sends one of
    those, never JSON.
    """

    code = 415
    error_code = "unsupported_media_type"
    title = "Unsupported media type"


class IdempotencyMismatch(FlashSaleError):
    """An ``Idempotency-Key`` was reused with other parameters (another quantity)."""

    code = 422
    error_code = "idempotency_mismatch"
    title = "Idempotency-Key reused with different parameters"


class RateLimited(FlashSaleError):
    """Too many requests: a token bucket is empty."""

    code = 429
    error_code = "rate_limited"
    title = "Too many requests"


class BackendUnavailable(FlashSaleError):
    """Redis cannot be reached (or the circuit breaker is open)."""

    code = 503
    error_code = "backend_unavailable"
    title = "Service temporarily unavailable"


class LockNotAcquired(FlashSaleError):
    """A distributed lock was not acquired within ``blocking_timeout``."""

    code = 503
    error_code = "lock_timeout"
    title = "Lock not acquired in time"


class LockLost(FlashSaleError):
    """The lock's lease expired and another holder took it."""

    code = 409
    error_code = "lock_lost"
    title = "Lock lost"


class PaymentRefused(FlashSaleError):
    """:meth:`FlashSale.mark_paid` cannot pay this ticket: it was cancelled or failed.

    Its stock is back on sale: refund the buyer. :attr:`ticket_status` is
    the ticket's status (also in the problem document).
    :class:`PaymentTooLate` is the case of a deadline missed.
    """

    code = 409
    error_code = "payment_refused"
    title = "The order can no longer be paid"

    def __init__(
        self, detail: str | None = None, *, ticket_status: str = "", **extra: Any
    ) -> None:
        super().__init__(detail, ticket_status=ticket_status, **extra)
        #: The ticket's status when payment was refused.
        self.ticket_status = ticket_status


class PaymentTooLate(PaymentRefused):
    """The ticket's ``pay_by`` has passed (or it is already ``expired``).

    Judged on Redis time, so it is raised after ``pay_by`` even if no worker
    has expired the hold yet. The hold's stock goes (or went) back on sale:
    refund the buyer.
    """

    error_code = "payment_too_late"
    title = "Payment arrived after the deadline"


#: The ``code`` of werkzeug's own HTTP errors (routing, body parsing...) when the
#: extension renders them as problems, by status (:func:`problem_from_http_exception`).
HTTP_ERROR_CODES: dict[int, str] = {
    400: "bad_request",
    404: NotFound.error_code,
    405: "method_not_allowed",
    413: PayloadTooLarge.error_code,
    415: UnsupportedMediaType.error_code,
}
#: The ``code`` of any other 4xx werkzeug error rendered as a problem.
HTTP_ERROR = "http_error"
#: The ``code`` of a 5xx (the base :class:`FlashSaleError`'s).
INTERNAL_ERROR = FlashSaleError.error_code


def problem_from_http_exception(exc: HTTPException) -> FlashSaleError:
    """Wrap any werkzeug HTTP error as a problem+json :class:`FlashSaleError`.

    Its ``code`` comes from :data:`HTTP_ERROR_CODES` (else :data:`HTTP_ERROR`
    or :data:`INTERNAL_ERROR`), its title is werkzeug's name of the status.
    The error's own headers (a 405's ``Allow``...) are kept.
    """
    if isinstance(exc, FlashSaleError):
        return exc
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    error = FlashSaleError(exc.description, headers=headers)
    error.code = status
    error.error_code = HTTP_ERROR_CODES.get(status, INTERNAL_ERROR if status >= 500 else HTTP_ERROR)
    error.title = exc.name
    return error
