"""Metrics across gunicorn worker processes: prometheus-client's multiprocess mode.

A real gunicorn with 2 sync workers and ``PROMETHEUS_MULTIPROC_DIR`` serves
``tests/metrics_host.py``; orders land on both workers, and a scrape of either
answers the sum over both.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .helpers import MakeApp

ROOT = Path(__file__).resolve().parent.parent
ADMITTED = re.compile(r'^flashsale_admissions_total\{result="queued",sale="tee"\} (\S+)$', re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gunicorn(tmp_path: Path, redis_url: str) -> Iterator[str]:
    """Two gunicorn workers in multiprocess mode; yields the base URL."""
    if shutil.which("gunicorn") is None and os.environ.get("CI") != "true":
        pytest.skip("gunicorn is not installed")
    prom = tmp_path / "prom"
    prom.mkdir()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from flask_flashsale.metrics import child_exit  # noqa: F401\n")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "TEST_REDIS_URL": redis_url,
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
    }
    args = [sys.executable, "-m", "gunicorn", "-c", str(conf), "-w", "2",
            "-b", f"127.0.0.1:{port}", "tests.metrics_host:create_app()"]
    log = (tmp_path / "gunicorn.log").open("wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail((tmp_path / "gunicorn.log").read_text())
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def order(base: str, user: str) -> str:
    """One order; the pid of the worker that answered."""
    req = urllib.request.Request(
        f"{base}/api/flash-sales/tee/order", method="POST", headers={"X-User": user}
    )
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert answer.status == 202
        return str(answer.headers["X-Pid"])


def scrape(base: str) -> tuple[float, str]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
        text = answer.read().decode()
        found = ADMITTED.search(text)
        return (float(found.group(1)) if found else 0.0), str(answer.headers["X-Pid"])


@pytest.mark.slow
def test_a_scrape_of_any_worker_counts_the_admissions_of_every_worker(
    gunicorn: str, make_app: MakeApp
) -> None:
    app, ext = make_app()
    with app.app_context():
        ext.create_sale("tee", stock=10_000)
    pids: list[str] = []
    with ThreadPoolExecutor(8) as pool:  # concurrent requests: both sync workers get some
        while len(pids) < 40 or len(set(pids)) < 2:
            assert len(pids) < 400, "one worker took every order"
            start = len(pids)
            pids += pool.map(lambda n: order(gunicorn, f"buyer{n}"), range(start, start + 20))
    shares = Counter(pids)
    # Each worker alone counts its own share; a scrape answered by either one
    # (whichever accepts the connection) says the sum.
    scrapes = [scrape(gunicorn) for _ in range(5)]
    assert all(share < len(pids) for share in shares.values())
    assert {total for total, _ in scrapes} == {float(len(pids))}
