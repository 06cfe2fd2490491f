"""A flash sale under load, with locust: buyers sign in, queue if the sale has a queue,
order with idempotency keys and poll their tickets.

    pip install -e '.[bench]'
    locust -f examples/locustfile.py --host http://127.0.0.1:5000 \\
        --headless --users 2000 --spawn-rate 200 --run-time 2m

Works against any deployment of the JSON API (see docs/performance.rst).
Settings, from the environment:

``FLASHSALE_SALE``        the sale to buy (default ``demo-sneakers``)
``FLASHSALE_PREFIX``      the blueprint's prefix (default ``/api/flash-sales``)
``FLASHSALE_LOGIN``       how a buyer gets an identity: ``form:/login`` (default: POST
                          a ``name`` to the example shop's form, keep the session
                          cookie) or ``header:X-User`` (send the name in that header,
                          for hosts whose identity loader reads one)
``FLASHSALE_POLL``        seconds between ticket polls (default 0.25)

The expected answers of a sale (``sold_out``, ``limit_reached``,
``not_started``, ``ended``, ``rate_limited``...) count as successes under their
own names (``order -> sold_out``...), so locust's failures are real errors
(5xx, timeouts, a ticket that never settles).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from locust import HttpUser, between, task

SALE = os.environ.get("FLASHSALE_SALE", "demo-sneakers")
PREFIX = os.environ.get("FLASHSALE_PREFIX", "/api/flash-sales").rstrip("/")
LOGIN = os.environ.get("FLASHSALE_LOGIN", "form:/login")
POLL = float(os.environ.get("FLASHSALE_POLL", "0.25"))
#: Answers of the order endpoint a healthy sale gives (not failures).
EXPECTED = {
    "sold_out", "limit_reached", "not_started", "ended", "rate_limited", "pass_required",
    "pass_invalid", "idempotency_mismatch",
}
#: Ticket statuses that end the wait.
SETTLED = {"confirmed", "awaiting_payment", "paid", "failed", "cancelled", "expired"}


class Buyer(HttpUser):
    """One buyer: signs in once, then tries to buy (queueing first if the sale has a queue)."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.name = f"locust-{uuid.uuid4().hex[:12]}"
        self.headers: dict[str, str] = {}
        kind, _, where = LOGIN.partition(":")
        if kind == "header":
            self.headers[where] = self.name
        else:
            self.client.post(where or "/login", data={"name": self.name}, name="login",
                             allow_redirects=False)
        self.done = False

    @task
    def buy(self) -> None:
        """See the sale, queue if it has a queue, order once, follow the ticket."""
        if self.done:
            return
        sale = self.client.get(f"{PREFIX}/{SALE}", name="sale", headers=self.headers).json()
        if sale.get("status") in ("sold_out", "ended"):
            self.done = True
            return
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        if sale.get("fairness", "none") != "none":  # a waiting room: queue for a pass first
            ticket_pass = self.wait_in_queue()
            if ticket_pass is None:
                return
            headers["FlashSale-Pass"] = ticket_pass
        with self.client.post(f"{PREFIX}/{SALE}/order", json={"quantity": 1}, headers=headers,
                              name="order", catch_response=True) as answer:
            body = self.body(answer)
            if answer.status_code == 202:
                answer.success()
            elif body.get("code") in EXPECTED:
                answer.success()
                if body["code"] in ("sold_out", "limit_reached", "ended"):
                    self.done = True
                return
            else:
                answer.failure(f"{answer.status_code} {body.get('code')}")
                return
        self.follow(answer.headers["Location"])

    def follow(self, location: str) -> None:
        """Poll the ticket until it settles (at most 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ticket = self.client.get(location, name="ticket", headers=self.headers).json()
            if ticket.get("status") in SETTLED:
                self.done = True
                return
            time.sleep(POLL)
        self.environment.events.request.fire(
            request_type="TICKET", name="ticket never settled", response_time=30_000,
            response_length=0, exception=TimeoutError("ticket still queued after 30 s"),
        )

    def wait_in_queue(self) -> str | None:
        """Join the sale's waiting room and poll it until ready; the pass, or None."""
        url = f"{PREFIX}/{SALE}/queue"
        state = self.client.post(url, name="queue join", headers=self.headers).json()
        while state.get("status") == "waiting":
            time.sleep(float(state.get("poll_after") or 2))
            state = self.client.get(url, name="queue poll", headers=self.headers).json()
        if state.get("status") != "ready":
            self.done = state.get("status") in ("sold_out", "ended")
            return None
        ticket_pass: str | None = state.get("pass")
        return ticket_pass

    @staticmethod
    def body(answer: Any) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = answer.json()
        except ValueError:
            return {}
        return doc
