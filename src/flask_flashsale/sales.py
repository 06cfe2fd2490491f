"""Sale definitions in Redis: create, read, restock, delete."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .errors import InvalidSaleId, SaleNotFound
from .keys import Keys, check_sale_id
from .models import Fairness, Sale, from_millis, to_millis, to_price
from .payments import payment_timeout_ms
from .views import RESERVED_SALE_IDS

if TYPE_CHECKING:
    from datetime import datetime

    from .protocols import RedisClient, Script

#: The waiting room's modes (``create_sale(fairness=...)``).
FAIRNESS_MODES = ("none", "fifo", "lottery")
#: How long before ``starts_at`` a waiting room opens when ``queue_opens_at`` is not given.
QUEUE_OPENS_BEFORE_START_MS = 15 * 60 * 1000


def sale_from_hash(sale_id: str, data: dict[str, str]) -> Sale | None:
    """Build a :class:`Sale` from the fields of its Redis hash (``None`` if empty).

    The hash keeps ``remaining = stock - units held``, below zero after an admin
    cut the stock under what buyers hold; the :class:`Sale` shows 0 then.
    """
    if not data or "remaining" not in data:
        return None
    price = data.get("price")
    starts = data.get("starts")
    ends = data.get("ends")
    return Sale(
        id=sale_id,
        stock=int(data["stock"]),
        remaining=max(int(data["remaining"]), 0),
        price=Decimal(price) if price else None,
        starts_at=from_millis(int(starts)) if starts else None,
        ends_at=from_millis(int(ends)) if ends else None,
        per_user_limit=int(data["limit"]),
        info=json.loads(data.get("info") or "{}"),
        payment_timeout=int(data["pay"]) / 1000 if data.get("pay") else None,
        **_queue_fields(data),
    )


def _queue_fields(data: dict[str, str]) -> dict[str, Any]:
    """The waiting room's settings of a sale hash, as :class:`Sale` keyword arguments."""
    fairness = data.get("fair")
    if not fairness:
        return {}
    rate = float(data["rate"])
    opens = data.get("qopen")
    return {
        "fairness": fairness,
        "admit_rate": int(rate) if rate.is_integer() else rate,
        "queue_opens_at": from_millis(int(opens)) if opens else None,
    }


def check_fairness(
    fairness: object, admit_rate: object, starts_ms: int | None, opens_ms: int | None
) -> tuple[Fairness, float | None, int | None]:
    """Validate a sale's waiting-room settings; return ``(mode, rate, opens ms)``.

    ``opens_ms`` defaults to 15 minutes before the start. Raises ``ValueError``.
    """
    if fairness not in FAIRNESS_MODES:
        raise ValueError(f"fairness must be one of {', '.join(FAIRNESS_MODES)}, got {fairness!r}")
    mode: Fairness = fairness  # type: ignore[assignment]
    if mode == "none":
        if admit_rate is not None or opens_ms is not None:
            raise ValueError("admit_rate and queue_opens_at need fairness='fifo' or 'lottery'")
        return mode, None, None
    if (
        isinstance(admit_rate, bool)
        or not isinstance(admit_rate, (int, float))
        or not math.isfinite(admit_rate)
        or admit_rate <= 0
    ):
        raise ValueError(
            f"fairness={mode!r} needs admit_rate, a positive number of buyers per second; "
            f"got {admit_rate!r}"
        )
    if mode == "lottery" and starts_ms is None:
        raise ValueError("fairness='lottery' needs starts_at: the draw is at the start")
    if opens_ms is None and starts_ms is not None:
        opens_ms = starts_ms - QUEUE_OPENS_BEFORE_START_MS
    if opens_ms is not None and starts_ms is not None and opens_ms > starts_ms:
        raise ValueError("queue_opens_at must not be after starts_at")
    return mode, float(admit_rate), opens_ms


class SaleStore:
    """Reads and writes sale definitions; every write is atomic with admissions."""

    def __init__(self, client: RedisClient, keys: Keys, scripts: Mapping[str, Script]) -> None:
        self.client = client
        self.keys = keys
        self._create = scripts["sale_create"]
        self._restock = scripts["sale_restock"]

    def create(
        self,
        sale_id: str,
        *,
        stock: int,
        price: Decimal | str | int | None = None,
        starts_at: datetime | float | None = None,
        ends_at: datetime | float | None = None,
        per_user_limit: int = 1,
        info: dict[str, Any] | None = None,
        payment_timeout: float | None = None,
        fairness: str = "none",
        admit_rate: float | None = None,
        queue_opens_at: datetime | float | None = None,
    ) -> Sale:
        """Define or replace a sale (see :meth:`FlashSale.create_sale`)."""
        check_sale_id(sale_id)
        if sale_id in RESERVED_SALE_IDS:
            raise InvalidSaleId(
                sale_id,
                f"{sale_id!r} is reserved: it names a route of the HTTP API "
                f"(reserved ids: {', '.join(sorted(RESERVED_SALE_IDS))})",
            )
        if isinstance(stock, bool) or not isinstance(stock, int) or stock < 0:
            raise ValueError(f"stock must be a non-negative int, got {stock!r}")
        if (
            isinstance(per_user_limit, bool)
            or not isinstance(per_user_limit, int)
            or (per_user_limit < 1)
        ):
            raise ValueError(f"per_user_limit must be a positive int, got {per_user_limit!r}")
        unit_price = to_price(price)
        starts = to_millis(starts_at)
        ends = to_millis(ends_at)
        if starts is not None and ends is not None and ends <= starts:
            raise ValueError("ends_at must be after starts_at")
        mode, rate, opens = check_fairness(fairness, admit_rate, starts, to_millis(queue_opens_at))
        info_json = json.dumps(info or {}, separators=(",", ":"), default=str)
        pay_ms = payment_timeout_ms(payment_timeout)
        self._create(
            keys=self.keys.sale_create(sale_id),
            args=[
                stock,
                "" if unit_price is None else str(unit_price),
                "" if starts is None else starts,
                "" if ends is None else ends,
                per_user_limit,
                info_json,
                "" if mode == "none" else mode,
                "" if rate is None else repr(rate),
                "" if opens is None else opens,
                secrets.token_hex(8),
                "pay",
                "" if pay_ms is None else pay_ms,
            ],
        )
        self.client.sadd(self.keys.sales_index(), sale_id)
        sale = self.get(sale_id)
        assert sale is not None
        return sale

    def get(self, sale_id: str) -> Sale | None:
        """Read one sale straight from Redis (``None`` if unknown)."""
        check_sale_id(sale_id)
        return sale_from_hash(sale_id, self.client.hgetall(self.keys.sale(sale_id)))

    def ids(self) -> list[str]:
        """Every sale id in the index, sorted."""
        return sorted(self.client.smembers(self.keys.sales_index()))

    def list_known(self, known: Sequence[str]) -> list[Sale]:
        """Every sale, like :meth:`list`, in ONE pipelined round trip when the
        index holds no id beyond ``known`` (the ids a cache saw last time).

        The index and the hash of every known sale are read together; only
        sales added since then cost a second round trip.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.smembers(self.keys.sales_index())
        for sale_id in known:
            pipe.hgetall(self.keys.sale(sale_id))
        members, *hashes = pipe.execute()
        found = dict(zip(known, hashes, strict=True))
        new = [i for i in members if i not in found]
        if new:
            pipe = self.client.pipeline(transaction=False)
            for sale_id in new:
                pipe.hgetall(self.keys.sale(sale_id))
            found.update(zip(new, pipe.execute(), strict=True))
        sales = [sale_from_hash(i, found[i]) for i in sorted(members)]
        return [s for s in sales if s is not None]

    def list(self) -> list[Sale]:
        """Every sale, read in one pipelined round trip after the index."""
        ids = self.ids()
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for sale_id in ids:
            pipe.hgetall(self.keys.sale(sale_id))
        sales = [sale_from_hash(i, d) for i, d in zip(ids, pipe.execute(), strict=True)]
        return [s for s in sales if s is not None]

    def restock(self, sale_id: str, quantity: int) -> int:
        """Add units (negative: withdraw some); return ``remaining`` as shown (>= 0).

        A withdrawal may take more units than remain, never more than the
        stock: units buyers hold stay theirs, and ``remaining`` shows 0 until
        enough of them come back (see :func:`sale_from_hash`).
        """
        check_sale_id(sale_id)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            raise ValueError(f"quantity must be an int, got {quantity!r}")
        outcome, value = self._restock(keys=self.keys.sale_restock(sale_id), args=[quantity])
        if outcome == "not_found":
            raise SaleNotFound(f"no sale {sale_id!r}")
        if outcome == "negative_stock":
            raise ValueError(f"cannot withdraw {-quantity} units: the stock is {int(value)}")
        return max(int(value), 0)

    def delete(self, sale_id: str) -> bool:
        """Delete the sale's definition, counts, queue, buckets and buyers' ticket
        lists; True if it existed.

        Tickets are left to expire so buyers can still read their status.
        Unprocessed orders in the sale's stream are dropped with it: drain the
        queue (``flask flashsale worker --burst``) before deleting a sale.
        """
        check_sale_id(sale_id)
        k = self.keys
        doomed = k.sale_keys(sale_id)
        doomed += list(self.client.scan_iter(match=k.buckets_match(sale_id), count=1000))
        removed = int(self.client.delete(*doomed))
        self.client.srem(k.sales_index(), sale_id)
        return removed > 0
