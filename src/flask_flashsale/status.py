"""What is happening now: every sale's stock, queue and payments, and the live workers.

One reading, shared by ``flask flashsale status`` and the operator dashboard
(:mod:`flask_flashsale.dashboard`), so the two never disagree. The figures come
from the same functions the rest of the extension uses:
:meth:`OrderQueue.stats <flask_flashsale.orders.OrderQueue.stats>`,
:meth:`Payments.stats <flask_flashsale.payments.Payments.stats>` and the
worker registry (:func:`~flask_flashsale.registry.live_workers`,
:func:`~flask_flashsale.registry.live_supervisors`); the Prometheus gauges read
the same Redis keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .models import Sale
from .orders import QueueStats
from .payments import PaymentStats
from .registry import SupervisorInfo, WorkerInfo, live_supervisors, live_workers
from .waiting import QueueStats as WaitingRoomStats

if TYPE_CHECKING:
    from .extension import FlashSaleState


@dataclass(frozen=True, slots=True)
class SaleStatus:
    """One sale as ``status`` shows it: its definition, its queue, payments and waiting room."""

    sale: Sale
    #: The order queue (stream) of the sale.
    queue: QueueStats
    payments: PaymentStats
    #: The sale's waiting room (:doc:`/fairness`), ``None`` for a sale without one.
    waiting: WaitingRoomStats | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of one sale in ``flask flashsale status --json``."""
        return {
            **self.queue.to_dict(),
            "status": self.sale.status,
            "remaining": self.sale.remaining,
            "stock": self.sale.stock,
            "payment_timeout": self.sale.payment_timeout,
            **self.payments.to_dict(),
            **_waiting_json(self.waiting),
        }


def _waiting_json(stats: WaitingRoomStats | None) -> dict[str, Any]:
    """The ``queue`` member of a sale in ``status --json`` (none without a waiting room)."""
    if stats is None:
        return {}
    doc = dataclasses.asdict(stats)
    del doc["sale_id"]
    return {"queue": doc}


@dataclass(frozen=True, slots=True)
class Status:
    """Every sale (by id), the live workers and the live autoscale supervisors."""

    sales: list[SaleStatus]
    workers: list[WorkerInfo]
    supervisors: list[SupervisorInfo]

    def to_dict(self) -> dict[str, Any]:
        """The document ``flask flashsale status --json`` prints."""
        return {
            "sales": [s.to_dict() for s in self.sales],
            "workers": [w.to_dict() for w in self.workers],
            "supervisors": [s.to_dict() for s in self.supervisors],
        }


def read_status(state: FlashSaleState) -> Status:
    """Read the status from Redis (not from the in-process cache).

    A handful of pipelined round trips whatever the number of sales (the sale
    definitions, the queues, the payments, the registry), plus two per sale
    with a waiting room.
    """
    sales = {s.id: s for s in state.sales.list()}
    ids = sorted(sales)
    queues = state.orders.stats(ids)
    payments = {p.sale_id: p for p in state.payments.stats(ids)}
    waiting = {sid: state.waiting.stats(sid) for sid in ids if sales[sid].fairness != "none"}
    supervisors = live_supervisors(state.client, state.keys)
    workers = live_workers(state.client, state.keys, supervisors)
    return Status(
        sales=[
            SaleStatus(sales[q.sale_id], q, payments[q.sale_id], waiting.get(q.sale_id))
            for q in queues
        ],
        workers=workers,
        supervisors=supervisors,
    )
