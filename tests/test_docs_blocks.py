"""The code blocks of README.md and docs/*.rst are run or checked, so they cannot drift.

Every block is accounted for in :data:`BLOCKS` (a test fails on a new block
that is not): ``run`` blocks are executed against a real app on the test
Redis, with only the stand-ins the surrounding text names (the host's
database, its own guard); ``compile`` blocks need the host's own models and
are compiled only; ``cli`` blocks have each ``flask ... flashsale`` line
parsed by the real command group; ``other`` blocks are checked elsewhere or
cannot run here, with the reason. The quick start (README's python block,
``examples/quickstart.py``, its curl lines) is run by tests/test_quickstart.py.
"""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import flask
import pytest
from flask import Blueprint, Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_flashsale import BackendUnavailable, FlashSale, Order, SoldOut, order_confirmed
from flask_flashsale.cli import EXIT_CODES, flashsale_cli
from flask_flashsale.config import DEFAULTS
from flask_flashsale.ratelimit import Limit, parse_rate

from .helpers import ROOT, MakeApp

DIRECTIVE = re.compile(r"^(\s*)\.\. code-block:: *(\S+)\s*$")


@dataclass(frozen=True)
class Block:
    """One code block: where it is, its language (``literal`` for ``::``), its text."""

    file: str
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def rst_blocks(path: Path) -> list[Block]:
    """``.. code-block::`` and ``::`` literal blocks of an .rst file, dedented."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = DIRECTIVE.match(line)
        if m:
            indent, lang = len(m.group(1)), m.group(2)
        elif line.rstrip().endswith("::") and not line.lstrip().startswith(".. "):
            indent, lang = len(line) - len(line.lstrip()), "literal"
        else:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        body = []
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            body.append(lines[j])
            j += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        found.append(Block(f"docs/{path.name}", i + 1, lang, code))
        i = j
    return found


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [
        Block("README.md", text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)
    ]


def all_blocks() -> list[Block]:
    blocks = readme_blocks()
    for path in sorted((ROOT / "docs").glob("*.rst")):
        blocks.extend(rst_blocks(path))
    return blocks


def the_block(file: str, needle: str) -> Block:
    (block,) = [b for b in all_blocks() if b.file == file and needle in b.code]
    return block


# -- running python blocks -------------------------------------------------------------

#: What every docs page takes as imported in its Python snippets.
PAGE_GLOBALS = {"Blueprint": Blueprint, "request": request}


def run(block: Block, app: Flask, flashsale: FlashSale, **names: Any) -> dict[str, Any]:
    """Execute ``block`` inside an app context, as a module of the host app would."""
    namespace: dict[str, Any] = {
        **PAGE_GLOBALS,
        "__name__": __name__,  # as in a module of the host app
        "app": app,
        "flashsale": flashsale,
        **names,
    }
    with app.app_context():
        exec(compile(block.code, block.where, "exec"), namespace)
    return namespace


def run_place_order(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=5)
    ns = run(the_block("docs/quickstart.rst", "place_order"), app, ext)
    assert ns["admission"].ok and ns["ticket"].status == "queued"


def run_view_limits(make_app: MakeApp) -> None:
    app, ext = make_app()
    ns = run(the_block("docs/ratelimit.rst", "async def subscribe"), app, ext)
    assert {"/search", "/newsletter"} <= {r.rule for r in app.url_map.iter_rules()}
    assert callable(ns["search"]) and callable(ns["subscribe"])


def run_blueprint_limits(make_app: MakeApp) -> None:
    app, ext = make_app()
    ns = run(
        the_block("docs/ratelimit.rst", "apply_to(shop)"),
        app,
        ext,
        build_csv=lambda: "csv",
        render_report=lambda: "html",
    )
    assert isinstance(ns["export_limit"], Limit)
    client = app.test_client()
    assert client.get("/report?format=csv", headers={"X-User": "a"}).get_data() == b"csv"
    assert client.get("/report", headers={"X-User": "a"}).get_data() == b"html"


def run_proxy_fix(make_app: MakeApp) -> None:
    app, ext = make_app()
    run(the_block("docs/ratelimit.rst", "ProxyFix"), app, ext)
    assert isinstance(app.wsgi_app, ProxyFix)


def run_fail_open(make_app: MakeApp) -> None:
    # Redis is down: the limit raises BackendUnavailable, which the block catches.
    app = Flask("redis-down")
    app.config.update(SECRET_KEY="x", FLASHSALE_REDIS_URL="redis://127.0.0.1:1/0")
    ext = FlashSale(app)
    block = the_block("docs/ratelimit.rst", "except BackendUnavailable")
    search_limit = ext.limit("10/second", key="ip")
    with app.test_request_context("/search"):
        run(block, app, ext, search_limit=search_limit, BackendUnavailable=BackendUnavailable)


def run_cookie_settings(make_app: MakeApp) -> None:
    app, ext = make_app()
    run(the_block("docs/security.rst", "SESSION_COOKIE_SAMESITE"), app, ext)
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def run_dashboard_access(make_app: MakeApp) -> None:
    app, ext = make_app(FLASHSALE_DASHBOARD_PATH="/admin/flashsale")
    app.config["OPERATORS"] = {"olga"}
    run(the_block("docs/dashboard.rst", "def operators_only"), app, ext, session=flask.session)
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = "bob"
    assert client.get("/admin/flashsale").status_code == 403
    with client.session_transaction() as session:
        session["user_id"] = "olga"
    assert client.get("/admin/flashsale").status_code == 200


def run_cancel(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=1)
        ticket_id = ext.place_order("tee", "42").ticket_id
    run(the_block("docs/worker.rst", "flashsale.cancel("), app, ext, ticket_id=ticket_id)
    with app.app_context():
        assert ext.get_ticket(ticket_id).status == "cancelled"  # type: ignore[union-attr]
        assert ext.get_sale("tee").remaining == 1  # type: ignore[union-attr]


def run_batch_hook(make_app: MakeApp) -> None:
    # The host's database: SQLite in memory (the block imports the SQLite insert).
    app, ext = make_app(SQLALCHEMY_DATABASE_URI="sqlite://")
    ns = run(the_block("docs/worker.rst", "order_batch_handler"), app, ext)
    db, shop_order = ns["db"], ns["ShopOrder"]
    confirmed: list[Order] = []

    def collect(sender: Flask, order: Order) -> None:
        confirmed.append(order)

    with app.app_context(), order_confirmed.connected_to(collect, app):
        db.create_all()
        ext.create_sale("tee", stock=5, price="9.90")
        tickets = [ext.place_order("tee", f"buyer{i}").ticket_id for i in range(5)]
        assert ext.run_worker(burst=True) == 5
        count = db.select(db.func.count()).select_from(shop_order)
        stored = db.session.execute(db.select(shop_order.id, shop_order.price)).all()
        assert sorted(stored) == sorted((t, Decimal("9.90")) for t in tickets)
        ns["persist_many"](confirmed)  # the same orders delivered again: nothing written twice
        assert db.session.execute(count).scalar() == 5


def run_payment_timeout(make_app: MakeApp) -> None:
    app, ext = make_app()
    run(the_block("docs/payments.rst", "payment_timeout=900"), app, ext)
    with app.app_context():
        assert ext.get_sale("tee").payment_timeout == 900  # type: ignore[union-attr]


def run_fair_sale(make_app: MakeApp) -> None:
    from datetime import datetime, timezone

    app, ext = make_app()
    block = the_block("docs/fairness.rst", '"sneaker-drop", stock=500')
    run(block, app, ext, datetime=datetime, timezone=timezone)
    with app.app_context():
        sale = ext.get_sale("sneaker-drop")
    assert sale is not None and (sale.fairness, sale.admit_rate) == ("lottery", 50)


def run_join_queue(make_app: MakeApp) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=5, fairness="fifo", admit_rate=50)
    names = run(the_block("docs/fairness.rst", "flashsale.join_queue("), app, ext, user_id="42")
    assert names["status"].status == "ready"
    with app.app_context():
        assert [t.user_id for t in ext.user_tickets("tee", "42")] == ["42"]


def run_lock(make_app: MakeApp) -> None:
    app, ext = make_app()
    run(the_block("docs/consistency.rst", '"import-prices"'), app, ext)


def run_fencing(make_app: MakeApp) -> None:
    # The SQL block makes the table; the host's own computation is a stand-in.
    app, ext = make_app()
    db = sqlite3.connect(":memory:")
    db.execute(the_block("docs/consistency.rst", "CREATE TABLE inventory").code)
    db.execute("INSERT INTO inventory (id, stock) VALUES ('tee', 1)")
    block = the_block("docs/consistency.rst", "compute_new_stock")
    run(block, app, ext, db=db, sku="tee", compute_new_stock=lambda sku: 7)
    stock, fence = db.execute("SELECT stock, fence FROM inventory").fetchone()
    assert stock == 7 and fence >= 1


def reconcile_runner(file: str, needle: str) -> Callable[[MakeApp], None]:
    """Run a ``reconcile_source`` block on an SQLite ``orders`` table that matches Redis."""

    def runner(make_app: MakeApp) -> None:
        app, ext = make_app()
        db = sqlite3.connect(":memory:")
        db.execute("CREATE TABLE orders (id TEXT, user_id TEXT, product_id TEXT, quantity INT)")
        with app.app_context():
            ext.create_sale("tee", stock=5, per_user_limit=2)
            ticket = ext.place_order("tee", "42", quantity=2).ticket_id
        db.execute("INSERT INTO orders VALUES (?, '42', 'tee', 2)", (ticket,))
        run(the_block(file, needle), app, ext, db=db)
        with app.app_context():
            (report,) = ext.reconcile("tee")
        assert report.ok, report.describe()

    return runner


def run_metrics_view(make_app: MakeApp) -> None:
    pytest.importorskip("prometheus_client")
    app, ext = make_app(FLASHSALE_METRICS=True)
    run(the_block("docs/metrics.rst", "metrics_response"), app, ext, require_ops_token=lambda f: f)
    response = app.test_client().get("/internal/metrics")
    assert response.status_code == 200 and b"flashsale" in response.get_data()


# -- checking CLI blocks ---------------------------------------------------------------


def flashsale_lines(block: Block) -> list[list[str]]:
    """The arguments after ``flashsale`` of every ``flask ... flashsale ...`` line."""
    found = []
    for line in block.code.splitlines():
        line = line.removeprefix("$ ").split("  #", 1)[0].split(" # ", 1)[0]
        words = shlex.split(line) if line.startswith("flask ") else []
        if "flashsale" in words:
            found.append(words[words.index("flashsale") + 1 :])
    return found


def parse_cli_line(args: list[str]) -> None:
    """Parse ``args`` as ``flask flashsale`` would (options, types, required arguments)."""
    name, *rest = args
    command = flashsale_cli.commands[name]
    with (
        click.Context(flashsale_cli, info_name="flashsale") as parent,
        command.make_context(name, rest, parent=parent),
    ):
        pass


def check_cli(file: str, needle: str) -> Callable[[MakeApp], None]:
    def runner(make_app: MakeApp) -> None:
        lines = flashsale_lines(the_block(file, needle))
        assert lines, f"no flask flashsale line in the block of {file}"
        for args in lines:
            parse_cli_line(args)

    return runner


def check_readme_chaos_table(make_app: MakeApp) -> None:
    """The README quotes the last recorded chaos run, line for line."""
    recorded = (ROOT / "benchmarks" / "results" / "chaos.txt").read_text().splitlines()
    quoted = the_block("README.md", "scenario     attempts").code.splitlines()
    assert quoted == [line for line in recorded[1 : len(quoted) + 1]]


def check_chaos_commands(make_app: MakeApp) -> None:
    """The chaos suite's commands: the benchmark exists and takes the options shown."""
    bench = ROOT / "benchmarks"
    chaos = (bench / "chaos.py").read_text() + (bench / "__main__.py").read_text()
    code = the_block("docs/resilience.rst", "python -m benchmarks chaos").code
    for option in re.findall(r"\s(--[\w-]+)", code):
        assert f'"{option}"' in chaos, option


def check_readme_commands(make_app: MakeApp) -> None:
    """README's shell blocks: the extras, files, app paths and benchmark names they use."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    optional = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = set(re.findall(r"^(\w+) = \[", optional, re.M))
    benchmarks = (ROOT / "benchmarks" / "__main__.py").read_text()
    listed = benchmarks.split("BENCHMARKS = {")[1].split("}")[0]
    known = {*re.findall(r'"([\w-]+)":', listed), "chart"}
    for block in [*readme_blocks(), the_block("docs/performance.rst", "python -m benchmarks")]:
        if block.lang not in ("sh", "literal"):
            continue
        for extra in re.findall(r"\.\[([\w,]+)\]", block.code):
            assert set(extra.split(",")) <= extras, (block.where, extra)
        for path in re.findall(r"--app (\S+\.py)", block.code):
            assert (ROOT / path).is_file(), (block.where, path)
        for name, rest in re.findall(r"python -m benchmarks (\S+)([^\n#]*)", block.code):
            assert name in known, (block.where, name)
            for option in re.findall(r"(--[\w-]+)", rest):
                assert option in benchmark_options(name), (block.where, name, option)
        for script in re.findall(r"^(\./\S+)", block.code, re.M):
            assert (ROOT / script).is_file(), (block.where, script)


def benchmark_options(name: str) -> set[str]:
    """The ``--options`` that ``python -m benchmarks <name>`` accepts."""
    import argparse
    import importlib

    from benchmarks.__main__ import BENCHMARKS

    if name == "chart":
        return {"--out", "--docs"}
    parser = argparse.ArgumentParser()
    importlib.import_module(BENCHMARKS[name]).add_arguments(parser)
    return {"--quick", "--no-save", "--json", *parser._option_string_actions}


def check_memory_refusal(make_app: MakeApp) -> None:
    """docs/cli.rst quotes the memory:// refusal as the CLI prints it."""
    app = Flask("memory-doc")
    app.config.update(FLASHSALE_REDIS_URL="memory://", FLASHSALE_INLINE_WORKER=False)
    FlashSale(app)
    printed = app.test_cli_runner().invoke(flashsale_cli, ["status"]).output
    quoted = the_block("docs/cli.rst", "Error: FLASHSALE_REDIS_URL is memory://").code
    assert " ".join(quoted.split()) == " ".join(printed.split())


def check_status_sample(make_app: MakeApp) -> None:
    """docs/worker.rst shows the header ``flask flashsale status`` prints."""
    app, _ = make_app()
    printed = app.test_cli_runner().invoke(flashsale_cli, ["status"]).output.splitlines()[0]
    sample = the_block("docs/worker.rst", "flashsale status").code.splitlines()[1]
    assert sample == printed
    check_cli("docs/worker.rst", "flashsale status")(make_app)


def check_one_test_command(make_app: MakeApp) -> None:
    """docs/architecture.rst runs one test by its id: the file and the test exist."""
    block = the_block("docs/architecture.rst", "tests/test_http.py::")
    ids = re.findall(r"(tests/\w+\.py)::(\w+)", block.code)
    assert ids
    for file, name in ids:
        assert f"\ndef {name}(" in (ROOT / file).read_text(), f"{file}::{name}"


def check_problem_sample(make_app: MakeApp) -> None:
    """docs/problems.rst shows the document a sold-out order gets."""
    sample = json.loads(the_block("docs/problems.rst", '"code": "sold_out"').code)
    assert sample == SoldOut(remaining=0).problem()


# -- the table of every block ------------------------------------------------------------

#: (file, a snippet that finds the block, kind, what is done or why not)
BLOCKS: list[tuple[str, str, str, Callable[[MakeApp], None] | str]] = [
    ("README.md", "pip install -e '.[shop]' && flask", "other", check_readme_commands),
    ("README.md", "./scripts/test.sh", "other", "the test suite itself; path checked above"),
    ("README.md", '"""Flask-FlashSale quick start', "other", "tests/test_quickstart.py"),
    ("README.md", "pip install -e '.[memory]' Flask-SQLAlchemy", "other", "test_quickstart"),
    ("README.md", "curl -c cookies.txt", "other", "tests/test_quickstart.py runs them"),
    ("README.md", "export FLASHSALE_REDIS_URL", "cli", check_cli("README.md", "export FLASHSALE")),
    ("README.md", "python -m benchmarks http", "other", "benchmark names checked above"),
    ("README.md", "scenario     attempts", "other", check_readme_chaos_table),
    ("docs/cli.rst", "flashsale restock tee -5", "cli", check_cli("docs/cli.rst", "restock tee")),
    ("docs/cli.rst", "Error: FLASHSALE_REDIS_URL is", "other", check_memory_refusal),
    ("docs/consistency.rst", '"import-prices"', "run", run_lock),
    ("docs/consistency.rst", "CREATE TABLE inventory", "run", "executed by run_fencing"),
    ("docs/consistency.rst", "compute_new_stock", "run", run_fencing),
    ("docs/consistency.rst", "version_id_col", "other", "an excerpt of the shop"),
    (
        "docs/consistency.rst",
        "def confirmed_units",
        "run",
        reconcile_runner("docs/consistency.rst", "def confirmed_units"),
    ),
    (
        "docs/consistency.rst",
        "def host_orders",
        "run",
        reconcile_runner("docs/consistency.rst", "def host_orders"),
    ),
    (
        "docs/deployment.rst",
        "def host_orders",
        "run",
        reconcile_runner("docs/deployment.rst", "def host_orders"),
    ),
    (
        "docs/deployment.rst",
        "flask flashsale reconcile --fix",
        "cli",
        check_cli("docs/deployment.rst", "reconcile --fix"),
    ),
    ("docs/metrics.rst", "metrics_response", "run", run_metrics_view),
    ("docs/dashboard.rst", "def operators_only", "run", run_dashboard_access),
    ("docs/shop.rst", "pip install -e '.[shop]'", "other", "README's first command"),
    ("docs/shop.rst", "DATABASE_URL=postgresql", "other", "needs Redis and PostgreSQL"),
    ("docs/metrics.rst", "keda.sh", "other", "a Kubernetes manifest for KEDA"),
    ("docs/performance.rst", "python -m benchmarks", "other", "names checked above"),
    ("docs/performance.rst", "locust -f examples/locustfile.py", "other", "test_locustfile"),
    ("docs/problems.rst", '"code": "sold_out"', "other", check_problem_sample),
    ("docs/quickstart.rst", "pip install 'Flask-FlashSale[memory]'", "other", "test_quickstart"),
    ("docs/quickstart.rst", "curl -c cookies.txt", "other", "tests/test_quickstart.py"),
    (
        "docs/quickstart.rst",
        "export FLASHSALE_REDIS_URL",
        "cli",
        check_cli("docs/quickstart.rst", "export FLASHSALE"),
    ),
    ("docs/quickstart.rst", "place_order", "run", run_place_order),
    ("docs/ratelimit.rst", "async def subscribe", "run", run_view_limits),
    ("docs/ratelimit.rst", "apply_to(shop)", "run", run_blueprint_limits),
    ("docs/ratelimit.rst", "HTTP/1.1 429", "other", "an HTTP exchange (test_ratelimit_views)"),
    ("docs/ratelimit.rst", "ProxyFix", "run", run_proxy_fix),
    ("docs/ratelimit.rst", "except BackendUnavailable", "run", run_fail_open),
    ("docs/ratelimit.rst", "limiter.exempt", "other", "Flask-Limiter's API, not ours"),
    ("docs/security.rst", "SESSION_COOKIE_SAMESITE", "run", run_cookie_settings),
    (
        "docs/worker.rst",
        "flashsale worker --concurrency 4",
        "cli",
        check_cli("docs/worker.rst", "--concurrency 4"),
    ),
    ("docs/worker.rst", "orders/s, confirmed", "other", "a sample of the worker's log"),
    ("docs/worker.rst", "def persist(order)", "compile", "needs the host's MyOrder and db"),
    ("docs/worker.rst", "flashsale.cancel(", "run", run_cancel),
    ("docs/worker.rst", "order_batch_handler", "run", run_batch_hook),
    (
        "docs/worker.rst",
        "flashsale dead-letters tee --limit 100",
        "cli",
        check_cli("docs/worker.rst", "dead-letters tee --limit"),
    ),
    ("docs/worker.rst", "flashsale status", "other", check_status_sample),
    (
        "docs/worker.rst",
        "--autoscale 2,8 --name web-1",
        "cli",
        check_cli("docs/worker.rst", "--autoscale 2,8 --name web-1"),
    ),
    ("docs/worker.rst", "scaling up 2 -> 3", "other", "a sample of the supervisor's log"),
    ("docs/worker.rst", "killed by SIGKILL", "other", "a sample of the supervisor's log"),
    ("docs/worker.rst", "1 supervisor(s)", "other", "a sample of status with a supervisor"),
    ("docs/worker.rst", "[Unit]", "other", "a systemd unit (its ExecStart is in the cli block)"),
    ("docs/worker.rst", "kind: ScaledObject", "other", "a Kubernetes manifest for KEDA"),
    ("docs/resilience.rst", "python -m benchmarks chaos", "other", check_chaos_commands),
    ("docs/http.rst", '"status": "awaiting_payment"', "other", "a sample ticket answer"),
    ("docs/payments.rst", "payment_timeout=900", "run", run_payment_timeout),
    ("docs/payments.rst", "mark_paid() before pay_by", "other", "the state diagram"),
    ("docs/payments.rst", "def payment_webhook", "compile", "needs the host's db and provider"),
    ("docs/payments.rst", "def release(ticket)", "compile", "needs the host's MyOrder and db"),
    ("docs/payments.rst", "TIMEOUT  AWAITING", "other", "a sample of status"),
    ("docs/fairness.rst", '"sneaker-drop", stock=500', "run", run_fair_sale),
    ("docs/fairness.rst", "POST <prefix>/tee/queue", "other", "a sequence diagram"),
    ("docs/fairness.rst", "flashsale.join_queue(", "run", run_join_queue),
    ("docs/scaling.rst", "min-replicas-to-write 1", "other", "redis.conf settings of a master"),
    ("docs/architecture.rst", "EVALSHA admission.lua", "other", "a diagram of an order's path"),
    ("docs/architecture.rst", "tests/test_http.py::", "other", check_one_test_command),
]


def block_ids() -> list[str]:
    return [f"{file}:{needle[:30]}" for file, needle, _, _ in BLOCKS]


def test_every_block_is_in_the_table_exactly_once() -> None:
    for block in all_blocks():
        entries = [e for e in BLOCKS if e[0] == block.file and e[1] in block.code]
        assert len(entries) == 1, f"{block.where} ({block.lang}) is listed {len(entries)} times"
    for file, needle, _, _ in BLOCKS:
        the_block(file, needle)  # exactly one block per entry


@pytest.mark.parametrize("entry", BLOCKS, ids=block_ids())
def test_block(entry: tuple[str, str, str, Any], make_app: MakeApp) -> None:
    file, needle, kind, check = entry
    block = the_block(file, needle)
    if block.lang == "python" or kind == "compile":
        compile(block.code, block.where, "exec")  # every Python block is valid Python
    if callable(check):
        check(make_app)


# -- configuration examples ------------------------------------------------------------------


def test_the_configuration_page_documents_every_key_and_no_other() -> None:
    text = (ROOT / "docs" / "configuration.rst").read_text()
    assert set(re.findall(r"^\.\. data:: (FLASHSALE_\w+)", text, re.M)) == set(DEFAULTS)


def readme_config_keys() -> list[str]:
    """The keys of README's configuration table, ``..._SUFFIX`` spelt out."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Configuration") : text.index("## Performance")]
    keys = []
    for row in re.findall(r"^\| (`FLASHSALE_[^|]*)\|", table, re.M):
        names = re.findall(r"`((?:FLASHSALE|\.\.\.)_\w+)`", row)
        first = names[0]
        keys.append(first)
        for short in names[1:]:
            suffix = short.removeprefix("...")
            parts = first.split("_")
            candidates = ["_".join(parts[:n]) + suffix for n in range(len(parts), 0, -1)]
            keys.append(next((c for c in candidates if c in DEFAULTS), short))
    return keys


def test_the_readme_configuration_table_names_real_keys() -> None:
    keys = readme_config_keys()
    assert len(keys) > 20
    assert set(keys) <= set(DEFAULTS), set(keys) - set(DEFAULTS)


def test_every_rate_in_the_docs_parses() -> None:
    rates = set()
    for page in ("ratelimit.rst", "configuration.rst"):
        text = (ROOT / "docs" / page).read_text()
        rates |= set(re.findall(r'``"(\d+[^"`]*)"``', text))
    rates |= set(re.findall(r'`"(\d+/[^"`]*)"`', (ROOT / "README.md").read_text()))
    assert {"10/second", "5/second;burst=10", "100/5m", "3 per hour"} <= rates
    for rate in rates:
        parse_rate(rate)


def test_every_option_in_the_cli_synopses_exists() -> None:
    text = (ROOT / "docs" / "cli.rst").read_text()
    synopses = re.findall(r"^``flask flashsale ([\w-]+)([^`]*)``$", text, re.M)
    assert {name for name, _ in synopses} == set(flashsale_cli.commands)
    for name, rest in synopses:
        command = flashsale_cli.commands[name]
        known = {opt for p in command.params for opt in getattr(p, "opts", [])}
        for option in re.findall(r"--[\w-]+", rest):
            assert option in known, f"flask flashsale {name}: no option {option}"


def test_the_cli_page_documents_every_exit_code() -> None:
    text = (ROOT / "docs" / "cli.rst").read_text()
    table = text[text.index("Errors and exit codes") :]
    assert set(int(c) for c in re.findall(r"^(\d)  ", table, re.M)) == set(EXIT_CODES)
