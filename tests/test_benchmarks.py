"""Smoke test of the benchmark harness (``python -m benchmarks``): it runs, it counts.

Not a performance test: nothing here looks at a timing. It runs the smallest
``strategies`` benchmark end to end (throwaway Redis, crowd processes,
interleaving, JSON) so that a change to the public API cannot silently break
the benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT
from .redis_server import require_redis_binary


@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_strategies_benchmark_accounts_for_every_attempt(tmp_path: Path) -> None:
    out = tmp_path / "strategies.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "strategies",
            "--rounds",
            "1",
            "--duration",
            "0.5",
            "--processes",
            "1",
            "--threads",
            "2",
            "--strategies",
            "lua",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for scenario in ("hot", "spread"):
        run = result["rounds"][0][scenario]["lua"]
        assert run["attempts"] > 0
        # Every attempt was admitted (huge stock, a new buyer each time): none lost, none failed.
        assert run["statuses"] == {"queued": run["attempts"]}
    assert "lua" in proc.stdout


@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_orderpath_benchmark_counts_the_scripts_commands(tmp_path: Path) -> None:
    out = tmp_path / "orderpath.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    args = ["--requests", "50", "--rounds", "1", "--admissions", "100", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "orderpath", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    cases = {"bare", "floor", "order", "order_python", "sold_out"}
    assert set(result["cpu_us_per_request"]) == cases
    redis = result["redis"]
    # One EVALSHA per admission; inside it, one XADD (INFO commandstats counts both).
    assert redis["evalsha_calls"] == 100
    assert redis["inner_commands_per_admission"]["xadd"] == 1


@pytest.mark.skipif(not require_redis_binary() or shutil.which("wrk") is None,
                    reason="redis-server and wrk are needed")
def test_http_benchmark_answers_every_case_as_expected_under_gevent(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "http", "--quick", "--worker-classes", "gevent",
         "--cases", "bare,floor,order,sold_out", "--connections", "4", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    summary = result["summary"]["gevent"]
    for case in ("bare", "floor", "order", "sold_out"):
        assert summary[case]["requests"] > 0
        assert summary[case]["errors"] == 0, (case, result["rounds"][0]["gevent"][case])
    assert summary["floor"]["evalsha_per_req"] > 0.99  # one raw round trip each
    assert summary["sold_out"]["evalsha_per_req"] < 0.1  # mostly answered from the flag
    assert "order/floor" in proc.stdout
