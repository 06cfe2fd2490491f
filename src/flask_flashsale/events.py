"""The cache events: what is published on ``<prefix>:events`` and how it reads.

A message is ``"<kind> <sale_id>"``. Python publishes through :func:`event`;
the Lua scripts that publish get the whole message in ``ARGV`` (built here),
so no script spells a kind. The in-process cache
(:class:`~flask_flashsale.cache.SaleCache`) applies them.
"""

from __future__ import annotations

#: Message kind: a sale was created, replaced, deleted or restocked, or stock was given back.
CHANGED = "changed"
#: Message kind: admission took the last unit of a sale.
SOLD_OUT = "sold_out"


def event(kind: str, sale_id: str) -> str:
    """The pub/sub message for ``kind`` (:data:`CHANGED` or :data:`SOLD_OUT`) about ``sale_id``."""
    return f"{kind} {sale_id}"


def parse_event(message: str) -> tuple[str, str]:
    """``(kind, sale_id)`` of a message; ``sale_id`` is ``""`` if there is none."""
    kind, _, sale_id = message.partition(" ")
    return kind, sale_id
