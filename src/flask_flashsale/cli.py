"""``flask flashsale ...``: the extension's CLI group (``flask.commands`` entry point)."""

from __future__ import annotations

import json
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ConfigurationError, FlashSaleError
from .extension import FlashSale

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
def create_command(
    sale_id: str,
    stock: int,
    price: str | None,
    starts_at: str | None,
    ends_at: str | None,
    per_user_limit: int,
    info: str | None,
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
        )
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(json.dumps(sale.to_dict()))


@flashsale_cli.command("restock")
@click.argument("sale_id")
@click.argument("quantity", type=int)
def restock_command(sale_id: str, quantity: int) -> None:
    """Add QUANTITY units to a sale (negative withdraws unsold units)."""
    try:
        remaining = _ext().restock(sale_id, quantity)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
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
