"""``flask flashsale ...``: the extension's CLI group (``flask.commands`` entry point).

Every command of the group goes through one guard (:class:`FlashSaleGroup`):
it refuses a ``memory://`` store (which lives inside one process, so a command
would act on a store no other process sees), stops an inline worker the app
started in the CLI process, and turns the extension's errors and Redis errors
into one line and a documented exit code (:data:`EXIT_CODES`), never a
traceback.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
import redis
from flask import current_app
from flask.cli import AppGroup

from .autoscale import MAX_WORKERS
from .config import redis_address
from .errors import (
    ConfigurationError,
    FlashSaleError,
    InvalidSaleId,
    NotInitializedError,
    SaleNotFound,
)
from .extension import FlashSale
from .keys import check_sale_id
from .models import Sale
from .payments import PaymentStats
from .registry import WorkerInfo

#: The command did what it was asked.
EXIT_OK = 0
#: The command failed (an unknown sale, a refused change), or ``reconcile``
#: found differences it did not fix.
EXIT_FAILED = 1
#: A bad option or argument (click's own exit code for usage errors).
EXIT_USAGE = 2
#: The app cannot be used from the command line: its ``FLASHSALE_*``
#: configuration is invalid, an extra is missing, the extension is not
#: initialised, or the store is ``memory://``.
EXIT_CONFIG = 3
#: Redis cannot be reached (refused, timed out, circuit breaker open) or failed.
EXIT_REDIS = 4
#: Every exit code of ``flask flashsale ...``, documented in docs/cli.rst.
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "the command failed, or reconcile found differences it did not fix",
    EXIT_USAGE: "a bad option or argument",
    EXIT_CONFIG: "the app cannot be used from the command line (configuration, memory://)",
    EXIT_REDIS: "Redis cannot be reached or failed",
}


class CommandError(click.ClickException):
    """A one-line ``Error: ...`` with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click >= 8.5 types exit_code as a ClassVar; setting it per instance is
        # what click itself reads when it exits.
        self.exit_code = exit_code  # type: ignore[misc, unused-ignore]


def one_line(exc: FlashSaleError | redis.RedisError, address: str | None) -> click.ClickException:
    """The one-line CLI error for an error of the extension or of Redis.

    ``address`` is where ``FLASHSALE_REDIS_URL`` points (``None`` while the app
    is still loading; Redis's own message names the address then).
    """
    where = f"Redis at {address} (FLASHSALE_REDIS_URL)" if address else "Redis"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # CircuitOpen too
        return CommandError(f"cannot reach {where}: {exc}", EXIT_REDIS)
    if isinstance(exc, redis.RedisError):
        return CommandError(f"{where} answered an error: {exc}", EXIT_REDIS)
    if isinstance(exc, InvalidSaleId):
        return CommandError(f"SALE_ID: {exc}", EXIT_USAGE)
    if isinstance(exc, (ConfigurationError, NotInitializedError)):
        return CommandError(str(exc), EXIT_CONFIG)
    return CommandError(f"{exc.error_code}: {exc}", EXIT_FAILED)


def process_local(url: str) -> bool:
    """True if ``url`` names a store that lives inside one process (``memory://``)."""
    from .connection import backend_class

    return backend_class(url).process_local


def guarded(f: Callable[..., Any], *, shared_store: bool = True) -> Callable[..., Any]:
    """Wrap a command's callback (run inside the app context) in the group's guard.

    With ``shared_store`` the command refuses ``memory://``. An inline worker
    (:data:`FLASHSALE_INLINE_WORKER`, a web-process feature) is stopped first,
    so a CLI process neither takes orders nor shows up in ``status``.
    """

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        address = None
        try:
            state = FlashSale.state(current_app)
            url = state.settings.redis_url
            address = redis_address(url)
            if shared_store and process_local(url):
                raise CommandError(
                    f"FLASHSALE_REDIS_URL is {url}: this command would act on a store only "
                    "this process sees; set FLASHSALE_REDIS_URL=redis://... to use the CLI",
                    EXIT_CONFIG,
                )
            if state.inline_worker is not None:
                state.inline_worker.stop()
                state.inline_worker = None
            return f(*args, **kwargs)
        except (FlashSaleError, redis.RedisError) as exc:
            raise one_line(exc, address) from None

    return command


class FlashSaleGroup(AppGroup):
    """The ``flashsale`` group: one guard and one error handling for every command.

    ``@flashsale_cli.command(...)`` wraps the callback in :func:`guarded`
    (pass ``shared_store=False`` for a command that may run on ``memory://``);
    errors raised while the app loads (a bad configuration, Redis down while
    the app module runs) become one line too.
    """

    def command(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], click.Command]:
        """Like :meth:`AppGroup.command`, with the callback wrapped in :func:`guarded`."""
        shared_store = kwargs.pop("shared_store", True)
        register = super().command(*args, **kwargs)

        def decorator(f: Callable[..., Any]) -> click.Command:
            return register(guarded(f, shared_store=shared_store))

        return decorator

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an error of ours or of Redis while loading the app is one line."""
        try:
            return super().invoke(ctx)
        except (FlashSaleError, redis.RedisError) as exc:
            raise one_line(exc, None) from None


def sale_id_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a sale id, checked before the app loads.

    A bad one is a one-line usage error (exit code 2) saying why it cannot be
    a sale id, rather than "no such sale".
    """
    return None if value is None else check_sale_id_or_exit(value)


def new_sale_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: a sale id for ``create``, which may not be one reserved by the API."""
    from .views import RESERVED_SALE_IDS

    sale_id = check_sale_id_or_exit(value)
    if sale_id in RESERVED_SALE_IDS:
        raise one_line(
            InvalidSaleId(
                sale_id,
                f"{sale_id!r} is reserved: it names a route of the HTTP API "
                f"(reserved ids: {', '.join(sorted(RESERVED_SALE_IDS))})",
            ),
            None,
        )
    return sale_id


def check_sale_id_or_exit(value: str) -> str:
    """:func:`check_sale_id`, failing as a one-line usage error."""
    try:
        return check_sale_id(value)
    except InvalidSaleId as exc:
        raise one_line(exc, None) from None


def json_object_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, Any] | None:
    """Click callback: a JSON object given on the command line (``--info``)."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        name = param.opts[0] if param.opts else "the value"
        raise CommandError(
            f'{name} must be a JSON object, e.g. \'{{"name": "Tee"}}\'; got {value!r}',
            EXIT_USAGE,
        )
    return parsed


flashsale_cli = FlashSaleGroup("flashsale", help="Run and inspect flash sales.")


def _ext() -> FlashSale:
    return FlashSale.state(current_app).ext


def _when(value: str | None) -> datetime | float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value)


@flashsale_cli.command("create")
@click.argument("sale_id", callback=new_sale_id_argument)
@click.option("--stock", type=int, required=True, help="Units offered.")
@click.option("--price", default=None, help="Unit price, e.g. 9.99.")
@click.option("--starts-at", default=None, help="ISO datetime with offset, or Unix seconds.")
@click.option("--ends-at", default=None, help="ISO datetime with offset, or Unix seconds.")
@click.option("--per-user-limit", type=int, default=1, show_default=True)
@click.option(
    "--info",
    callback=json_object_option,
    default=None,
    help="JSON object of host data (name, image...).",
)
@click.option(
    "--payment-timeout",
    type=float,
    default=None,
    help="Seconds a buyer has to pay (mark_paid) before the hold expires; default: no limit.",
)
@click.option(
    "--fairness",
    type=click.Choice(["none", "fifo", "lottery"]),
    default="none",
    show_default=True,
    help="Waiting room: buyers queue, then order with a pass.",
)
@click.option("--admit-rate", type=float, default=None, help="Waiting room: buyers let through/s.")
@click.option("--queue-opens-at", default=None, help="Default: 15 minutes before --starts-at.")
def create_command(
    sale_id: str,
    stock: int,
    price: str | None,
    starts_at: str | None,
    ends_at: str | None,
    per_user_limit: int,
    info: dict[str, Any] | None,
    payment_timeout: float | None,
    fairness: str,
    admit_rate: float | None,
    queue_opens_at: str | None,
) -> None:
    """Define or replace a sale."""
    try:
        sale = _ext().create_sale(
            sale_id,
            stock=stock,
            price=price,
            starts_at=_when(starts_at),
            ends_at=_when(ends_at),
            per_user_limit=per_user_limit,
            info=info,
            payment_timeout=payment_timeout,
            fairness=fairness,
            admit_rate=admit_rate,
            queue_opens_at=_when(queue_opens_at),
        )
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None
    except FlashSaleError as exc:
        raise click.ClickException(f"{exc.error_code}: {exc.description}") from None
    click.echo(json.dumps(sale.to_dict()))


@flashsale_cli.command("restock", context_settings={"ignore_unknown_options": True})
@click.argument("sale_id", callback=sale_id_argument)
@click.argument("quantity", type=int)
def restock_command(sale_id: str, quantity: int) -> None:
    """Add QUANTITY units to a sale (negative withdraws units; never below 0 stock)."""
    try:
        remaining = _ext().restock(sale_id, quantity)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except FlashSaleError as exc:
        raise click.ClickException(f"{exc.error_code}: {exc.description}") from None
    click.echo(f"{sale_id}: {remaining} remaining")


@flashsale_cli.command("reconcile")
@click.argument("sale_id", callback=sale_id_argument, required=False)
@click.option("--fix", is_flag=True, help="Repair Redis (under the sale's lock).")
def reconcile_command(sale_id: str | None, fix: bool) -> None:
    """Compare Redis with the host's orders (every sale, or SALE_ID).

    Needs a ``@flashsale.reconcile_source`` hook. Exits 1 when differences
    were found and not repaired, so a cron job can alert on it.
    """
    try:
        reports = _ext().reconcile(sale_id, fix=fix)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc.description)) from None
    except FlashSaleError as exc:
        raise click.ClickException(f"{exc.error_code}: {exc.description}") from None
    if not reports:
        click.echo("no sales")
    for report in reports:
        for line in report.describe():
            click.echo(line)
    if any(not r.ok and not r.fixed for r in reports):
        raise SystemExit(1)


def _autoscale_range(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, int] | None:
    """``--autoscale MIN,MAX`` -> ``(MIN, MAX)``."""
    if value is None:
        return None
    try:
        low, high = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX such as 1,4; got {value!r}") from None
    if not 1 <= low <= high <= MAX_WORKERS:
        raise click.BadParameter(f"MIN,MAX needs 1 <= MIN <= MAX <= {MAX_WORKERS}; got {value!r}")
    return low, high


@flashsale_cli.command("worker")
@click.option("--burst", is_flag=True, help="Process what is queued, then exit.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Consumer threads in this process.",
)
@click.option("--name", default=None, help="Worker name, unique among live workers.")
@click.option(
    "--autoscale",
    default=None,
    metavar="MIN,MAX",
    callback=_autoscale_range,
    help="Run MIN to MAX worker processes under this one, scaled on queue lag.",
)
def worker_command(
    burst: bool, concurrency: int, name: str | None, autoscale: tuple[int, int] | None
) -> None:
    """Hand admitted orders to the app's order handler.

    Runs until SIGTERM/SIGINT: the order in hand is finished, then the worker
    exits 0 (a second signal stops at once). With --burst it exits once every
    sale's queue is empty. With --autoscale MIN,MAX this process supervises
    MIN to MAX worker processes (--name and --concurrency apply to them) and
    forwards the signals to them.
    """
    if autoscale is not None and burst:
        raise click.UsageError(
            "--autoscale and --burst do not mix: a supervisor runs until stopped"
        )
    logger = logging.getLogger("flask_flashsale")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        _ext().run_worker(burst=burst, concurrency=concurrency, name=name, autoscale=autoscale)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except ConfigurationError as exc:
        raise click.ClickException(str(exc.description)) from None


@flashsale_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Show each sale's state, stock and queue, and the live workers."""
    status = _ext().status()
    workers, supervisors = status.workers, status.supervisors
    if as_json:
        click.echo(json.dumps(status.to_dict()))
        return
    click.echo(
        f"{'SALE':<24} {'STATE':<9} {'LEFT/STOCK':>12} {'QUEUED':>7} {'PENDING':>8} {'LAG':>7}"
        f" {'RETRYING':>9} {'DEAD':>6}"
    )
    for row in status.sales:
        sale, q = row.sale, row.queue
        left = f"{sale.remaining}/{sale.stock}"
        click.echo(
            f"{q.sale_id:<24} {sale.status:<9} {left:>12} {q.length:>7} {q.pending:>8} {q.lag:>7}"
            f" {q.retrying:>9} {q.dead_letters:>6}"
        )
    sales = {row.sale.id: row.sale for row in status.sales}
    payments = {row.sale.id: row.payments for row in status.sales}
    _echo_payments(sales, payments)
    for w_room in (row.waiting for row in status.sales):
        if w_room is not None:
            drawn = {None: "", True: ", drawn", False: ", not drawn yet"}[w_room.drawn]
            click.echo(
                f"{w_room.sale_id} queue: {w_room.fairness} {w_room.admit_rate:g}/s{drawn};"
                f" joined {w_room.joined}, waiting {w_room.waiting},"
                f" let through {w_room.let_through}, passes used {w_room.passes_used}"
            )
    also = f", {len(supervisors)} supervisor(s)" if supervisors else ""
    click.echo(f"\n{len(workers)} live worker(s){also}")
    for s in supervisors:
        lag = "?" if s.lag is None else s.lag
        click.echo(
            f"  {s.name}  supervisor host={s.host} pid={s.pid}"
            f" workers={len(s.children)} (min {s.minimum}, max {s.maximum}) lag={lag} {s.state}"
        )
        for w in workers:
            if w.parent == s.name:
                click.echo(f"    {_worker_line(w)}")
    for w in workers:
        if w.parent is None:
            click.echo(f"  {_worker_line(w)}")


def _worker_line(w: WorkerInfo) -> str:
    return (
        f"{w.name}  host={w.host} pid={w.pid} threads={w.concurrency} {w.state}"
        f"  processed={w.processed} confirmed={w.confirmed} failed={w.failed}"
    )


def _echo_payments(sales: dict[str, Sale], payments: dict[str, PaymentStats]) -> None:
    """The payments table of ``status``: sales with a payment timeout (or payments)."""
    shown = [
        p
        for p in payments.values()
        if sales[p.sale_id].payment_timeout is not None or p.awaiting_payment or p.paid or p.expired
    ]
    if not shown:
        return
    click.echo(f"\n{'PAYMENTS':<24} {'TIMEOUT':>9} {'AWAITING':>9} {'PAID':>7} {'EXPIRED':>8}")
    for p in shown:
        timeout = sales[p.sale_id].payment_timeout
        limit = "-" if timeout is None else f"{timeout:g}s"
        click.echo(
            f"{p.sale_id:<24} {limit:>9} {p.awaiting_payment:>9} {p.paid:>7} {p.expired:>8}"
        )


#: Dead letters read per round trip while ``dead-letters`` pages through a stream.
DEAD_LETTER_PAGE = 100


@flashsale_cli.command("dead-letters")
@click.argument("sale_id", callback=sale_id_argument, required=False)
@click.option(
    "--requeue",
    "entry_id",
    default=None,
    metavar="ENTRY_ID",
    help="Put this dead letter of SALE_ID back on the queue (takes its stock again).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Print at most this many (default: all of them).",
)
@click.option(
    "--after",
    default=None,
    metavar="ENTRY_ID",
    help="Start after this dead letter of SALE_ID (the last one of the previous page).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def dead_letters_command(
    sale_id: str | None,
    entry_id: str | None,
    limit: int | None,
    after: str | None,
    as_json: bool,
) -> None:
    """List orders that failed for good (all sales, or SALE_ID), or requeue one.

    Every dead letter is printed, oldest first, sale by sale; the count on
    stderr is how many the dead-letter streams hold. With --limit the listing
    stops after that many and says where the next page starts (--after).
    """
    state = FlashSale.state(current_app)
    if entry_id is not None:
        if sale_id is None:
            raise click.UsageError("--requeue needs the SALE_ID the dead letter belongs to")
        try:
            outcome = state.orders.requeue(sale_id, entry_id)
        except SaleNotFound as exc:
            raise click.ClickException(str(exc.description)) from None
        if outcome != "queued":
            raise click.ClickException(f"not requeued: {outcome}")
        click.echo(f"{sale_id} {entry_id}: requeued")
        return
    if after is not None and sale_id is None:
        raise click.UsageError("--after needs the SALE_ID the dead letter belongs to")
    sale_ids = [sale_id] if sale_id else state.orders.sale_ids()
    try:
        counts = {
            q.sale_id: q.dead_letters
            for q in state.orders.stats([check_sale_id(s) for s in sale_ids])
        }
    except SaleNotFound as exc:
        raise click.BadParameter(str(exc.description)) from None
    shown = 0
    last: tuple[str, str] | None = None
    more = False
    for i, sid in enumerate(sale_ids):
        cursor = after if sid == sale_id else None
        while True:
            room = DEAD_LETTER_PAGE if limit is None else min(DEAD_LETTER_PAGE, limit - shown)
            if room == 0:
                break
            try:
                letters = state.orders.dead_letters(sid, room, after=cursor)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--after") from None
            for d in letters:
                if as_json:
                    click.echo(json.dumps(d.to_dict()))
                else:
                    click.echo(
                        f"{d.sale_id} {d.entry_id} ticket={d.ticket_id} user={d.user_id}"
                        f" qty={d.quantity} attempts={d.attempts} reason={d.reason}"
                    )
            shown += len(letters)
            if letters:
                cursor = letters[-1].entry_id
                last = (sid, cursor)
            if len(letters) < room:
                break
        if limit is not None and shown >= limit:
            later = any(counts[s] for s in sale_ids[i + 1 :])
            more = later or bool(state.orders.dead_letters(sid, 1, after=cursor))
            break
    if as_json:
        return
    total = sum(counts.values())
    if limit is None:
        click.echo(f"{total} dead letter(s)", err=True)
    elif not more or last is None:
        click.echo(f"{shown} of {total} dead letter(s) shown", err=True)
    else:
        where = f"--after {last[1]}" if sale_id else f"{last[0]} --after {last[1]}"
        click.echo(f"{shown} of {total} dead letter(s) shown; next page: {where}", err=True)
