"""Inventory strategies: how an order attempt takes stock.

Three implementations of :class:`InventoryStrategy`, chosen by
``FLASHSALE_INVENTORY_STRATEGY``:

``lua`` (default, :class:`LuaStrategy`)
    One ``EVALSHA``: every check and write inside Redis, atomically.
``optimistic`` (:class:`OptimisticStrategy`)
    ``WATCH`` the sale's keys, read them, decide in Python, write with
    ``MULTI``/``EXEC``; when another attempt wrote first, ``EXEC`` is refused
    and the attempt starts over after a random pause, a bounded number of times.
``lock`` (:class:`LockStrategy`)
    Take the sale's :class:`~flask_flashsale.lock.FencedLock`, then read,
    decide and write as above while holding it.

All three return the same :class:`~flask_flashsale.Admission` results, write
the same keys, tickets and stream entries, and judge the sale window on Redis
``TIME``. The two Python-side strategies can also answer ``busy`` (with
``retry_after``) when contention outlasts their retries or lock wait; they
never oversell. They share one attempt (:class:`WatchedStrategy`), which the
lock strategy makes while holding the sale's lock. Admission throttles
(``FLASHSALE_ORDER_RATE_PER_*``) exist only in the ``lua`` script: combining
them with another strategy is a :class:`~flask_flashsale.ConfigurationError`
at start-up. :func:`build_strategy` makes the configured strategy.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from redis.cluster import ClusterPipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from .admission import BUYER_INDEX_SLACK, buyer_tokens
from .errors import ConfigurationError, LockLost, LockNotAcquired
from .events import SOLD_OUT, event
from .fastcall import FastScript, Template, fast_script_for
from .keys import AdmissionKeys, Keys, join_ticket_id
from .lock import FencedLock
from .models import Admission

if TYPE_CHECKING:
    from .config import Settings
    from .protocols import RedisClient, RedisPipeline, Script
    from .ratelimit import Rate

#: ``retry_after`` (seconds) of a ``busy`` answer.
BUSY_RETRY_AFTER = 1.0
#: ``EXEC`` refusals tolerated while holding the sale lock (only writers that
#: do not take the lock, such as a restock, can cause them).
LOCKED_CONFLICT_RETRIES = 3
#: Process-local locks the ``lock`` strategy's threads queue on, by sale id hash.
GATE_STRIPES = 64
#: Sales whose admission command the ``lua`` strategy keeps packed (see
#: :meth:`FastScript.template <flask_flashsale.fastcall.FastScript.template>`).
TEMPLATES = 256


class InventoryStrategy(Protocol):
    """What the extension needs from an inventory strategy."""

    #: ``lua``, ``optimistic`` or ``lock``.
    name: str

    def admit(
        self,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str = "",
        *,
        fresh_token: bool = False,
    ) -> Admission:
        """Try to admit one order for ticket ``<sale_id>~<token>``; return the outcome.

        ``verified_pass``: the buyer's waiting-room pass as verified by the web
        process: ``""`` none, ``"<queue epoch> <expiry ms>"``, ``"-"`` invalid.
        ``fresh_token``: ``token`` was drawn at random for this attempt (no
        idempotency key), so no ticket exists under it and a strategy may skip
        looking for one.
        """
        ...


class Counters:
    """Thread-safe event counters of a strategy, for benchmarks and monitoring.

    ``snapshot()`` returns e.g. ``{"attempts": 2000, "conflicts": 311,
    "retries": 311, "busy": 0}``. Counters are per process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``name``."""
        with self._lock:
            self._counts[name] += amount

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)


@dataclass(frozen=True, slots=True)
class _Plan:
    """An admission decided in Python, to be written with MULTI/EXEC."""

    remaining: int
    now_ms: int
    price: str
    limit: int
    #: The buyer's ticket tokens after this admission.
    tokens: str


class LuaStrategy:
    """The default inventory strategy: every check and write in one Lua script.

    One round trip, no retries, no lock: Redis runs the script atomically, so
    concurrent attempts can neither oversell nor double-admit.
    """

    name = "lua"

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        script: Script,
        *,
        ticket_ttl: int,
        user_rate: Rate | None = None,
        sale_rate: Rate | None = None,
        events_channel: str = "",
    ) -> None:
        self.client = client
        self.keys = keys
        self._script = script
        self._ttl = str(ticket_ttl)
        self._user_bucket = _bucket_args(user_rate)
        self._sale_bucket = _bucket_args(sale_rate)
        self._events = events_channel
        self._slack = str(BUYER_INDEX_SLACK)
        self._templates: dict[str, Template] = {}

    def admit(
        self,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str = "",
        *,
        fresh_token: bool = False,
    ) -> Admission:
        """Run the admission script once and translate its reply.

        ``verified_pass`` is the buyer's waiting-room pass as verified in this
        process (see :meth:`~flask_flashsale.waiting.WaitingRoom.check_pass`):
        ``""`` for none, ``"<queue epoch> <expiry ms>"``, or ``"-"`` for an
        invalid one.
        """
        ticket_id = join_ticket_id(sale_id, token)
        fresh = "1" if fresh_token else ""
        script = self._script
        if type(script) is FastScript:
            # The sale's command with its 13 fixed values packed once: only the
            # order's own 8 are packed per call (see _template).
            template = self._templates.get(sale_id)
            if template is None:
                template = self._template(script, sale_id)
            keys = self.keys
            reply = script.run(
                template.pack(
                    keys.ticket(sale_id, token),
                    keys.user_bucket(sale_id, user_id),
                    user_id,
                    quantity,
                    ticket_id,
                    verified_pass,
                    fresh,
                    token,
                )
            )
        else:
            reply = script(
                keys=self.keys.admission(sale_id, user_id, token),
                args=self._args(sale_id, user_id, quantity, ticket_id, verified_pass, fresh, token),
            )
        status, throttled_by, remaining, wait_ms = reply
        remaining = int(remaining)
        if status == "queued":  # the common answer first, positional (frozen dataclass)
            return Admission(status, ticket_id, remaining if remaining > 0 else 0)
        if status == "rate_limited":
            return Admission(
                status=status,
                remaining=max(remaining, 0),
                retry_after=int(wait_ms) / 1000.0,
                throttled_by=throttled_by,
            )
        wait_ms = int(wait_ms)
        return Admission(
            status=status,
            ticket_id=ticket_id if status == "duplicate" else None,
            remaining=None if status == "not_found" else max(remaining, 0),
            retry_after=wait_ms / 1000.0 if wait_ms > 0 else None,
        )

    def _args(
        self,
        sale_id: str,
        user_id: str | None,
        quantity: int | None,
        ticket_id: str | None,
        verified_pass: str | None,
        fresh: str | None,
        token: str | None,
    ) -> list[Any]:
        # admission.lua's ARGV (None, for a template: a slot).
        return [
            user_id,
            quantity,
            ticket_id,
            self._ttl,
            *self._user_bucket,
            *self._sale_bucket,
            self._events,
            self._slack,
            verified_pass,
            event(SOLD_OUT, sale_id),
            fresh,
            token,
        ]

    def _template(self, script: FastScript, sale_id: str) -> Template:
        # The sale's admission command with the order's values as slots, in
        # the order admit() fills them: ticket key, user bucket key, then the
        # ARGV slots. Kept per sale; the dict is emptied when it reaches
        # TEMPLATES, so sale ids that do not exist cannot make it grow.
        sale_keys = self.keys.admission(sale_id, "", "")
        keys = [
            None if name in ("ticket", "user_bucket") else key
            for name, key in zip(sale_keys._fields, sale_keys, strict=True)
        ]
        template = script.template(keys, self._args(sale_id, None, None, None, None, None, None))
        if len(self._templates) >= TEMPLATES:
            self._templates.clear()
        self._templates[sale_id] = template
        return template


def _bucket_args(rate: Rate | None) -> tuple[str, str]:
    if rate is None:
        return ("0", "0")
    return (repr(rate.interval_ms), str(rate.burst))


class WatchedStrategy:
    """Base of the strategies that decide in Python: the optimistic and lock strategies.

    One :meth:`_attempt` is the shared loop body: ``WATCH`` the sale's keys,
    judge (read and decide), write with ``MULTI``/``EXEC``. The judge mirrors
    ``admission.lua`` check for check: sale exists, idempotency (the ticket key
    is known before the attempt; another quantity under the same key is an
    ``idempotency_mismatch``), the pass of a sale with a waiting room, window
    on Redis ``TIME``, per-user limit, stock; and the write mirrors it write
    for write, the buyer's ticket list included. The reads run on a pipeline
    in ``WATCH`` mode, so the write is refused if any watched key changed
    since. Subclasses decide how often to attempt and what to hold meanwhile.
    """

    #: ``optimistic`` or ``lock``.
    name: str

    def __init__(
        self, client: RedisClient, keys: Keys, *, ticket_ttl: int, events_channel: str
    ) -> None:
        self.client = client
        self.keys = keys
        self.ticket_ttl = ticket_ttl
        self.events_channel = events_channel
        #: Event counters (see the class docstring).
        self.counters = Counters()

    def _attempt(
        self,
        k: AdmissionKeys,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str,
        *also_watch: str,
    ) -> Admission | None:
        """One watch/judge/write attempt; ``None`` when ``EXEC`` was refused (a conflict).

        ``also_watch`` keys are watched first (the lock strategy's lock key).
        """
        ticket_id = join_ticket_id(sale_id, token)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*also_watch, k.sale, k.users, k.ticket, k.buyers)
                outcome = self._judge(pipe, k, user_id, quantity, token, ticket_id, verified_pass)
                if isinstance(outcome, Admission):
                    return outcome
                return self._write(pipe, k, sale_id, user_id, quantity, ticket_id, outcome)
            except WatchError as exc:
                _raise_if_outage(exc)
                self.counters.incr("conflicts")
                return None

    def _busy(self, reason: str | None = None) -> Admission:
        if reason is not None:
            self.counters.incr(reason)
        self.counters.incr("busy")
        return Admission(status="busy", retry_after=BUSY_RETRY_AFTER)

    def _judge(
        self,
        pipe: RedisPipeline,
        k: AdmissionKeys,
        user_id: str,
        quantity: int,
        token: str,
        ticket_id: str,
        verified_pass: str = "",
    ) -> Admission | _Plan:
        """Read (watched) state and decide: a refusal, or a plan to write."""
        raw_remaining, starts, ends, limit, price, queue = pipe.hmget(
            k.sale, "remaining", "starts", "ends", "limit", "price", "queue"
        )
        if raw_remaining is None:
            return Admission(status="not_found")
        # Below 0 after an admin cut the stock under what buyers hold: shown as
        # 0, and refused like 0 (quantity >= 1).
        remaining = max(int(raw_remaining), 0)
        known_quantity = pipe.hget(k.ticket, "q")
        if known_quantity is not None:
            if int(known_quantity) != quantity:
                return Admission(status="idempotency_mismatch", remaining=remaining)
            return Admission(status="duplicate", ticket_id=ticket_id, remaining=remaining)
        epoch, _, expires = verified_pass.partition(" ")
        if queue is not None and epoch != queue:
            if verified_pass:
                return Admission(status="pass_invalid", remaining=remaining)
            return Admission(status="pass_required", remaining=remaining)
        # On the watching pipeline's own connection: taking a second one from
        # the pool while holding this one deadlocks a pool whose every
        # connection is held by a caller waiting for another (more callers than
        # connections: the norm in a gevent worker). A cluster pipeline cannot
        # send a command without a key: there, the client's (its per-node
        # pools never wait). TIME is not watched anyway.
        seconds, micros = (self.client if isinstance(pipe, ClusterPipeline) else pipe).time()
        now = int(seconds) * 1000 + int(micros) // 1000
        if queue is not None and now >= int(expires or 0):
            return Admission(status="pass_invalid", remaining=remaining)
        if starts and now < int(starts):
            wait = int(starts) - now
            return Admission(status="not_started", remaining=remaining, retry_after=wait / 1000.0)
        if ends and now >= int(ends):
            return Admission(status="ended", remaining=remaining)
        held = int(pipe.hget(k.users, user_id) or 0)
        if held + quantity > int(limit):
            return Admission(status="limit_reached", remaining=remaining)
        if remaining < quantity:
            return Admission(status="sold_out", remaining=remaining)
        tokens = buyer_tokens(pipe.hget(k.buyers, user_id), token, int(limit) + BUYER_INDEX_SLACK)
        return _Plan(
            remaining=remaining - quantity,
            now_ms=now,
            price=price or "",
            limit=int(limit),
            tokens=tokens,
        )

    def _write(
        self,
        pipe: RedisPipeline,
        k: AdmissionKeys,
        sale_id: str,
        user_id: str,
        quantity: int,
        ticket_id: str,
        plan: _Plan,
    ) -> Admission:
        """Write the admission in one MULTI/EXEC; raises ``WatchError`` if refused."""
        pipe.multi()
        pipe.hincrby(k.sale, "remaining", -quantity)
        pipe.hincrby(k.users, user_id, quantity)
        pipe.hset(k.ticket, mapping={"u": user_id, "q": quantity, "s": "queued", "a": plan.now_ms})
        pipe.expire(k.ticket, self.ticket_ttl)
        pipe.xadd(
            k.orders,
            {"t": ticket_id, "u": user_id, "q": quantity, "p": plan.price, "a": plan.now_ms},
        )
        pipe.hset(k.buyers, user_id, plan.tokens)
        remaining = int(pipe.execute()[0])
        if plan.remaining == 0 and self.events_channel:
            # After EXEC, not inside it: a cluster transaction holds only
            # commands with keys of its slot. Lost if Redis fails right now:
            # the cache TTL bounds that, as for any lost event.
            self.client.publish(self.events_channel, event(SOLD_OUT, sale_id))
        return Admission(status="queued", ticket_id=ticket_id, remaining=remaining)


def _raise_if_outage(exc: WatchError) -> None:
    """Re-raise the connection error or timeout redis-py reported as a ``WatchError``.

    redis-py turns a connection lost while watching into a ``WatchError``
    ("retry the transaction"); for an admission that is an outage, not a
    conflict: retrying would wait a second socket timeout, past the latency
    bound (answer ``503`` at once instead).
    """
    cause = exc.__context__
    if isinstance(cause, (RedisConnectionError, RedisTimeoutError)):
        raise cause from exc


class OptimisticStrategy(WatchedStrategy):
    """``WATCH``/``MULTI``/``EXEC`` with bounded retries and jittered back-off.

    An attempt whose ``EXEC`` is refused (another attempt changed the sale
    first) starts over after a random pause of up to ``backoff * 2**n``
    seconds (capped at ``max_backoff``), at most ``retries`` times; then it
    answers ``busy`` with ``retry_after``. A refused ``EXEC`` wrote nothing,
    so retries can neither oversell nor double-admit.

    :attr:`counters` counts ``attempts``, ``conflicts`` (refused EXEC calls),
    ``retries`` and ``busy`` answers.
    """

    name = "optimistic"
    #: Event counters (see the class docstring).
    counters: Counters

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        *,
        ticket_ttl: int,
        retries: int = 10,
        backoff: float = 0.002,
        max_backoff: float = 0.1,
        events_channel: str = "",
    ) -> None:
        super().__init__(client, keys, ticket_ttl=ticket_ttl, events_channel=events_channel)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def admit(
        self,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str = "",
        *,
        fresh_token: bool = False,
    ) -> Admission:
        """Admit with WATCH/MULTI/EXEC, retrying refused transactions."""
        k = self.keys.admission(sale_id, user_id, token)
        self.counters.incr("attempts")
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters.incr("retries")
                cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
                time.sleep(random.uniform(0, cap))
            outcome = self._attempt(k, sale_id, user_id, quantity, token, verified_pass)
            if outcome is not None:
                return outcome
        return self._busy()


class LockStrategy(WatchedStrategy):
    """The stock update inside the sale's distributed lock.

    Each attempt takes the sale's :class:`~flask_flashsale.lock.FencedLock`
    (key ``<prefix>:{<sale>}:lock``), waiting at most ``wait`` seconds
    (then: ``busy``), reads and decides in Python, and writes with
    ``MULTI``/``EXEC``. The transaction also watches the lock key, so
    Redis itself refuses the write of a holder whose lease (``lease``
    seconds) expired: the lock's own fencing. Writers that never take the lock
    (restock, a sale replaced) can still refuse an ``EXEC``; the attempt then
    re-reads while still holding the lock.

    Threads of one process queue on a local lock (one of
    :data:`GATE_STRIPES`, chosen by sale id) before they poll
    Redis, so a crowd of threads does not flood Redis (and the GIL) with
    polling; across processes the Redis lock alone decides.

    :attr:`counters` counts ``attempts``, ``lock_timeouts`` (no lock within
    ``wait``), ``conflicts`` (refused EXEC calls), ``conflicts_exhausted``
    (gave up after :data:`LOCKED_CONFLICT_RETRIES`), ``leases_lost`` and
    ``busy`` answers.
    """

    name = "lock"
    #: Event counters (see the class docstring).
    counters: Counters

    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        lock_script: Script,
        *,
        ticket_ttl: int,
        lease: float = 1.0,
        wait: float = 1.0,
        poll: float = 0.002,
        events_channel: str = "",
    ) -> None:
        super().__init__(client, keys, ticket_ttl=ticket_ttl, events_channel=events_channel)
        self.lease = lease
        self.wait = wait
        self.poll = poll
        self._script = lock_script
        # Striped, so that order attempts for any number of (made-up) sale ids
        # cannot grow memory; two sales rarely share a stripe, and then only
        # queue behind each other inside this process. Made in each process
        # on its first order (see _gate), not here.
        self._gates: list[threading.Lock] = []
        self._gates_pid = 0

    def _gate(self, sale_id: str) -> threading.Lock:
        """The local lock of ``sale_id``'s stripe, made anew in each process.

        A gate is held across Redis round trips. Under gunicorn's ``--preload``
        the app is built in the master and gevent patches ``threading`` only in
        each forked worker: gates made at build time would be real OS locks,
        and a greenlet waiting on one would freeze every greenlet of the
        worker, the holder included. (After a fork a gate held by a thread of
        the parent would stay locked too.) Two threads racing here in a new
        process may each make a set: they then only poll Redis side by side,
        which the distributed lock keeps correct.
        """
        pid = os.getpid()
        if self._gates_pid != pid:
            self._gates = [threading.Lock() for _ in range(GATE_STRIPES)]
            self._gates_pid = pid
        return self._gates[hash(sale_id) % GATE_STRIPES]

    def sale_lock(self, sale_id: str, wait: float | None = None) -> FencedLock:
        """The lock that serialises admissions to one sale (in the sale's hash tag).

        ``wait`` overrides the strategy's lock wait (``FLASHSALE_LOCK_WAIT``).
        """
        return FencedLock(
            self.client,
            self.keys.lock(sale_id),
            self.keys.fence(sale_id),
            script=self._script,
            timeout=self.lease,
            blocking_timeout=self.wait if wait is None else wait,
            sleep=self.poll,
            thread_local=False,
        )

    def admit(
        self,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str = "",
        *,
        fresh_token: bool = False,
    ) -> Admission:
        """Admit while holding the sale lock.

        Threads of one process first queue on a local lock, so only
        one of them at a time polls Redis for the distributed lock.
        """
        self.counters.incr("attempts")
        deadline = time.monotonic() + self.wait
        gate = self._gate(sale_id)
        if not gate.acquire(timeout=self.wait):
            return self._busy("lock_timeouts")
        try:
            lock = self.sale_lock(sale_id, max(0.0, deadline - time.monotonic()))
            try:
                lock.acquire()
            except LockNotAcquired:
                return self._busy("lock_timeouts")
            return self._admit_locked(lock, sale_id, user_id, quantity, token, verified_pass)
        finally:
            gate.release()

    def _admit_locked(
        self,
        lock: FencedLock,
        sale_id: str,
        user_id: str,
        quantity: int,
        token: str,
        verified_pass: str = "",
    ) -> Admission:
        k = self.keys.admission(sale_id, user_id, token)
        lease_lost = False
        try:
            for _ in range(LOCKED_CONFLICT_RETRIES):
                outcome = self._attempt(
                    k, sale_id, user_id, quantity, token, verified_pass, lock.key
                )
                if outcome is not None:
                    return outcome
                if not lock.owned():
                    lease_lost = True
                    break
            return self._busy("conflicts_exhausted")
        finally:
            try:
                lock.release()
            except LockLost:
                lease_lost = True
            if lease_lost:
                self.counters.incr("leases_lost")


def build_strategy(
    settings: Settings,
    client: RedisClient,
    keys: Keys,
    scripts: Mapping[str, Script],
    rates: Mapping[str, Rate | None],
) -> InventoryStrategy:
    """The strategy named by ``FLASHSALE_INVENTORY_STRATEGY``, on ``client``.

    ``scripts`` are the app's registered scripts (``admission``,
    ``lock_acquire``); ``rates`` the admission throttles by bucket (``user``,
    ``sale``; ``None`` when off). Every strategy publishes its sold-out event
    on ``keys.events_channel()``. Raises
    :class:`~flask_flashsale.ConfigurationError` when admission throttles are
    configured with a strategy other than ``lua``.
    """
    name = settings.inventory_strategy
    events = keys.events_channel()
    if name == "lua":
        script = scripts["admission"]
        if settings.fast_admission:
            # The same script, sent pre-packed on the pool's own connections
            # (one Redis server only; other backends keep redis-py's Script).
            script = fast_script_for(script, client)
        return LuaStrategy(
            client,
            keys,
            script,
            ticket_ttl=settings.ticket_ttl,
            user_rate=rates.get("user"),
            sale_rate=rates.get("sale"),
            events_channel=events,
        )
    if any(rate is not None for rate in rates.values()):
        raise ConfigurationError(
            "FLASHSALE_ORDER_RATE_PER_USER/_PER_SALE are enforced by the lua admission "
            f"script only; they cannot be combined with FLASHSALE_INVENTORY_STRATEGY={name!r}"
        )
    if name == "optimistic":
        return OptimisticStrategy(
            client,
            keys,
            ticket_ttl=settings.ticket_ttl,
            retries=settings.optimistic_retries,
            events_channel=events,
        )
    return LockStrategy(
        client,
        keys,
        scripts["lock_acquire"],
        ticket_ttl=settings.ticket_ttl,
        lease=settings.lock_timeout,
        wait=settings.lock_wait,
        events_channel=events,
    )
