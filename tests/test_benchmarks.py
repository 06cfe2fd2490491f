"""Smoke test of the benchmark harness (``python -m benchmarks``): it runs, it counts.

Not a performance test: nothing here looks at a timing. It runs the smallest
``strategies`` benchmark end to end (throwaway Redis, crowd processes,
interleaving, JSON) so that a change to the public API cannot silently break
the benchmarks.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib

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
    cases = {"bare", "blueprint_bare", "floor", "raw_admission", "order", "order_python",
             "sold_out"}
    assert set(result["cpu_us_per_request"]) == cases
    redis = result["redis"]
    # One EVALSHA per admission; inside it, one XADD (INFO commandstats counts both).
    assert redis["evalsha_calls"] == 100
    assert redis["inner_commands_per_admission"]["xadd"] == 1


@pytest.mark.skipif(not require_redis_binary(), reason="redis-server is not installed")
def test_admission_client_benchmark_admits_through_every_client_path(tmp_path: Path) -> None:
    # Every reply must be ``queued`` (the benchmark stops otherwise), and the
    # template path must send the very bytes of the fast path's call.
    _, result = run_benchmark(
        "admission-client", "--rounds", "1", "--calls", "300",
        json_path=tmp_path / "admission-client.json",
    )
    assert set(result["summary"]) == {"redis-py", "fast", "template", "raw"}
    assert all(len(samples) == 1 for samples in result["samples"].values())


@pytest.mark.skipif(not require_redis_binary() or shutil.which("wrk") is None,
                    reason="redis-server and wrk are needed")
def test_http_benchmark_answers_every_case_as_expected_under_gevent(tmp_path: Path) -> None:
    # Pinned to every CPU this process may use: the pinning code runs, the
    # scheduling is what it would be unpinned.
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    proc, result = run_benchmark(
        "http", "--quick", "--worker-classes", "gevent", "--cases",
        "bare,blueprint_bare,floor,raw_admission,order,sold_out", "--connections", "4",
        "--redis-cpus", cpus, "--web-cpus", cpus, "--wrk-cpus", cpus,
        json_path=tmp_path / "http.json", timeout=120,
    )
    assert sorted(result["settings"]["cpus"]) == ["redis", "web", "wrk"]
    summary = result["summary"]["gevent"]
    for case in ("bare", "blueprint_bare", "floor", "raw_admission", "order", "sold_out"):
        assert summary[case]["requests"] > 0
        assert summary[case]["errors"] == 0, (case, result["rounds"][0]["gevent"][case])
    assert summary["floor"]["evalsha_per_req"] > 0.99  # one raw round trip each
    assert summary["raw_admission"]["evalsha_per_req"] > 0.99
    assert summary["sold_out"]["evalsha_per_req"] < 0.1  # mostly answered from the flag
    assert "order/floor" in proc.stdout and "raw_admission/floor" in proc.stdout


def test_the_raw_admission_case_runs_the_order_paths_admission(redis_url: str) -> None:
    # The http benchmark's ``raw_admission`` bounds ``order`` only if it sends
    # Redis the very admission an order sends: same script, keys and arguments.
    from benchmarks.app import setup_app

    app = setup_app(redis_url)
    ext = app.extensions["flashsale"].ext
    with app.app_context():
        ext.create_sale("hot", stock=10, price="9.99", per_user_limit=1)
        ordered = ext.place_order("hot", "order-buyer")
    client = app.test_client()
    answer = client.post("/raw-admission", headers={"X-User": "raw-buyer"})
    assert answer.status_code == 200 and answer.json == {"ok": "queued", "user": "raw-buyer"}
    # The same buyer again is refused by the per-user limit, as an order would be.
    again = client.post("/raw-admission", headers={"X-User": "raw-buyer"})
    assert (again.status_code, again.json["ok"]) == (409, "limit_reached")
    with app.app_context():
        assert ext.get_sale("hot").remaining == 8
        [raw] = ext.user_tickets("hot", "raw-buyer")
        assert ordered.ticket_id is not None
        mine = ext.get_ticket(ordered.ticket_id)
        assert mine is not None and ext.get_ticket(raw.id) == raw
        assert (raw.status, raw.quantity, raw.sale_id) == (mine.status, mine.quantity, "hot")
        assert raw.id.startswith("hot~") and len(raw.id) == len(mine.id)
    for round_trip in app.extensions["bench_round_trips"]:
        round_trip.close()
    entries = redis_client_entries(redis_url)
    assert [sorted(fields) for fields in entries] == [sorted(entries[0])] * 2


def redis_client_entries(redis_url: str) -> list[dict[str, str]]:
    """The fields of the queued orders of sale ``hot``, oldest first."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [fields for _, fields in client.xrange("flashsale:{hot}:orders")]
    finally:
        client.close()


#: ``redis-ceiling --parts``: the commands each variant runs fewer of than the whole script.
PARTS_LEAVE_OUT = {
    "without the ticket (HSET + EXPIRE)": {"hset": 1, "expire": 1},
    "without the stream entry (XADD)": {"xadd": 1},
    "without the buyer's ticket list (HGET + HSET)": {"hget": 1, "hset": 1},
    "without the units per buyer (HGET + HINCRBY)": {"hget": 1, "hincrby": 1},
    "without Redis TIME": {"time": 1},
}


def test_each_script_part_variant_leaves_out_its_commands_and_still_admits(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    from benchmarks.app import setup_app
    from benchmarks.redis_ceiling import RETURN_AT_ONCE, TOKEN, USER, capture_call, script_parts

    app = setup_app(redis_url)
    with app.app_context():
        app.extensions["flashsale"].ext.create_sale("hot", stock=100, per_user_limit=1)
    _, keys, args = capture_call(redis_url, "hot")
    variants = script_parts(app.extensions["flashsale"].strategy._script.script)
    assert set(variants) == {"the whole script", RETURN_AT_ONCE, *PARTS_LEAVE_OUT}
    ran: dict[str, Counter[str]] = {}
    for i, (name, source) in enumerate(variants.items()):
        values = [v.replace(USER, f"buyer-{i}").replace(TOKEN, f"token-{i:016d}")
                  for v in (*keys, *args)]
        before = commands_run(redis_client)
        assert redis_client.eval(source, len(keys), *values)[0] == "queued", name
        ran[name] = commands_run(redis_client) - before
    whole = ran.pop("the whole script")
    assert ran.pop(RETURN_AT_ONCE) == Counter()
    for name, counts in ran.items():
        assert whole - counts == Counter(PARTS_LEAVE_OUT[name]), name


def commands_run(client: redis_lib.Redis) -> Counter[str]:
    """Calls per command so far (``INFO commandstats``), scripts' commands included."""
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
                    if k not in ("cmdstat_info", "cmdstat_eval")})


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark is needed")
def test_redis_ceiling_parts_runs_every_variant_and_prices_each_part(tmp_path: Path) -> None:
    from benchmarks.redis_ceiling import PARTS, RETURN_AT_ONCE

    proc, result = run_benchmark(
        "redis-ceiling", "--parts", "--rounds", "1", "--requests", "3000",
        json_path=tmp_path / "redis-ceiling-parts.json",
    )
    assert set(result["summary"]) == {"the whole script", RETURN_AT_ONCE, *PARTS}
    assert all(v["rps"] > 0 for v in result["summary"].values())
    assert "the part costs us" in proc.stdout and "without the stream entry (XADD)" in proc.stdout


def test_a_script_part_that_is_no_longer_in_the_script_is_an_error() -> None:
    from benchmarks.redis_ceiling import script_parts

    with pytest.raises(ValueError, match="is not in the admission script"):
        script_parts("return 1")


def test_cpu_lists_for_pinning_read_like_taskset() -> None:
    from benchmarks.common import parse_cpus

    assert parse_cpus("") is None
    assert parse_cpus("1") == {1}
    assert parse_cpus("0,2-3") == {0, 2, 3}
