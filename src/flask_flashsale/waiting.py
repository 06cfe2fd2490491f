"""The waiting room: fair access to a sale, FIFO or by lottery, with signed passes.

A sale created with ``fairness="fifo"`` or ``"lottery"`` lets buyers order only
with a pass. Buyers join its queue (``POST <prefix>/<sale_id>/queue``, one
round trip: ``queue_join.lua``) and poll it (``GET``); once their place is let
through they get a pass, a token signed with the deployment's secret that the
order endpoint verifies in the web process and sends to the admission script
as a flag (still one round trip per order).

How the queue moves (see ``queue.lua``): each place gets a *ready time* when
it is given, from a GCRA token bucket in Redis (at most ``admit_rate`` places
per second, a burst of at most ``admit_rate``), or, for a lottery's early
joiners, from its drawn position. Whether a buyer is ready is then a function
of Redis time, so:

* a poll that sends back the signed *place token* of its join answer (header
  ``FlashSale-Place`` or the cookie the answer sets) costs no Redis call: the
  web process reads the place from the token and refreshes what it knows of
  the queue (epoch, the draw, stock left, the offset of Redis time from its own
  clock) at most every :data:`REFRESH_SECONDS` per sale;
* a buyer who stops polling or never orders holds back nobody: the places
  after theirs become ready on time anyway;
* a lottery is drawn by the first join or refresh after ``starts_at``
  (atomically, in the script): it fixes how many joined early and a random
  seed; every web process shuffles the early places the same way from that
  seed (:func:`lottery_positions`), without a call per buyer.

Sold out and ended are learned on the next poll: from the sale's
``sold_out`` event (pub/sub, the same flag the order fast path uses) or the
stock left in the last refresh (at most :data:`REFRESH_SECONDS` old), and
from ``ends_at`` on Redis time.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import sys
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from . import signals
from .admission import check_user_id
from .errors import (
    NoQueue,
    NotInQueue,
    QueueNotOpen,
    SaleNotFound,
)
from .keys import Keys, check_sale_id
from .models import from_millis

if TYPE_CHECKING:
    from .cache import SaleCache
    from .protocols import RedisClient, Script

#: How often (seconds) a web process re-reads a sale's queue while buyers poll it.
REFRESH_SECONDS = 0.1
#: Request header carrying a waiting-room pass to the order endpoint.
PASS_HEADER = "FlashSale-Pass"
#: Request and response header carrying the signed place token of the queue endpoints.
PLACE_HEADER = "FlashSale-Place"
#: Cookie carrying the place token (scoped to the sale's queue URL).
PLACE_COOKIE = "flashsale_place"
#: Shortest and longest ``poll_after`` (seconds) the queue suggests to a waiting buyer.
POLL_AFTER_MIN = 0.5
POLL_AFTER_MAX = 10.0

QueueState = Literal["waiting", "ready", "expired", "sold_out", "ended"]

_PASS_SALT = "flashsale.pass"
_PLACE_SALT = "flashsale.place"


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """A buyer's place in a sale's waiting room (:meth:`FlashSale.join_queue`,
    :meth:`FlashSale.queue_status`); the JSON of ``<prefix>/<sale_id>/queue``.
    """

    sale_id: str
    user_id: str
    #: ``waiting``, ``ready`` (:attr:`pass_token` is set), ``expired`` (the
    #: pass lapsed: join again to queue at the back), ``sold_out`` or ``ended``.
    status: QueueState
    #: The buyer's place, 1 = first; it never changes once known. ``None`` for
    #: a lottery's early joiner until the draw at ``starts_at`` (and without a place).
    position: int | None
    #: Places before this one not yet let through (``None`` when unknown).
    ahead: int | None
    #: Seconds until the buyer is ready, on Redis time (0 once ready; for an
    #: early lottery place, the seconds until the draw).
    eta_seconds: float | None
    #: When to poll again (seconds), ``None`` when there is nothing to wait for.
    poll_after: float | None
    #: The pass (``ready`` only): send it as the ``FlashSale-Pass`` header with
    #: the order. JSON field ``pass``.
    pass_token: str | None = None
    #: When the pass stops being accepted (aware UTC datetime).
    pass_expires_at: datetime | None = None
    #: Signed token of the buyer's place: give it back to :meth:`FlashSale.queue_status`
    #: (``place_token=``; over HTTP the ``FlashSale-Place`` header or cookie) and
    #: the poll costs no Redis call.
    place_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the HTTP API."""
        expires = self.pass_expires_at
        return {
            "status": self.status,
            "position": self.position,
            "ahead": self.ahead,
            "eta_seconds": self.eta_seconds,
            "poll_after": self.poll_after,
            "pass": self.pass_token,
            "pass_expires_at": None if expires is None else expires.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A sale's waiting room at a glance (``flask flashsale status``)."""

    sale_id: str
    fairness: str
    admit_rate: float
    #: Places given (buyers who joined, plus joins again after a lapsed pass).
    joined: int
    #: Places not yet let through.
    waiting: int
    #: Places let through (their ready time has come), used or not.
    let_through: int
    #: Buyers who ordered (with a pass) in this sale.
    passes_used: int
    #: Lottery only: whether the draw has happened.
    drawn: bool | None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What one script run said about a sale's queue (settings, state, Redis time)."""

    epoch: str
    fairness: str
    rate: float
    starts: int | None
    ends: int | None
    remaining: int
    opens: int | None
    placed: int
    last: int
    early: int | None
    draw_start: int | None
    draw_rate: float | None
    seed: str
    redis_now: int
    #: ``time.monotonic()`` when it was read.
    fetched: float


@dataclass(frozen=True, slots=True)
class _Place:
    join_index: int
    #: ``None`` for a lottery's early place (its position decides).
    ready_ms: int | None
    #: The buyer was already told it is ready (``buyer_ready`` sent).
    ready_seen: bool = False


def _int(value: str) -> int | None:
    return int(float(value)) if value else None


def _snapshot(reply: list[Any], fetched: float) -> _Snapshot:
    (_, epoch, fair, rate, starts, ends, remaining, opens, placed, _tat, last, early,
     draw_start, draw_rate, seed, now) = reply[:16]  # fmt: skip
    return _Snapshot(
        epoch=epoch,
        fairness=fair,
        rate=float(rate),
        starts=_int(starts),
        ends=_int(ends),
        remaining=int(float(remaining)),
        opens=_int(opens),
        placed=int(float(placed)),
        last=int(float(last or 0)),
        early=_int(early),
        draw_start=_int(draw_start),
        draw_rate=float(draw_rate) if draw_rate else None,
        seed=seed,
        redis_now=int(float(now)),
        fetched=fetched,
    )


def _parse_place(record: str) -> _Place:
    index, _, ready = record.partition(" ")
    return _Place(int(index), int(ready) if ready else None)


def burst(rate: float) -> int:
    """The outflow's burst for ``admit_rate``: ``max(1, floor(rate))``."""
    return max(1, math.floor(rate))


def lottery_positions(seed: str, count: int) -> array[int]:
    """The lottery draw: ``positions[k - 1]`` is the place of the ``k``-th early joiner.

    A Fisher-Yates shuffle of ``1..count`` driven by SHAKE-256 of the draw's
    seed, so every web process (and any Python version) derives the same order
    from the seed Redis stored, and every order is equally likely (64 random
    bits per step: the bias of the modulo is below ``count / 2**64``). About
    12 bytes per early joiner while it runs, 4 once done.
    """
    randoms = array(
        "Q", hashlib.shake_256(f"flashsale-lottery\x00{seed}".encode()).digest(8 * count)
    )
    if sys.byteorder == "little":
        randoms.byteswap()  # the stream's 8-byte words, big-endian
    order = array("I", range(1, count + 1))  # order[i]: join index of the place i + 1
    for i in range(count - 1, 0, -1):
        j = randoms[i] % (i + 1)
        order[i], order[j] = order[j], order[i]
    del randoms
    positions = array("I", bytes(4 * count))
    for place, index in enumerate(order, 1):
        positions[index - 1] = place
    return positions


class WaitingRoom:
    """The waiting rooms of one app: joins, polls, passes (``state.waiting``).

    Keeps, per sale, the last :class:`_Snapshot` of its queue (refreshed at
    most every :data:`REFRESH_SECONDS` while buyers poll) and the lottery's
    drawn order; both are small, and only sales with a waiting room get one.
    """

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        join_script: Script,
        poll_script: Script,
        secret: bytes,
        pass_ttl: float,
        cache: SaleCache | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.keys = keys
        #: Seconds a pass lives once its place is ready (:data:`FLASHSALE_PASS_TTL`).
        self.pass_ttl = pass_ttl
        self._ttl_ms = int(pass_ttl * 1000)
        self._join = join_script
        self._poll = poll_script
        self._secret = secret
        self._cache = cache
        self._clock = clock
        self._monotonic = monotonic
        self._snapshots: dict[str, _Snapshot] = {}
        self._draws: dict[str, tuple[str, str, array[int]]] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()
        #: Redis time minus this host's clock, in ms (learned from every script reply).
        self.offset_ms = 0.0

    # -- time -------------------------------------------------------------------

    def now_ms(self) -> int:
        """Redis time in ms, as estimated here (this host's clock + the learned offset)."""
        return int(self._clock() * 1000 + self.offset_ms)

    # -- Redis ------------------------------------------------------------------

    def _run(self, script: Script, sale_id: str, args: list[Any]) -> tuple[str, _Snapshot, str]:
        sent = self._clock()
        reply = script(keys=self.keys.queue_scripts(sale_id), args=[*args])
        received = self._clock()
        outcome = reply[0]
        if outcome == "not_found":
            self._snapshots.pop(sale_id, None)
            raise SaleNotFound(f"no sale {sale_id!r}")
        if outcome == "no_queue":
            self._snapshots.pop(sale_id, None)
            raise NoQueue(f"sale {sale_id!r} has no queue: order directly")
        snap = _snapshot(reply, self._monotonic())
        # Half the round trip is the best guess of when Redis read its clock.
        self.offset_ms = snap.redis_now - (sent + received) * 500.0
        self._snapshots[sale_id] = snap
        return outcome, snap, reply[16]

    def snapshot(self, sale_id: str) -> _Snapshot:
        """The sale's queue as last read, re-read if older than :data:`REFRESH_SECONDS`.

        While one thread re-reads it, the others use the previous snapshot.
        Also makes sure the cache's events subscriber runs, so a ``sold_out``
        event reaches the next poll at once.
        """
        snap = self._snapshots.get(sale_id)
        if snap is not None and self._monotonic() - snap.fetched < REFRESH_SECONDS:
            return snap
        cache = self._cache
        if cache is not None and cache.ttl > 0 and cache.subscriber is not None:
            cache.subscriber.start()
        with self._lock:
            if snap is not None and sale_id in self._refreshing:
                return snap
            self._refreshing.add(sale_id)
        try:
            return self._run(self._poll, sale_id, ["", secrets.token_hex(16)])[1]
        finally:
            with self._lock:
                self._refreshing.discard(sale_id)

    # -- places -----------------------------------------------------------------

    def _positions(self, sale_id: str, snap: _Snapshot) -> array[int]:
        draw = self._draws.get(sale_id)
        if draw is not None and draw[0] == snap.epoch and draw[1] == snap.seed:
            return draw[2]
        with self._draw_lock:
            draw = self._draws.get(sale_id)
            if draw is None or draw[0] != snap.epoch or draw[1] != snap.seed:
                draw = (snap.epoch, snap.seed, lottery_positions(snap.seed, snap.early or 0))
                self._draws[sale_id] = draw
        return draw[2]

    def _locate(
        self, sale_id: str, snap: _Snapshot, place: _Place
    ) -> tuple[int | None, int | None]:
        """``(position, ready ms)`` of a place; ``(None, None)`` before its lottery draw."""
        if place.ready_ms is not None:  # FIFO, or after a lottery's draw: the join index
            return place.join_index, place.ready_ms
        if snap.early is None or snap.draw_start is None or snap.draw_rate is None:
            return None, None
        if place.join_index > snap.early:  # cannot happen: late places get a ready time
            return place.join_index, None
        position = self._positions(sale_id, snap)[place.join_index - 1]
        interval = 1000.0 / snap.draw_rate
        ready = math.ceil(snap.draw_start + max(0, position - burst(snap.draw_rate)) * interval)
        return position, ready

    # -- tokens -----------------------------------------------------------------

    def _serializer(self, salt: str, user_id: str) -> URLSafeSerializer:
        return URLSafeSerializer(self._secret, salt=f"{salt}\x00{user_id}")

    def _place_token(self, sale_id: str, user_id: str, snap: _Snapshot, place: _Place) -> str:
        payload = [sale_id, snap.epoch, place.join_index, place.ready_ms, int(place.ready_seen)]
        token: str = self._serializer(_PLACE_SALT, user_id).dumps(payload)
        return token

    def _read_place(self, token: str, sale_id: str, user_id: str, epoch: str) -> _Place | None:
        try:
            payload = self._serializer(_PLACE_SALT, user_id).loads(token)
        except (BadData, UnicodeError, ValueError, TypeError):
            return None
        if (
            not isinstance(payload, list)
            or len(payload) != 5
            or payload[0] != sale_id
            or payload[1] != epoch
            or not isinstance(payload[2], int)
            or not (payload[3] is None or isinstance(payload[3], int))
        ):
            return None
        return _Place(payload[2], payload[3], bool(payload[4]))

    def check_pass(self, sale_id: str, user_id: str, token: str) -> str:
        """Verify a pass in this process: ``"<queue epoch> <expiry ms>"``, or ``"-"``.

        ``"-"`` when it is forged, expired (on Redis time as estimated here),
        or issued to another buyer or for another sale. The admission script
        compares the epoch with the sale's, which also refuses passes of a
        queue that was started over (sale deleted, or re-created with another
        fairness mode), and the expiry with Redis ``TIME``.
        """
        try:
            payload = self._serializer(_PASS_SALT, user_id).loads(token)
        except (BadData, UnicodeError, ValueError, TypeError):
            return "-"
        if (
            isinstance(payload, list)
            and len(payload) == 4
            and payload[0] == sale_id
            and isinstance(payload[2], int)
            and isinstance(payload[3], str)
            and payload[3]
            and " " not in payload[3]
            and self.now_ms() < payload[2]
        ):
            return f"{payload[3]} {payload[2]}"
        return "-"

    def _pass(self, sale_id: str, user_id: str, position: int, expires: int, epoch: str) -> str:
        token: str = self._serializer(_PASS_SALT, user_id).dumps(
            [sale_id, position, expires, epoch]
        )
        return token

    # -- answers ----------------------------------------------------------------

    def _status(
        self,
        sale_id: str,
        user_id: str,
        snap: _Snapshot,
        place: _Place | None,
        now: int,
        *,
        sold_out: bool,
        sent: str | None = None,
    ) -> QueueStatus:
        """The answer for ``place`` at Redis time ``now``.

        ``sent`` is the place token ``place`` was read from: an answer that
        does not change the place returns it as it is instead of signing anew.
        """
        position, ready = (None, None) if place is None else self._locate(sale_id, snap, place)
        common: dict[str, Any] = {"sale_id": sale_id, "user_id": user_id, "position": position}

        def token(p: _Place) -> str:
            return (
                sent
                if sent is not None and p == place
                else self._place_token(sale_id, user_id, snap, p)
            )

        if place is None or (snap.ends is not None and now >= snap.ends) or sold_out:
            # Terminal answers; a join refused for want of stock has no place.
            ended = snap.ends is not None and now >= snap.ends
            return QueueStatus(
                **common,
                status="ended" if ended else "sold_out",
                ahead=None,
                eta_seconds=None,
                poll_after=None,
                place_token=None if place is None else token(place),
            )
        if ready is None or now < ready:
            if ready is None:  # an early lottery place: the draw is at the start
                wait = max(0, (snap.starts or now) - now) / 1000.0
                ahead = None
            else:
                wait = (ready - now) / 1000.0
                assert position is not None
                ahead = position - 1
                if snap.starts is None or now >= snap.starts:
                    # Places are let through at `rate` a second up to this one.
                    ahead = min(ahead, max(0, math.ceil(wait * snap.rate) - 1))
            return QueueStatus(
                **common,
                status="waiting",
                ahead=ahead,
                eta_seconds=round(wait, 3),
                poll_after=_poll_after(wait),
                place_token=token(place),
            )
        assert position is not None
        expires = ready + self._ttl_ms
        if now >= expires:
            return QueueStatus(
                **common,
                status="expired",
                ahead=0,
                eta_seconds=None,
                poll_after=None,
                place_token=token(place),
            )
        if not place.ready_seen:
            self._ready_signal(sale_id, user_id, position, expires)
        seen = _Place(place.join_index, place.ready_ms, True)
        return QueueStatus(
            **common,
            status="ready",
            ahead=0,
            eta_seconds=0.0,
            poll_after=round((expires - now) / 1000.0, 3),
            pass_token=self._pass(sale_id, user_id, position, expires, snap.epoch),
            pass_expires_at=from_millis(expires),
            place_token=token(seen),
        )

    def _ready_signal(self, sale_id: str, user_id: str, position: int, expires: int) -> None:
        if signals.buyer_ready.receivers:
            signals.buyer_ready.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                sale_id=sale_id,
                user_id=user_id,
                position=position,
                pass_expires_at=from_millis(expires),
            )

    def _sold_out(self, sale_id: str, snap: _Snapshot) -> bool:
        return snap.remaining <= 0 or (self._cache is not None and self._cache.sold_out(sale_id))

    def join(self, sale_id: str, user_id: str | int) -> QueueStatus:
        """Take a place in the sale's queue, or get the one held: one round trip.

        See :meth:`FlashSale.join_queue`.
        """
        check_sale_id(sale_id)
        uid = check_user_id(user_id)
        outcome, snap, record = self._run(
            self._join, sale_id, [uid, secrets.token_hex(16), self._ttl_ms, ""]
        )
        if outcome == "queue_not_open":
            assert snap.opens is not None
            wait = max(0.001, (snap.opens - snap.redis_now) / 1000.0)
            opens = from_millis(snap.opens)
            raise QueueNotOpen(
                f"the queue opens at {opens.isoformat() if opens else '?'}",
                retry_after=wait,
                opens_at=opens.isoformat() if opens else None,
            )
        place = _parse_place(record) if record else None
        if outcome == "joined" and place is not None and place.ready_ms is None:
            # An early lottery place: only this process knows when it was ready.
            _, ready = self._locate(sale_id, snap, place)
            if ready is not None and snap.redis_now >= ready + self._ttl_ms:
                outcome, snap, record = self._run(
                    self._join,
                    sale_id,
                    [uid, secrets.token_hex(16), self._ttl_ms, str(place.join_index)],
                )
                place = _parse_place(record) if record else None
        status = self._status(
            sale_id, uid, snap, place, snap.redis_now, sold_out=snap.remaining <= 0
        )
        if outcome == "queued" and signals.buyer_queued.receivers:
            signals.buyer_queued.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                sale_id=sale_id,
                user_id=uid,
                position=status.position,
            )
        return status

    def status(
        self, sale_id: str, user_id: str | int, place_token: str | None = None
    ) -> QueueStatus:
        """The buyer's place now; no Redis call with a valid ``place_token``.

        See :meth:`FlashSale.queue_status`.
        """
        check_sale_id(sale_id)
        uid = check_user_id(user_id)
        place = None
        if place_token:
            snap = self.snapshot(sale_id)
            place = self._read_place(place_token, sale_id, uid, snap.epoch)
        if place is None:
            place_token = None
            _, snap, record = self._run(self._poll, sale_id, [uid, secrets.token_hex(16)])
            if not record:
                raise NotInQueue(f"{uid!r} has not joined the queue of {sale_id!r}")
            place = _parse_place(record)
        return self._status(
            sale_id,
            uid,
            snap,
            place,
            self.now_ms(),
            sold_out=self._sold_out(sale_id, snap),
            sent=place_token,
        )

    def stats(self, sale_id: str) -> QueueStats | None:
        """The sale's waiting room in figures, or ``None`` if it has none (two round trips)."""
        try:
            snap = self._run(self._poll, sale_id, ["", secrets.token_hex(16)])[1]
        except (NoQueue, SaleNotFound):
            return None
        used = int(self.client.hlen(self.keys.buyers(sale_id)))
        now = snap.redis_now
        through = 0
        if snap.placed and (snap.fairness != "lottery" or snap.early is not None):
            if snap.starts is not None and now < snap.starts:
                through = 0
            elif now >= snap.last:
                through = snap.placed
            else:
                behind = math.ceil((snap.last - now) * snap.rate / 1000.0)
                through = snap.placed - min(snap.placed, behind)
        return QueueStats(
            sale_id=sale_id,
            fairness=snap.fairness,
            admit_rate=snap.rate,
            joined=snap.placed,
            waiting=snap.placed - through,
            let_through=through,
            passes_used=used,
            drawn=None if snap.fairness != "lottery" else snap.early is not None,
        )


def _poll_after(wait: float) -> float:
    """When a waiting buyer should poll again (seconds).

    Half the wait, within :data:`POLL_AFTER_MIN` .. :data:`POLL_AFTER_MAX`;
    a buyer less than :data:`POLL_AFTER_MIN` from the front comes back just
    after its ready time instead (10 ms later, for the clocks' sake).
    """
    if wait <= POLL_AFTER_MIN:
        return round(wait + 0.01, 3)
    return round(min(POLL_AFTER_MAX, max(POLL_AFTER_MIN, wait / 2)), 3)
