"""The operator dashboard: a live HTML page and its JSON, behind ``@flashsale.dashboard_access``.

Served at :data:`FLASHSALE_DASHBOARD_PATH` (off by default):

* ``GET <path>`` the page (template ``flashsale/dashboard.html``, script and
  style under ``<path>/static/``: no third-party code, no CDN);
* ``GET <path>/status.json`` what the page polls;
* ``POST <path>/sales/<sale_id>/dead-letters/<entry_id>/requeue`` the requeue
  button (same cross-site rules as the order ``POST``).

Every request, the static files included, first asks the host's
``@flashsale.dashboard_access`` function; without one, or when it returns a
false value, the answer is 403 ``dashboard_forbidden``.

The figures are :meth:`FlashSale.status` (what ``flask flashsale status``
prints). Admissions per second: the order path writes nothing for a refusal
(one round trip, no counter), so Redis holds no per-result count across
processes. The page therefore derives rates from cumulative figures sampled at
each poll, and says where each comes from:

* ``units admitted`` (every process): ``stock - remaining`` as Redis has it;
  its rise per second is units admitted, a fall is stock given back;
* ``dead letters``, ``paid`` and ``expired`` (every process): Redis counters
  of :meth:`FlashSale.status`;
* answers by result (``queued``, ``sold_out``, ``limit_reached``...): the
  ``flashsale_admissions_total`` Prometheus counter of *this* web process
  (when :data:`FLASHSALE_METRICS` is on), labelled as such on the page.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import redis
from flask import Blueprint, Response, current_app, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from . import errors
from .errors import FlashSaleError, problem_from_http_exception
from .keys import check_sale_id
from .status import SaleStatus
from .views import SAFE_METHODS, cross_site_refusal, problem_response

if TYPE_CHECKING:
    from .extension import FlashSale, FlashSaleState

#: Dead letters listed per sale in ``status.json`` (the requeue buttons); the
#: count is always the full one.
DEAD_LETTERS_SHOWN = 20


class DashboardForbidden(FlashSaleError):
    """The dashboard's access check (``@flashsale.dashboard_access``) said no, or is missing."""

    code = 403
    error_code = "dashboard_forbidden"
    title = "Operators only"


class RequeueRefused(FlashSaleError):
    """A dead letter could not be requeued; ``outcome`` says why (``sold_out``...)."""

    code = 409
    error_code = "requeue_refused"
    title = "Dead letter not requeued"


def waiting_room(status: SaleStatus) -> dict[str, Any] | None:
    """The sale's waiting room for the page (``waiting`` = places not yet let through).

    ``None`` when the sale has no queue (``fairness="none"``): the page shows nothing.
    """
    w = status.waiting
    if w is None:
        return None
    return {
        "fairness": w.fairness,
        "admit_rate": w.admit_rate,
        "joined": w.joined,
        "waiting": w.waiting,
        "let_through": w.let_through,
        "passes_used": w.passes_used,
        "drawn": w.drawn,
    }


def process_admissions(state: FlashSaleState) -> dict[str, dict[str, float]] | None:
    """This process's ``flashsale_admissions_total`` by sale, then result.

    ``None`` when metrics are off (:data:`FLASHSALE_METRICS`).
    """
    metrics = state.metrics
    if metrics is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for family in metrics.admissions.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                out.setdefault(labels["sale"], {})[labels["result"]] = sample.value
    return out


def dashboard_document(ext: FlashSale) -> dict[str, Any]:
    """The JSON the dashboard page polls (``<path>/status.json``)."""
    state = ext.state()
    status = ext.status()
    answers = process_admissions(state)
    sales = []
    for s in status.sales:
        sale = s.sale
        letters = (
            [d.to_dict() for d in state.orders.dead_letters(sale.id, DEAD_LETTERS_SHOWN)]
            if s.queue.dead_letters
            else []
        )
        sales.append(
            {
                **s.to_dict(),
                "id": sale.id,
                "name": str(sale.info.get("name") or sale.id),
                "starts_at": None if sale.starts_at is None else sale.starts_at.isoformat(),
                "ends_at": None if sale.ends_at is None else sale.ends_at.isoformat(),
                "units_admitted": sale.stock - sale.remaining,
                "dead_letter_entries": letters,
                "waiting_room": waiting_room(s),
                "answers": None if answers is None else answers.get(sale.id, {}),
            }
        )
    return {
        "sampled_at": time.time(),
        "answers_source": None if answers is None else "this web process",
        "sales": sales,
        "workers": [w.to_dict() for w in status.workers],
        "supervisors": [v.to_dict() for v in status.supervisors],
    }


def _json(data: Any, status: int = 200) -> Response:
    return current_app.response_class(
        json.dumps(data, separators=(",", ":")),
        status,
        {"Cache-Control": "no-store"},
        mimetype="application/json",
    )


def create_dashboard(ext: FlashSale) -> Blueprint:
    """The dashboard blueprint of ``ext`` (registered by ``init_app`` when the path is set)."""
    bp = Blueprint(
        "flashsale_dashboard",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )

    @bp.before_request
    def operators_only() -> Response | None:
        if not ext.dashboard_allowed():
            return problem_response(
                DashboardForbidden("the dashboard is for operators (@flashsale.dashboard_access)")
            )
        environ = request.environ
        if environ["REQUEST_METHOD"] in SAFE_METHODS:
            return None
        error = cross_site_refusal(environ, lambda: ext.state().settings.allowed_origins)
        return None if error is None else problem_response(error)

    @bp.after_request
    def no_framing(response: Response) -> Response:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @bp.get("")
    def page() -> str:
        return render_template(
            "flashsale/dashboard.html",
            status_url=url_for(".status_json"),
            requeue_url=url_for(".requeue", sale_id="SALE", entry_id="ENTRY"),
        )

    @bp.get("/status.json")
    def status_json() -> Response:
        return _json(dashboard_document(ext))

    @bp.post("/sales/<sale_id>/dead-letters/<entry_id>/requeue")
    def requeue(sale_id: str, entry_id: str) -> Response:
        outcome = ext.state().orders.requeue(check_sale_id(sale_id), entry_id)
        if outcome == "not_found":
            raise errors.NotFound(f"no dead letter {entry_id[:40]!r} in sale {sale_id!r}")
        if outcome != "queued":
            raise RequeueRefused(f"not requeued: {outcome}", outcome=outcome)
        return _json({"sale_id": sale_id, "entry_id": entry_id, "outcome": outcome})

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> FlashSaleError:
        return problem_from_http_exception(exc)

    @bp.errorhandler(redis.RedisError)
    def redis_error(exc: redis.RedisError) -> FlashSaleError:
        current_app.logger.warning("flashsale dashboard: Redis error: %s", exc)
        return errors.BackendUnavailable("the sale backend is unavailable", retry_after=1)

    return bp
