"""The fast admission path (``FLASHSALE_FAST_ADMISSION``): the same answers as
redis-py's ``Script``, one round trip, the pool's sockets, and what happens
when Redis restarts, flushes its scripts or goes away."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import FlashSale, admission
from flask_flashsale.breaker import CircuitOpen
from flask_flashsale.fastcall import FastScript
from flask_flashsale.strategies import TEMPLATES

from .cluster import LocalSentinel
from .helpers import CommandCounter, MakeApp, build_app, make_tls_cert, redis_now, wait_for
from .redis_server import RedisServer, free_port, require_redis_binary

Reply = list[Any]


def admission_script(app: Flask) -> Any:
    return FlashSale.state(app).strategy._script  # type: ignore[attr-defined]


def record_replies(app: Flask) -> list[Reply]:
    """Record every raw reply of the app's admission script from now on.

    A fast script is recorded where each of its calls ends (``run``), so the
    orders still take the path they take unrecorded (the sale's template).
    """
    state = FlashSale.state(app)
    script = state.strategy._script  # type: ignore[attr-defined]
    replies: list[Reply] = []
    if isinstance(script, FastScript):
        run = script.run

        def recording_run(command: bytes) -> Any:
            reply = run(command)
            replies.append(reply)
            return reply

        script.run = recording_run  # type: ignore[method-assign]
        return replies

    def recording(keys: list[Any], args: list[Any]) -> Any:
        reply = script(keys=keys, args=args)
        replies.append(reply)
        return reply

    state.strategy._script = recording  # type: ignore[attr-defined]
    return replies


def own_server(**kwargs: Any) -> Iterator[RedisServer]:
    """A redis-server of the test's own (a generator: stopped when it is closed)."""
    if not require_redis_binary():
        pytest.skip("redis-server is not installed")
    server = RedisServer(**kwargs).start()
    try:
        yield server
    finally:
        server.cleanup()


# -- which path runs ---------------------------------------------------------------------


def test_one_redis_server_admits_through_the_fast_path(make_app: MakeApp) -> None:
    app, _ = make_app()
    assert isinstance(admission_script(app), FastScript)


def test_a_fast_script_given_a_pipeline_queues_its_call_there(make_app: MakeApp) -> None:
    """Like redis-py's ``Script``: ``client=`` runs it on that client or pipeline."""
    app, _ = make_app()
    client = FlashSale.state(app).client
    fast = FastScript(client.register_script("return ARGV[1]"), client)
    pipe = client.pipeline()
    assert fast(keys=[], args=["queued"], client=pipe) is pipe
    assert pipe.execute() == ["queued"]
    assert fast(keys=[], args=["direct"]) == "direct"


def test_the_fast_path_can_be_turned_off(make_app: MakeApp) -> None:
    app, _ = make_app(FLASHSALE_FAST_ADMISSION=False)
    assert admission_script(app) is FlashSale.state(app).scripts["admission"]


def test_the_embedded_store_keeps_redis_py_scripts() -> None:
    app, flashsale = build_app("memory://")
    assert admission_script(app) is FlashSale.state(app).scripts["admission"]
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        assert flashsale.place_order("tee", "alice").status == "queued"


def test_a_cluster_keeps_redis_py_scripts(cluster_url: str) -> None:
    """A cluster client routes each script to its slot's master itself."""
    app, flashsale = build_app(cluster_url)
    assert admission_script(app) is FlashSale.state(app).scripts["admission"]
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        assert flashsale.place_order("tee", "alice").status == "queued"


def test_a_sentinel_group_keeps_redis_py_scripts(redis_sentinel: LocalSentinel) -> None:
    """A Sentinel pool follows the master across failovers at each checkout."""
    redis_sentinel.node_on(redis_sentinel.current_master()).client().flushall()
    app, flashsale = build_app(redis_sentinel.url)
    assert admission_script(app) is FlashSale.state(app).scripts["admission"]
    with app.app_context():
        flashsale.create_sale("tee", stock=1)
        assert flashsale.place_order("tee", "alice").status == "queued"


# -- same answers, one round trip ------------------------------------------------------------


def play_every_outcome(app: Flask, flashsale: FlashSale, now: float) -> list[str]:
    """Orders that get every answer admission has; returns their statuses."""
    with app.app_context():
        flashsale.create_sale("tee", stock=2)
        flashsale.create_sale("later", stock=5, starts_at=now + 60)
        flashsale.create_sale("over", stock=5, starts_at=now - 60, ends_at=now - 1)
        flashsale.create_sale("fifo", stock=5, fairness="fifo", admit_rate=100)
        flashsale.create_sale("big", stock=100, per_user_limit=100)
        orders: list[tuple[str, str, int, str, str | None]] = [
            ("ghost", "ann", 1, "k1", None),  # not_found
            ("later", "ann", 1, "k2", None),  # not_started
            ("over", "ann", 1, "k3", None),  # ended
            ("tee", "bob", 1, "k4", None),  # queued
            ("tee", "bob", 1, "k4", None),  # duplicate
            ("tee", "bob", 2, "k4", None),  # idempotency_mismatch
            ("tee", "bob", 1, "k5", None),  # limit_reached
            ("tee", "cat", 1, "k6", None),  # queued, the last one
            ("tee", "dan", 1, "k7", None),  # sold_out
            ("fifo", "eve", 1, "k8", None),  # pass_required
            ("fifo", "eve", 1, "k9", "not-a-pass"),  # pass_invalid
        ]
        orders += [("big", "fay", 1, f"r{i}", None) for i in range(4)]  # then rate_limited
        return [
            flashsale.place_order(sale, user, quantity, key, queue_pass=pass_).status
            for sale, user, quantity, key, pass_ in orders
        ]


def test_the_fast_path_answers_what_redis_py_answers_for_every_outcome(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    config = {"FLASHSALE_ORDER_RATE_PER_USER": "2/minute"}
    fast_app, fast = build_app(redis_url, **config)
    slow_app, slow = build_app(
        redis_url, FLASHSALE_FAST_ADMISSION=False, FLASHSALE_KEY_PREFIX="other", **config
    )
    assert isinstance(admission_script(fast_app), FastScript)
    assert not isinstance(admission_script(slow_app), FastScript)
    fast_replies, slow_replies = record_replies(fast_app), record_replies(slow_app)
    now = redis_now(redis_client)
    statuses = play_every_outcome(fast_app, fast, now)
    assert play_every_outcome(slow_app, slow, now) == statuses
    assert set(statuses) == {
        "not_found", "not_started", "ended", "queued", "duplicate", "idempotency_mismatch",
        "limit_reached", "sold_out", "pass_required", "pass_invalid", "rate_limited",
    }  # fmt: skip
    assert len(fast_replies) == len(slow_replies) == len(statuses)
    for status, a, b in zip(statuses, fast_replies, slow_replies, strict=True):
        assert [type(x) for x in a] == [type(x) for x in b], status
        if status in ("not_started", "rate_limited"):  # a wait in ms, taken a moment apart
            assert a[:3] == b[:3] and abs(a[3] - b[3]) < 2000, status
        else:
            assert a == b, status


def test_a_template_packs_the_command_pack_packs(make_app: MakeApp) -> None:
    app, _ = make_app()
    client = FlashSale.state(app).client
    fast = FastScript(client.register_script("return ARGV"), client)
    long = "x" * 300  # past the cached bulk headers
    keys: list[Any] = ["k1", "k2", "k:été"]
    args: list[Any] = [None, 7, "", None, None, long, b"raw", 2.5, None]
    template = fast.template([None, *keys], args)
    values: list[Any] = ["k0", "a1", 12, "ü", "last"]
    assert template.slots == len(values)
    filled = iter(values)
    expected = fast.pack([next(filled), *keys], [next(filled) if v is None else v for v in args])
    assert template.pack(*values) == expected
    assert fast.run(expected) == ["a1", "7", "", "12", "ü", long, "raw", "2.5", "last"]
    with pytest.raises(TypeError):
        template.pack("too", "few")


def test_a_template_without_slots_is_the_whole_command(make_app: MakeApp) -> None:
    app, _ = make_app()
    client = FlashSale.state(app).client
    fast = FastScript(client.register_script("return ARGV[1]"), client)
    template = fast.template([], ["fixed"])
    assert template.slots == 0
    assert template.pack() == fast.pack([], ["fixed"])
    assert fast.run(template.pack()) == "fixed"


@pytest.mark.parametrize(
    ("key", "queue_pass"), [(None, None), ("retry-1", None), ("retry-2", "not-a-pass")]
)
def test_an_order_sends_the_command_its_keys_and_arguments_pack_to(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch, key: str | None, queue_pass: str | None
) -> None:
    """The sale's template sends what packing the whole admission call would."""
    # Both orders get the same ticket token (drawn at random without a key).
    monkeypatch.setattr(admission, "new_ticket_token", lambda: "T" * 22)
    app, flashsale = make_app(
        FLASHSALE_ORDER_RATE_PER_USER="5/minute", FLASHSALE_ORDER_RATE_PER_SALE="100/second"
    )
    strategy: Any = FlashSale.state(app).strategy
    fast = strategy._script
    sent: list[bytes] = []
    calls: list[tuple[list[Any], list[Any]]] = []
    run = fast.run

    def recording_run(command: bytes) -> Any:
        sent.append(command)
        return run(command)

    def recording_script(keys: Any, args: Any) -> Any:
        calls.append((list(keys), list(args)))
        return fast(keys=keys, args=args)

    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        fast.run = recording_run
        flashsale.place_order("tee", "alice", idempotency_key=key, queue_pass=queue_pass)
        strategy._script = recording_script  # the whole call, as redis-py's Script gets it
        flashsale.place_order("tee", "alice", idempotency_key=key, queue_pass=queue_pass)
    [(keys, args)] = calls
    assert sent[0] == fast.pack(keys, args)


def test_orders_for_many_sale_ids_keep_a_bounded_number_of_templates(
    app: Flask, flashsale: FlashSale
) -> None:
    strategy: Any = FlashSale.state(app).strategy
    for i in range(TEMPLATES + 10):
        assert flashsale.place_order(f"ghost-{i}", "alice").status == "not_found"
        assert len(strategy._templates) <= TEMPLATES
    assert strategy._templates


def test_an_admission_is_one_round_trip(
    flashsale: FlashSale, command_counter: CommandCounter
) -> None:
    flashsale.create_sale("tee", stock=5, per_user_limit=5)
    flashsale.place_order("tee", "alice")  # the connection is made and lent
    sent = command_counter.count(lambda: flashsale.place_order("tee", "alice"))
    assert [c.split(" ", 1)[0] for c in sent] == ["EVALSHA"]


def test_a_flushed_script_is_loaded_again_and_the_order_taken_once(
    flashsale: FlashSale, redis_client: redis_lib.Redis, command_counter: CommandCounter
) -> None:
    flashsale.create_sale("tee", stock=5)
    flashsale.place_order("tee", "warm-up")
    redis_client.script_flush()
    outcome: list[Any] = []
    sent = command_counter.count(lambda: outcome.append(flashsale.place_order("tee", "alice")))
    assert outcome[0].status == "queued"
    assert [c.split(" ", 1)[0] for c in sent] == ["EVALSHA", "SCRIPT", "EVALSHA"]
    assert redis_client.hget("flashsale:{tee}:users", "alice") == "1"
    assert redis_client.xlen("flashsale:{tee}:orders") == 2
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "3"


# -- the pool's sockets ------------------------------------------------------------------------


def test_more_threads_than_connections_admit_each_order_exactly_once(
    redis_url: str, redis_client: redis_lib.Redis
) -> None:
    """16 threads share a pool of 2: the fast path never opens a third socket, and
    orders that find no idle connection wait for one in the pool."""
    app, flashsale = build_app(
        redis_url + "?client_name=fastpool",  # the pool's connections, as CLIENT LIST names them
        FLASHSALE_REDIS_POOL_SIZE=2,
        FLASHSALE_REDIS_POOL_TIMEOUT=30,
        FLASHSALE_REDIS_SOCKET_TIMEOUT=30,
    )
    with app.app_context():
        flashsale.create_sale("tee", stock=150)
        flashsale.get_sale("tee")  # starts the cache's subscriber (same client name)
    # Counted only once the subscriber has subscribed: while it connects, its
    # own connection looks like a pooled one.
    wait_for(
        lambda: any(c["name"] == "fastpool" and c["sub"] != "0" for c in redis_client.client_list())
    )
    most_connections = 0

    def buy(n: int) -> list[tuple[str, str | None]]:
        nonlocal most_connections
        out = []
        with app.app_context():
            for i in range(20):
                a = flashsale.place_order("tee", f"t{n}-u{i}", idempotency_key=f"k{n}-{i}")
                out.append((a.status, a.ticket_id))
        pooled = [  # the cache's subscriber has the same name, and its own connection
            c for c in redis_client.client_list() if c["name"] == "fastpool" and c["sub"] == "0"
        ]
        most_connections = max(most_connections, len(pooled))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [r for rs in pool.map(buy, range(16)) for r in rs]
    statuses = Counter(status for status, _ in results)
    assert statuses == {"queued": 150, "sold_out": 16 * 20 - 150}
    admitted = sorted(t for s, t in results if s == "queued")
    stream = sorted(f["t"] for _, f in redis_client.xrange("flashsale:{tee}:orders"))
    assert stream == admitted  # each admitted order exactly once
    assert redis_client.hget("flashsale:{tee}:sale", "remaining") == "0"
    assert 1 <= most_connections <= 2


def test_an_idle_lent_connection_serves_other_commands(make_app: MakeApp) -> None:
    """With a pool of 1, the connection the fast path kept is the one a read takes."""
    app, flashsale = make_app(FLASHSALE_REDIS_POOL_SIZE=1, FLASHSALE_REDIS_POOL_TIMEOUT=5)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        ticket = flashsale.place_order("tee", "alice").ticket_id
        assert ticket is not None
        found = flashsale.get_ticket(ticket)
        assert found is not None and found.status == "queued"
        assert flashsale.place_order("tee", "bob").status == "queued"


def test_a_forked_child_does_not_use_the_parents_connection(
    make_app: MakeApp, redis_url: str, redis_client: redis_lib.Redis
) -> None:
    """The parent's idle connection is its own: a child (a gunicorn worker forked
    from a preloaded app) connects anew rather than share the parent's socket."""
    app, flashsale = make_app(FLASHSALE_CACHE_TTL=0)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.place_order("tee", "parent-1").status == "queued"
        pid = os.fork()
        if pid == 0:  # the child: answers with its exit status only
            code = 1
            try:
                probe = redis_lib.Redis.from_url(redis_url)
                before = {c["id"] for c in probe.client_list()}
                status = flashsale.place_order("tee", "child").status
                connected = {c["id"] for c in probe.client_list()} - before
                code = 0 if status == "queued" and connected else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert flashsale.place_order("tee", "parent-2").status == "queued"
    assert sorted(redis_client.hkeys("flashsale:{tee}:users")) == ["child", "parent-1", "parent-2"]


# -- Redis restarts, goes away --------------------------------------------------------------------


def test_the_next_order_after_a_redis_restart_is_admitted(private_redis: RedisServer) -> None:
    """The lent connection died with the old server; it is checked (idle) and
    reconnected before the order is sent, and the flushed script is loaded again."""
    app, flashsale = build_app(private_redis.url)
    state = FlashSale.state(app)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.place_order("tee", "alice").status == "queued"
        private_redis.kill()
        private_redis.start()
        assert flashsale.place_order("tee", "bob").status == "queued"
    assert state.breaker is not None and state.breaker.failures == 0


def test_an_open_breaker_refuses_an_order_without_a_round_trip(
    private_redis: RedisServer,
) -> None:
    app, flashsale = build_app(
        private_redis.url, FLASHSALE_BREAKER_FAIL_MAX=2, FLASHSALE_BREAKER_RESET_TIMEOUT=60
    )
    state = FlashSale.state(app)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.place_order("tee", "alice").status == "queued"
        private_redis.kill()
        for user in ("bob", "cat"):
            with pytest.raises(redis_lib.ConnectionError) as failed:
                flashsale.place_order("tee", user)
            assert not isinstance(failed.value, CircuitOpen)
        assert state.breaker is not None and state.breaker.state == "open"
        private_redis.start()

        def refused() -> None:
            with pytest.raises(CircuitOpen):
                flashsale.place_order("tee", "dan")

        sent = CommandCounter(private_redis.url).count(refused)
    assert sent == []
    assert state.breaker.rejected >= 1


# -- unix sockets and TLS come from redis-py's own connections --------------------------------


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    path = tmp_path / "redis.sock"
    for server in own_server(extra_args=["--unixsocket", str(path), "--unixsocketperm", "700"]):
        yield server, f"unix://{path}?db=0"


def test_a_unix_socket_url_admits_through_the_fast_path(
    unix_redis: tuple[RedisServer, str],
) -> None:
    _, url = unix_redis
    app, flashsale = build_app(url)
    assert isinstance(admission_script(app), FastScript)
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert flashsale.place_order("tee", "alice").status == "limit_reached"
        assert flashsale.get_sale("tee").remaining == 4


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[str]:
    cert, key = make_tls_cert(tmp_path)
    tls_port = free_port()
    args = [
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ]  # fmt: skip
    for _ in own_server(extra_args=args):
        yield f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"


def test_a_tls_url_admits_through_the_fast_path(tls_redis: str) -> None:
    app, flashsale = build_app(tls_redis)
    assert isinstance(admission_script(app), FastScript)
    pool = FlashSale.state(app).client.connection_pool
    assert pool.connection_class is redis_lib.SSLConnection
    with app.app_context():
        flashsale.create_sale("tee", stock=5)
        assert flashsale.place_order("tee", "alice").status == "queued"
        assert flashsale.place_order("tee", "alice").status == "limit_reached"
        assert flashsale.get_sale("tee").remaining == 4
