"""``flask flashsale ...`` for a new user: one clear line, a documented exit code, no traceback.

Exit codes (docs/cli.rst): 0 done, 1 the command failed (or ``reconcile``
found differences), 2 a bad argument, 3 the app cannot be used from the
command line (its configuration, a missing extra, ``memory://``), 4 Redis
cannot be reached or failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.cli import ScriptInfo

from flask_flashsale import FlashSale
from flask_flashsale.cli import flashsale_cli
from flask_flashsale.registry import live_workers

from .helpers import ROOT, MakeApp, closed_port, wait_for


def one_line_error(result: Result, exit_code: int) -> str:
    """The single ``Error: ...`` line of a failed command (no traceback, nothing else)."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    return lines[0]


def invoke_with_factory(factory: Any, *args: str) -> Result:
    """Run a command the way ``flask --app`` does: the app is made when the command loads it."""
    runner = Flask("runner").test_cli_runner()
    return runner.invoke(flashsale_cli, list(args), obj=ScriptInfo(create_app=factory))


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    """Apps a test builds itself; their event subscribers are stopped at the end."""
    built: list[Flask] = []
    yield built
    for app in built:
        state = app.extensions.get("flashsale")
        if state is not None:
            state.cache.stop(timeout=0)


def memory_app(apps: list[Flask]) -> tuple[Flask, FlashSale]:
    app = Flask("memory-cli")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    apps.append(app)
    return app, FlashSale(app)


# -- memory:// ----------------------------------------------------------------

EVERY_COMMAND = {
    "create": ["create", "tee", "--stock", "1"],
    "restock": ["restock", "tee", "1"],
    "status": ["status"],
    "worker": ["worker", "--burst"],
    "reconcile": ["reconcile"],
    "dead-letters": ["dead-letters"],
}


def test_the_memory_guard_list_names_every_command_of_the_group() -> None:
    assert set(EVERY_COMMAND) == set(flashsale_cli.commands)


@pytest.mark.parametrize("args", EVERY_COMMAND.values(), ids=list(EVERY_COMMAND))
def test_every_command_refuses_a_memory_store_only_its_own_process_sees(
    args: list[str], apps: list[Flask]
) -> None:
    app, ext = memory_app(apps)
    with app.app_context():
        ext.create_sale("other", stock=1)
    line = one_line_error(app.test_cli_runner().invoke(flashsale_cli, args), 3)
    assert "memory://" in line and "FLASHSALE_REDIS_URL=redis://" in line
    with app.app_context():
        assert [s.id for s in ext.list_sales()] == ["other"]  # nothing was created


def test_status_lists_no_worker_of_its_own(redis_url: str) -> None:
    # A web app may run an inline worker on a real Redis; the CLI process that
    # loads the same app must not keep one running and report it as live.
    app = Flask("inline-on-redis")
    app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL=redis_url, FLASHSALE_INLINE_WORKER=True)
    FlashSale(app)
    state = FlashSale.state(app)
    try:
        wait_for(lambda: bool(live_workers(state.client, state.keys)))
        result = app.test_cli_runner().invoke(flashsale_cli, ["status"])
        assert result.exit_code == 0, result.output
        assert "0 live worker(s)" in result.output
        assert live_workers(state.client, state.keys) == []
    finally:
        if state.inline_worker is not None:
            state.inline_worker.stop()
        state.cache.stop(timeout=0)


# -- configuration errors -------------------------------------------------------


def test_a_configuration_error_at_start_up_is_one_line_naming_key_and_value(
    redis_url: str, apps: list[Flask]
) -> None:
    def factory() -> Flask:
        app = Flask("bad-config")
        apps.append(app)
        app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL=redis_url, FLASHSALE_CACHE_TTL="soon")
        FlashSale(app)
        return app

    line = one_line_error(invoke_with_factory(factory, "status"), 3)
    assert "FLASHSALE_CACHE_TTL" in line and "'soon'" in line
    assert "500" not in line


def test_a_bad_order_rate_names_its_key(make_app: MakeApp) -> None:
    from flask_flashsale import ConfigurationError

    with pytest.raises(ConfigurationError, match="FLASHSALE_ORDER_RATE_PER_USER") as info:
        make_app(FLASHSALE_ORDER_RATE_PER_USER="lots")
    assert "'lots'" in str(info.value)


def test_a_missing_memory_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # import fakeredis -> ImportError

    def factory() -> Flask:
        app = Flask("no-fakeredis")
        app.config["FLASHSALE_REDIS_URL"] = "memory://"
        FlashSale(app)
        return app

    line = one_line_error(invoke_with_factory(factory, "status"), 3)
    assert "pip install 'Flask-FlashSale[memory]'" in line


def test_an_app_without_the_extension_is_a_one_line_error() -> None:
    line = one_line_error(Flask("plain").test_cli_runner().invoke(flashsale_cli, ["status"]), 3)
    assert "init_app" in line


def write_app(tmp_path: Path, config: str) -> Path:
    path = tmp_path / "badapp.py"
    path.write_text(
        textwrap.dedent(
            """\
            from flask import Flask
            from flask_flashsale import FlashSale

            app = Flask(__name__)
            app.config.update({config})
            flashsale = FlashSale(app)
            """
        ).format(config=config)
    )
    return path


def run_flask(app: Path | str, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", str(app), "flashsale", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flask_cli_prints_a_start_up_configuration_error_in_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    app = write_app(
        tmp_path, f"SECRET_KEY='x', FLASHSALE_REDIS_URL={redis_url!r}, FLASHSALE_CACHE_TTL='soon'"
    )
    done = run_flask(app, "status")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert "FLASHSALE_CACHE_TTL" in done.stderr and "'soon'" in done.stderr


# -- Redis unreachable -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["status"], ["create", "tee", "--stock", "1"], ["restock", "tee", "1"], ["dead-letters"]],
)
def test_a_closed_redis_port_is_one_line_naming_the_address(
    args: list[str], apps: list[Flask]
) -> None:
    port = closed_port()
    app = Flask("closed")
    apps.append(app)
    app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    FlashSale(app)
    line = one_line_error(app.test_cli_runner().invoke(flashsale_cli, args), 4)
    assert f"127.0.0.1:{port}" in line


def test_the_quick_start_against_a_closed_port_says_where_it_looked(tmp_path: Path) -> None:
    # examples/quickstart.py reads Redis while it is imported (get_sale).
    port = closed_port()
    done = run_flask(
        "examples/quickstart.py",
        "status",
        env={
            "FLASHSALE_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "SECRET_KEY": "x",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}",
        },
    )
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr


# -- small traps -------------------------------------------------------------------


def test_restock_takes_a_negative_quantity(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=5)
    result = app.test_cli_runner().invoke(flashsale_cli, ["restock", "tee", "-2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "tee: 3 remaining"


def test_restock_still_refuses_unknown_options(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=5)
    result = app.test_cli_runner().invoke(flashsale_cli, ["restock", "tee", "1", "--force"])
    assert result.exit_code == 2
    with app.app_context():
        assert ext.get_sale("tee").remaining == 5  # type: ignore[union-attr]


@pytest.mark.parametrize("command", ["create", "restock", "reconcile", "dead-letters"])
def test_an_invalid_sale_id_is_a_usage_error_not_an_unknown_sale(
    make_app: MakeApp, command: str
) -> None:
    app, _ = make_app()
    args = {"create": ["--stock", "1"], "restock": ["1"]}.get(command, [])
    line = one_line_error(
        app.test_cli_runner().invoke(flashsale_cli, [command, "bad/id", *args]), 2
    )
    assert "'bad/id' is not a valid sale id" in line
    assert "sale_not_found" not in line


@pytest.mark.parametrize("info", ["notjson", "[1, 2]", '"text"'])
def test_info_must_be_a_json_object(make_app: MakeApp, info: str) -> None:
    app, ext = make_app()
    result = app.test_cli_runner().invoke(
        flashsale_cli, ["create", "tee", "--stock", "1", "--info", info]
    )
    line = one_line_error(result, 2)
    assert "--info must be a JSON object" in line
    with app.app_context():
        assert ext.get_sale("tee") is None


# -- status shows each sale's state -------------------------------------------------


def test_status_shows_each_sales_state(make_app: MakeApp) -> None:
    app, ext = make_app()
    now = datetime.now(timezone.utc)
    with app.app_context():
        ext.create_sale("a-upcoming", stock=1, starts_at=now + timedelta(hours=1))
        ext.create_sale("b-active", stock=1)
        ext.create_sale("c-soldout", stock=0)
        ext.create_sale(
            "d-ended", stock=1, starts_at=now - timedelta(hours=2), ends_at=now - timedelta(hours=1)
        )
    runner = app.test_cli_runner()
    result = runner.invoke(flashsale_cli, ["status"])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert "STATE" in header.split()
    states = {row.split()[0]: row.split()[1] for row in rows[:4]}
    assert states == {
        "a-upcoming": "upcoming",
        "b-active": "active",
        "c-soldout": "sold_out",
        "d-ended": "ended",
    }
    doc = json.loads(runner.invoke(flashsale_cli, ["status", "--json"]).output)
    assert {s["sale_id"]: s["status"] for s in doc["sales"]} == states
