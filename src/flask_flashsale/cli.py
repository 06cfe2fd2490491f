"""``flask flashsale ...``: the extension's CLI group (``flask.commands`` entry point)."""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ConfigurationError, FlashSaleError, SaleNotFound
from .extension import FlashSale
from .keys import check_sale_id
from .registry import live_workers
from .waiting import QueueStats

flashsale_cli = AppGroup("flashsale", help="Run and inspect flash sales.")


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
@click.argument("sale_id")
@click.option("--stock", type=int, required=True, help="Units offered.")
@click.option("--price", default=None, help="Unit price, e.g. 9.99.")
@click.option("--starts-at", default=None, help="ISO datetime with offset, or Unix seconds.")
@click.option("--ends-at", default=None, help="ISO datetime with offset, or Unix seconds.")
@click.option("--per-user-limit", type=int, default=1, show_default=True)
@click.option("--info", default=None, help="JSON object of host data (name, image...).")
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
    info: str | None,
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
            info=json.loads(info) if info else None,
            fairness=fairness,
            admit_rate=admit_rate,
            queue_opens_at=_when(queue_opens_at),
        )
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None
    except FlashSaleError as exc:
        raise click.ClickException(f"{exc.error_code}: {exc.description}") from None
    click.echo(json.dumps(sale.to_dict()))


@flashsale_cli.command("restock")
@click.argument("sale_id")
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
@click.argument("sale_id", required=False)
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
def worker_command(burst: bool, concurrency: int, name: str | None) -> None:
    """Hand admitted orders to the app's order handler.

    Runs until SIGTERM/SIGINT: the order in hand is finished, then the worker
    exits 0 (a second signal stops at once). With --burst it exits once every
    sale's queue is empty.
    """
    logger = logging.getLogger("flask_flashsale")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        _ext().run_worker(burst=burst, concurrency=concurrency, name=name)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except ConfigurationError as exc:
        raise click.ClickException(str(exc.description)) from None


@flashsale_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(as_json: bool) -> None:
    """Show each sale's stock and queue, and the live workers."""
    state = FlashSale.state(current_app)
    sales = {s.id: s for s in state.sales.list()}
    queues = state.orders.stats(sorted(sales))
    waiting = {
        sid: state.waiting.stats(sid) for sid in sorted(sales) if sales[sid].fairness != "none"
    }
    workers = live_workers(state.client, state.keys)
    if as_json:
        doc = {
            "sales": [
                {
                    **q.to_dict(),
                    "remaining": sales[q.sale_id].remaining,
                    "stock": sales[q.sale_id].stock,
                    **_queue_json(waiting.get(q.sale_id)),
                }
                for q in queues
            ],
            "workers": [w.to_dict() for w in workers],
        }
        click.echo(json.dumps(doc))
        return
    click.echo(
        f"{'SALE':<24} {'LEFT/STOCK':>12} {'QUEUED':>7} {'PENDING':>8} {'LAG':>7}"
        f" {'RETRYING':>9} {'DEAD':>6}"
    )
    for q in queues:
        sale = sales[q.sale_id]
        left = f"{sale.remaining}/{sale.stock}"
        click.echo(
            f"{q.sale_id:<24} {left:>12} {q.length:>7} {q.pending:>8} {q.lag:>7}"
            f" {q.retrying:>9} {q.dead_letters:>6}"
        )
    for w_room in waiting.values():
        if w_room is not None:
            drawn = {None: "", True: ", drawn", False: ", not drawn yet"}[w_room.drawn]
            click.echo(
                f"{w_room.sale_id} queue: {w_room.fairness} {w_room.admit_rate:g}/s{drawn};"
                f" joined {w_room.joined}, waiting {w_room.waiting},"
                f" let through {w_room.let_through}, passes used {w_room.passes_used}"
            )
    click.echo(f"\n{len(workers)} live worker(s)")
    for w in workers:
        click.echo(
            f"  {w.name}  host={w.host} pid={w.pid} threads={w.concurrency} {w.state}"
            f"  processed={w.processed} confirmed={w.confirmed} failed={w.failed}"
        )


def _queue_json(stats: QueueStats | None) -> dict[str, object]:
    """The ``queue`` member of a sale in ``status --json`` (none without a waiting room)."""
    if stats is None:
        return {}
    doc = dataclasses.asdict(stats)
    del doc["sale_id"]
    return {"queue": doc}


#: Dead letters read per round trip while ``dead-letters`` pages through a stream.
DEAD_LETTER_PAGE = 100


@flashsale_cli.command("dead-letters")
@click.argument("sale_id", required=False)
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
