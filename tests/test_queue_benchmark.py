"""Smoke test of ``python -m benchmarks queue``: it runs end to end and its checks hold.

Not a performance test: nothing here looks at a timing. The smallest sale
(300 buyers, one web process) with the real harness: throwaway Redis, a
spawned buyer process, the JSON result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import run_benchmark
from .redis_server import require_redis_binary


@pytest.mark.slow
@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_queue_benchmark_sells_the_stock_exactly_and_in_place_order(tmp_path: Path) -> None:
    _, result = run_benchmark(
        "queue", "--rounds", "1", "--seconds", "0.1", "--buyers", "300", "--stock", "60",
        "--admit-rate", "100", "--processes", "1", json_path=tmp_path / "queue.json",
        timeout=120,
    )
    assert result["sale"]["ok"], result["sale"]
    facts = result["sale"]["facts"]
    assert facts["admitted_http"] == facts["stream_entries"] == 60
    assert facts["ready_time_inversions"] == 0
    assert result["redis_per_request"]["join"] == 1.0
    assert result["redis_per_request"]["poll"] < 0.05
