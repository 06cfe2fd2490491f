"""``flask flashsale create`` and ``restock``: admin commands, clear errors, no tracebacks."""

from __future__ import annotations

import json

from flask_flashsale.cli import flashsale_cli

from .helpers import MakeApp


def test_create_defines_a_sale_and_prints_it(make_app: MakeApp) -> None:
    app, ext = make_app()
    result = app.test_cli_runner().invoke(
        flashsale_cli,
        [
            "create",
            "tee",
            "--stock",
            "5",
            "--price",
            "9.99",
            "--per-user-limit",
            "2",
            "--starts-at",
            "2030-01-01T00:00:00+00:00",
            "--info",
            '{"name": "Tee"}',
        ],
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert (printed["id"], printed["remaining"], printed["price"]) == ("tee", 5, "9.99")
    with app.app_context():
        sale = ext.get_sale("tee")
        assert sale is not None and sale.info == {"name": "Tee"} and sale.per_user_limit == 2
        assert sale.status == "upcoming"


def test_restock_adds_units_and_prints_what_remains(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=1)
    result = app.test_cli_runner().invoke(flashsale_cli, ["restock", "tee", "4"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "tee: 5 remaining"


def test_admin_mistakes_are_one_line_errors_not_tracebacks(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=1)
    runner = app.test_cli_runner()
    for args in (
        ["restock", "nope", "1"],
        ["restock", "tee", "-5"],
        ["create", "bad id", "--stock", "1"],
        ["create", "tee", "--stock", "-1"],
        ["create", "tee", "--stock", "1", "--starts-at", "2030-01-01T00:00:00"],
    ):
        result = runner.invoke(flashsale_cli, args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), args
        assert "Error" in result.output, (args, result.output)
