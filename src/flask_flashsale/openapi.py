"""The OpenAPI 3.1 description of the blueprint, served at ``/openapi.json``.

Limits the code enforces (sale id and ``Idempotency-Key`` patterns,
:data:`FLASHSALE_MAX_QUANTITY`) are read from where they are enforced, so the
document cannot drift from the API.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .errors import HTTP_ERROR_CODES
from .keys import IDEMPOTENCY_KEY, SALE_ID
from .waiting import PASS_HEADER, PLACE_COOKIE, PLACE_HEADER

_PROBLEM = {"$ref": "#/components/responses/Problem"}

#: Every ``code`` a problem answer of the blueprint can carry (spelled in :mod:`.errors`).
PROBLEM_CODES = (
    errors.IdentityRequired.error_code,
    errors.CrossOrigin.error_code,
    errors.SaleNotFound.error_code,
    errors.TicketNotFound.error_code,
    errors.NotFound.error_code,
    HTTP_ERROR_CODES[400],
    HTTP_ERROR_CODES[405],
    errors.SoldOut.error_code,
    errors.LimitReached.error_code,
    errors.NotStarted.error_code,
    errors.Ended.error_code,
    errors.PayloadTooLarge.error_code,
    errors.UnsupportedMediaType.error_code,
    errors.InvalidRequest.error_code,
    errors.IdempotencyMismatch.error_code,
    errors.RateLimited.error_code,
    errors.BackendUnavailable.error_code,
    errors.PassRequired.error_code,
    errors.PassInvalid.error_code,
    errors.NoQueue.error_code,
    errors.NotInQueue.error_code,
    errors.QueueNotOpen.error_code,
)


def _problems(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


def openapi_document(prefix: str, *, max_quantity: int) -> dict[str, Any]:
    """Return the OpenAPI document with paths under ``prefix``.

    ``max_quantity`` is :data:`FLASHSALE_MAX_QUANTITY`, the largest quantity
    one order may ask for.
    """
    sale_id = {
        "name": "sale_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": f"^{SALE_ID.pattern}$"},
    }
    place_token = {
        "name": PLACE_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "The place token of an earlier queue answer (its FlashSale-Place header; "
            f"browsers send the {PLACE_COOKIE} cookie instead): the poll is then "
            "answered without a Redis call"
        ),
        "schema": {"type": "string"},
    }
    queue_answer = {
        "description": "The buyer's place (Cache-Control: no-store)",
        "headers": {
            PLACE_HEADER: {
                "description": (
                    f"Signed place token; send it back (or the {PLACE_COOKIE} cookie "
                    "set with it) when polling"
                ),
                "schema": {"type": "string"},
            }
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QueueStatus"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Flask-FlashSale API", "version": "1"},
        "paths": {
            prefix: {
                "get": {
                    "operationId": "listSales",
                    "summary": "List every sale",
                    "responses": {
                        "200": {
                            "description": "The sales",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "sales": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Sale"},
                                            }
                                        },
                                        "required": ["sales"],
                                    }
                                }
                            },
                        },
                        **_problems(503),
                    },
                }
            },
            prefix + "/{sale_id}": {
                "get": {
                    "operationId": "getSale",
                    "summary": "One sale",
                    "parameters": [sale_id],
                    "responses": {
                        "200": {
                            "description": "The sale (with ETag and Cache-Control)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Sale"}
                                }
                            },
                        },
                        "304": {"description": "Not modified (If-None-Match)"},
                        **_problems(404, 503),
                    },
                }
            },
            prefix + "/{sale_id}/order": {
                "post": {
                    "operationId": "placeOrder",
                    "summary": "Try to buy: admits the order or says why not",
                    "parameters": [
                        sale_id,
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "description": (
                                "Retrying with the same key returns the same ticket; "
                                "reusing it with another quantity is refused (422 "
                                "idempotency_mismatch)"
                            ),
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                                "pattern": f"^{IDEMPOTENCY_KEY.pattern}$",
                            },
                        },
                    ],
                    # The pass is a credential: optional, required only by a sale with
                    # a waiting room (without it 403 pass_required; an invalid one 403
                    # pass_invalid).
                    "security": [{}, {"FlashSalePass": []}],
                    "requestBody": {
                        "required": False,
                        "description": (
                            "Optional; with a body, Content-Type must be application/json "
                            "(else 415). A request whose Origin is not the app's own (or "
                            "an allowed one) is refused with 403 cross_origin."
                        ),
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "quantity": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": max_quantity,
                                            "default": 1,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Admitted (or the same ticket again for a repeated key)",
                            "headers": {
                                "Location": {
                                    "description": "The ticket's URL",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Admission"}
                                }
                            },
                        },
                        **_problems(401, 403, 404, 409, 410, 413, 415, 422, 429, 503),
                    },
                }
            },
            prefix + "/{sale_id}/orders": {
                "get": {
                    "operationId": "listMyTickets",
                    "summary": "The signed-in buyer's tickets for this sale, oldest first",
                    "description": (
                        "Finds an order whose answer was lost (timeout, 503): "
                        "every ticket of the buyer for the sale, as getTicket shows it; "
                        "expired tickets are left out."
                    ),
                    "parameters": [sale_id],
                    "responses": {
                        "200": {
                            "description": "The buyer's tickets (Cache-Control: no-store)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "tickets": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Ticket"},
                                            }
                                        },
                                        "required": ["tickets"],
                                    }
                                }
                            },
                        },
                        **_problems(401, 404, 503),
                    },
                }
            },
            prefix + "/{sale_id}/queue": {
                "post": {
                    "operationId": "joinQueue",
                    "summary": "Join the sale's waiting room (one place per buyer)",
                    "description": (
                        "Joining again returns the same place, unless the buyer's pass "
                        "lapsed unused (status expired): then a new place at the back. "
                        "No body, or a JSON one (ignored); cross-site rules as for orders. "
                        "409 no_queue for a sale without a waiting room, 409 "
                        "queue_not_open before queue_opens_at (with Retry-After)."
                    ),
                    "parameters": [sale_id],
                    "responses": {
                        "200": queue_answer,
                        **_problems(401, 403, 404, 409, 415, 429, 503),
                    },
                },
                "get": {
                    "operationId": "pollQueue",
                    "summary": "The buyer's place in the waiting room",
                    "description": (
                        "404 not_in_queue for a buyer who never joined; 409 no_queue "
                        "for a sale without a waiting room."
                    ),
                    "parameters": [sale_id, place_token],
                    "responses": {"200": queue_answer, **_problems(401, 404, 409, 429, 503)},
                },
            },
            prefix + "/orders/{ticket_id}": {
                "get": {
                    "operationId": "getTicket",
                    "summary": "An order's status (its owner only)",
                    "parameters": [
                        {
                            "name": "ticket_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The ticket",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Ticket"}
                                }
                            },
                        },
                        **_problems(401, 404, 503),
                    },
                }
            },
            prefix + "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
        "components": {
            "schemas": {
                "Sale": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": ["upcoming", "active", "sold_out", "ended"],
                        },
                        "stock": {"type": "integer"},
                        "remaining": {"type": "integer"},
                        "price": {"type": ["string", "null"]},
                        "starts_at": {"type": ["string", "null"], "format": "date-time"},
                        "ends_at": {"type": ["string", "null"], "format": "date-time"},
                        "per_user_limit": {"type": "integer"},
                        "info": {"type": "object"},
                        "payment_timeout": {
                            "type": ["number", "null"],
                            "description": "Seconds a buyer has to pay (null: no time limit)",
                        },
                        "fairness": {"type": "string", "enum": ["none", "fifo", "lottery"]},
                        "admit_rate": {"type": ["number", "null"]},
                        "queue_opens_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                    "required": ["id", "status", "remaining"],
                },
                "QueueStatus": {
                    "type": "object",
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": ["waiting", "ready", "expired", "sold_out", "ended"],
                        },
                        "position": {
                            "type": ["integer", "null"],
                            "description": "1 = first; null in a lottery until the draw",
                        },
                        "ahead": {"type": ["integer", "null"]},
                        "eta_seconds": {"type": ["number", "null"]},
                        "poll_after": {"type": ["number", "null"]},
                        "pass": {
                            "type": ["string", "null"],
                            "description": f"Set when ready: send it as {PASS_HEADER}",
                        },
                        "pass_expires_at": {"type": ["string", "null"], "format": "date-time"},
                    },
                    "required": [
                        "status",
                        "position",
                        "ahead",
                        "eta_seconds",
                        "poll_after",
                        "pass",
                        "pass_expires_at",
                    ],
                },
                "Admission": {
                    "type": "object",
                    "properties": {
                        "ticket_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["queued", "duplicate"]},
                        "remaining": {"type": ["integer", "null"]},
                    },
                    "required": ["ticket_id", "status"],
                },
                "Ticket": {
                    "type": "object",
                    "properties": {
                        "ticket_id": {"type": "string"},
                        "sale_id": {"type": "string"},
                        "quantity": {"type": "integer"},
                        "status": {
                            "type": "string",
                            "enum": [
                                "queued",
                                "confirmed",
                                "failed",
                                "cancelled",
                                "awaiting_payment",
                                "paid",
                                "expired",
                            ],
                            "description": (
                                "On a sale with a payment timeout the order hook's success "
                                "gives awaiting_payment (until pay_by), then paid or expired"
                            ),
                        },
                        "reason": {"type": ["string", "null"]},
                        "pay_by": {"type": ["string", "null"], "format": "date-time"},
                    },
                    "required": ["ticket_id", "status"],
                },
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "code": {
                            "type": "string",
                            "enum": list(PROBLEM_CODES),
                        },
                        "detail": {"type": "string"},
                        "retry_after": {"type": "number"},
                    },
                    "required": ["type", "title", "status", "code"],
                },
            },
            "securitySchemes": {
                "FlashSalePass": {
                    "type": "apiKey",
                    "in": "header",
                    "name": PASS_HEADER,
                    "description": (
                        "The pass of a ready buyer (the pass field of joinQueue / "
                        "pollQueue), required to order from a sale with a waiting room: "
                        "without it 403 pass_required; forged, expired, another buyer's "
                        "or another sale's: 403 pass_invalid"
                    ),
                }
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem (application/problem+json)",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
        },
    }
