"""Prometheus metrics of one app (``FLASHSALE_METRICS``), on a registry of its own.

Two kinds of metric live here:

* counters and a histogram recorded in this process: admissions by result
  (:meth:`FlashSale.place_order <flask_flashsale.FlashSale.place_order>`) and
  orders settled by a worker running in this process (through the
  ``order_confirmed`` / ``order_failed`` signals);
* gauges read from Redis when Prometheus scrapes (:class:`RedisCollector`):
  stock, queue length, pending, lag and dead letters of every sale, and the
  live workers. They are the same whichever process is scraped.

Nothing uses prometheus_client's global default registry: each app has its
:class:`Metrics` in ``app.extensions["flashsale"].metrics``. See :doc:`/metrics`.

Under gunicorn with several worker processes, set ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode): every process then writes its counters
to files there, and a scrape of any process answers the sum over all of them
(:meth:`Metrics.response`); :func:`child_exit` is the gunicorn hook that retires
a dead worker's files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response

from . import signals
from .models import Admission, Order, Ticket

if TYPE_CHECKING:
    from .extension import FlashSaleState

#: Label used instead of the sale id for attempts on a sale that does not
#: exist, so clients cannot create label values at will.
UNKNOWN_SALE = "_unknown"

#: Buckets of ``flashsale_admission_seconds``: 100 µs to 250 ms.
ADMISSION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
)


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when set: prometheus-client's multiprocess mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class GunicornWorker(Protocol):
    """What :func:`child_exit` reads of gunicorn's worker (gunicorn is not a dependency)."""

    #: The worker process's id.
    pid: int


def child_exit(server: object, worker: GunicornWorker) -> None:
    """gunicorn's ``child_exit`` hook for multiprocess mode: in ``gunicorn.conf.py``,
    ``from flask_flashsale.metrics import child_exit``.

    Marks the dead worker's metric files so live gauges stop counting it
    (counters and histograms keep its totals, as Prometheus expects).
    """
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def available() -> bool:
    """True if ``prometheus_client`` (the ``metrics`` extra) can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class RedisCollector:
    """Reads the Redis gauges at scrape time (a few pipelined round trips).

    A Redis error skips these gauges for that scrape and counts it in
    ``flashsale_scrape_errors_total`` (which this collector yields, so a
    scrape already shows its own failure); the rest of the exposition is served.
    """

    def __init__(self, state: FlashSaleState) -> None:
        self.state = state
        #: Scrapes whose Redis gauges were skipped.
        self.errors = 0
        self._lock = threading.Lock()

    def describe(self) -> list[Any]:
        """Nothing up front: the registry then never scrapes Redis on registration."""
        return []

    def collect(self) -> Iterator[Any]:
        """Yield the gauge families (none if Redis could not be read), then the error count."""
        from prometheus_client.core import CounterMetricFamily

        try:
            families = self._read()
        except Exception:  # any Redis or breaker failure: skip the gauges, never 500
            families = []
            with self._lock:
                self.errors += 1
        yield from families
        yield CounterMetricFamily(
            "flashsale_scrape_errors",
            "Scrapes that could not read the Redis gauges (they were left out).",
            value=self.errors,
        )

    def _read(self) -> list[Any]:
        """The gauges, from :func:`~flask_flashsale.status.read_status`: the figures
        ``flask flashsale status`` and the dashboard show, read the same way."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from .status import read_status

        status = read_status(self.state)
        stock = GaugeMetricFamily(
            "flashsale_stock_remaining",
            "Units of the sale not yet admitted (never below 0).",
            labels=["sale"],
        )
        length = GaugeMetricFamily(
            "flashsale_queue_length",
            "Orders in the sale's stream not yet settled (undelivered + pending).",
            labels=["sale"],
        )
        pending = GaugeMetricFamily(
            "flashsale_queue_pending",
            "Orders delivered to a worker and not yet settled.",
            labels=["sale"],
        )
        lag = GaugeMetricFamily(
            "flashsale_queue_lag",
            "Orders admitted but not yet delivered to any worker (scale workers on this).",
            labels=["sale"],
        )
        dead = GaugeMetricFamily(
            "flashsale_dead_letters", "Orders in the sale's dead-letter stream.", labels=["sale"]
        )
        awaiting = GaugeMetricFamily(
            "flashsale_tickets_awaiting_payment",
            "Tickets awaiting payment (sales with a payment timeout).",
            labels=["sale"],
        )
        paid = CounterMetricFamily(
            "flashsale_tickets_paid", "Tickets marked paid (mark_paid).", labels=["sale"]
        )
        expired = CounterMetricFamily(
            "flashsale_tickets_expired",
            "Unpaid holds expired by the workers (stock given back).",
            labels=["sale"],
        )
        for sale in status.sales:
            label = [sale.sale.id]
            stock.add_metric(label, sale.sale.remaining)
            length.add_metric(label, sale.queue.length)
            pending.add_metric(label, sale.queue.pending)
            lag.add_metric(label, sale.queue.lag)
            dead.add_metric(label, sale.queue.dead_letters)
            awaiting.add_metric(label, sale.payments.awaiting_payment)
            paid.add_metric(label, sale.payments.paid)
            expired.add_metric(label, sale.payments.expired)
        workers = GaugeMetricFamily(
            "flashsale_workers_live", "Workers whose heartbeat has not expired."
        )
        workers.add_metric([], len(status.workers))
        return [stock, length, pending, lag, dead, workers, awaiting, paid, expired]


class Metrics:
    """The Prometheus registry of one app and the metrics recorded in-process."""

    def __init__(self, state: FlashSaleState) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        #: The app's own registry (never prometheus_client's global one).
        self.registry = CollectorRegistry(auto_describe=False)
        #: ``flashsale_admissions_total{sale,result}``: result is ``Admission.status``.
        self.admissions = Counter(
            "flashsale_admissions",
            "Order attempts answered by admission, by sale and result.",
            ["sale", "result"],
            registry=self.registry,
        )
        #: ``flashsale_admission_seconds``: time spent in ``place_order``.
        self.admission_seconds = Histogram(
            "flashsale_admission_seconds",
            "Time to answer an order attempt (FlashSale.place_order).",
            buckets=ADMISSION_BUCKETS,
            registry=self.registry,
        )
        #: ``flashsale_orders_settled_total{sale,outcome}``: ``confirmed``, ``failed``
        #: or ``expired`` (an unpaid hold this process's worker expired).
        self.settled = Counter(
            "flashsale_orders_settled",
            "Orders settled by a worker of this process, by sale and outcome.",
            ["sale", "outcome"],
            registry=self.registry,
        )
        #: Reads the Redis gauges and ``flashsale_scrape_errors_total`` at scrape time.
        self.redis = RedisCollector(state)
        self.registry.register(self.redis)
        self._observe = self.admission_seconds.observe
        self._children: dict[tuple[str, str], Any] = {}

    def admitted(self, sale_id: str, admission: Admission, started: float) -> None:
        """Record one answered attempt; ``started`` is its ``time.perf_counter()``."""
        self._observe(time.perf_counter() - started)
        status = admission.status
        sale = UNKNOWN_SALE if status == "not_found" else sale_id
        # The labelled child, looked up once per (sale, result): ``labels()``
        # checks and converts its arguments and takes a lock on every call.
        # As big as the family's own children (only existing sales are labels).
        child = self._children.get((sale, status))
        if child is None:
            child = self._children[sale, status] = self.admissions.labels(sale, status)
        child.inc()

    def connect(self, app: Flask) -> None:
        """Count the orders the app's workers settle (``order_confirmed``/``order_failed``)."""
        signals.order_confirmed.connect(self._confirmed, app)
        signals.order_failed.connect(self._failed, app)
        signals.order_expired.connect(self._expired, app)

    def _confirmed(self, sender: object, order: Order, **extra: Any) -> None:
        self.settled.labels(order.sale_id, "confirmed").inc()

    def _failed(self, sender: object, order: Order, **extra: Any) -> None:
        self.settled.labels(order.sale_id, "failed").inc()

    def _expired(self, sender: object, ticket: Ticket, **extra: Any) -> None:
        self.settled.labels(ticket.sale_id, "expired").inc()

    def response(self) -> Response:
        """The text exposition of the registry, as a Flask response.

        In multiprocess mode (:func:`multiprocess_dir`) the in-process metrics
        are the sums over every process's files, and the Redis gauges are read
        once, as always.
        """
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(self.redis)
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
