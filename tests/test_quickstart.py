"""The quick start works as written: README.md and docs/quickstart.rst, run for real.

The README shows ``examples/quickstart.py`` verbatim and the docs include the
file, so the app under test is the one they show. The ``curl`` lines are taken
from the README and run with ``curl`` against ``flask run`` in a subprocess:
once on the embedded ``memory://`` store, once on the real test Redis with a
separate ``flask flashsale worker`` process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT
from .redis_server import free_port

README = (ROOT / "README.md").read_text()
QUICKSTART = ROOT / "examples" / "quickstart.py"
APP = "examples/quickstart.py"


def readme_section() -> str:
    return README[README.index("## Quick start") : README.index("## HTTP API")]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def curl_lines() -> list[str]:
    return [
        line
        for block in blocks(readme_section(), "sh")
        for line in block.splitlines()
        if line.startswith("curl ")
    ]


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in the repository root, killed by pid at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"the app did not listen in time: {log.read_text()}")


def run_curl(line: str, port: int, cwd: Path) -> Any:
    """One README curl line, against the test server; its JSON answer."""
    args = shlex.split(line.replace("localhost:5000", f"127.0.0.1:{port}"))
    done = subprocess.run(
        [*args, "-s", "--max-time", "10"], cwd=cwd, capture_output=True, timeout=20, check=True
    )
    return json.loads(done.stdout)


def follow_the_readme(port: int, cwd: Path) -> tuple[Any, Any, Any]:
    """Run the README's curl lines; poll the last two until the order is confirmed and stored."""
    login, order, tickets, mine = curl_lines()
    assert run_curl(login, port, cwd) == {"signed_in": "alice"}
    placed = run_curl(order, port, cwd)
    deadline = time.monotonic() + 20
    while True:
        listed = run_curl(tickets, port, cwd)
        rows = run_curl(mine, port, cwd)
        confirmed = [t for t in listed.get("tickets", []) if t["status"] == "confirmed"]
        if (rows["orders"] and confirmed) or time.monotonic() > deadline:
            return placed, listed, rows
        time.sleep(0.1)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is required to run the README's commands")
        pytest.skip("curl is not installed")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
    }


def test_the_readme_shows_examples_quickstart_py_verbatim() -> None:
    (code,) = blocks(readme_section(), "python")
    assert code == QUICKSTART.read_text()


def test_the_docs_include_the_same_file_and_the_same_commands() -> None:
    docs = (ROOT / "docs" / "quickstart.rst").read_text()
    assert ".. literalinclude:: ../examples/quickstart.py" in docs
    assert curl_lines() and all(line in docs for line in curl_lines())


def test_readme_commands_reach_a_row_in_the_database_on_the_embedded_store(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "web.log"
    run = [sys.executable, "-m", "flask", "--app", APP, "run", "--port", str(port)]
    assert f"flask --app {APP} run" in readme_section()
    embedded = {k: v for k, v in env.items() if k != "FLASHSALE_REDIS_URL"}
    with process(run, embedded, log) as web:
        wait_for_port(port, web, log)
        placed, listed, rows = follow_the_readme(port, tmp_path)
    assert placed["status"] == "queued"
    (ticket,) = listed["tickets"]
    assert (ticket["ticket_id"], ticket["status"]) == (placed["ticket_id"], "confirmed")
    assert rows == {"orders": [placed["ticket_id"]]}


def test_readme_commands_work_with_redis_and_a_worker_process(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    (export,) = [
        line
        for block in blocks(readme_section(), "sh")
        for line in block.splitlines()
        if line.startswith("export ")
    ]
    settings = dict(word.split("=", 1) for word in shlex.split(export)[1:])
    settings["FLASHSALE_REDIS_URL"] = redis_url  # the test's own throwaway server
    env = {**env, **settings}
    port = free_port()
    web_cmd = [sys.executable, "-m", "flask", "--app", APP, "run", "--port", str(port)]
    worker_cmd = [sys.executable, "-m", "flask", "--app", APP, "flashsale", "worker"]
    assert f"flask --app {APP} flashsale worker" in readme_section()
    # In the README's order: the app first (its start creates the tables), then
    # the worker in a second terminal (two processes creating the same SQLite
    # tables at once would race).
    with process(web_cmd, env, tmp_path / "web.log") as web:
        wait_for_port(port, web, tmp_path / "web.log")
        with process(worker_cmd, env, tmp_path / "worker.log") as worker:
            placed, listed, rows = follow_the_readme(port, tmp_path)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0
    assert placed["status"] == "queued"
    assert [t["status"] for t in listed["tickets"]] == ["confirmed"]
    assert rows == {"orders": [placed["ticket_id"]]}
