"""Smoke test of the benchmark harness (``python -m benchmarks``): it runs, it counts.

Not a performance test: nothing here looks at a timing. It runs the smallest
``strategies`` benchmark end to end (throwaway Redis, crowd processes,
interleaving, JSON) so that a change to the public API cannot silently break
the benchmarks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import run_benchmark
from .redis_server import require_redis_binary


@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_strategies_benchmark_accounts_for_every_attempt(tmp_path: Path) -> None:
    proc, result = run_benchmark(
        "strategies", "--rounds", "1", "--duration", "0.5", "--processes", "1",
        "--threads", "2", "--strategies", "lua", json_path=tmp_path / "strategies.json",
    )
    for scenario in ("hot", "spread"):
        run = result["rounds"][0][scenario]["lua"]
        assert run["attempts"] > 0
        # Every attempt was admitted (huge stock, a new buyer each time): none lost, none failed.
        assert run["statuses"] == {"queued": run["attempts"]}
    assert "lua" in proc.stdout


@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_orderpath_benchmark_counts_the_scripts_commands(tmp_path: Path) -> None:
    _, result = run_benchmark(
        "orderpath", "--requests", "50", "--rounds", "1", "--admissions", "100",
        json_path=tmp_path / "orderpath.json",
    )
    cases = {"bare", "floor", "order", "order_python", "sold_out"}
    assert set(result["cpu_us_per_request"]) == cases
    redis = result["redis"]
    # One EVALSHA per admission; inside it, one XADD (INFO commandstats counts both).
    assert redis["evalsha_calls"] == 100
    assert redis["inner_commands_per_admission"]["xadd"] == 1


@pytest.mark.skipif(not require_redis_binary() or shutil.which("wrk") is None,
                    reason="redis-server and wrk are needed")
def test_http_benchmark_answers_every_case_as_expected_under_gevent(tmp_path: Path) -> None:
    proc, result = run_benchmark(
        "http", "--quick", "--worker-classes", "gevent", "--cases", "bare,floor,order,sold_out",
        "--connections", "4", json_path=tmp_path / "http.json", timeout=120,
    )
    summary = result["summary"]["gevent"]
    for case in ("bare", "floor", "order", "sold_out"):
        assert summary[case]["requests"] > 0
        assert summary[case]["errors"] == 0, (case, result["rounds"][0]["gevent"][case])
    assert summary["floor"]["evalsha_per_req"] > 0.99  # one raw round trip each
    assert summary["sold_out"]["evalsha_per_req"] < 0.1  # mostly answered from the flag
    assert "order/floor" in proc.stdout
