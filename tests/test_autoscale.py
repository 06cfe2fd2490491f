"""``flask flashsale worker --autoscale MIN,MAX``: a supervisor scaling worker processes on lag.

The process tests run the real CLI (``tests/worker_host.py``'s host app, its
SQLite table keyed on ``order.id``) on the real test Redis, with thresholds and
cool-downs of a tenth of a second so that the file runs in seconds. Processes
are counted twice: from the supervisor's registry entry (what ``flask
flashsale status`` shows) and from the kernel's list of the supervisor's
children, and every pid is checked with ``os.kill(pid, 0)``.

The policy objects (:class:`Scaler`, :class:`Backoff`) are tested on their own
with a fake clock.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis as redis_lib
from flask import Flask

from flask_flashsale import ConfigurationError, FlashSale
from flask_flashsale.autoscale import Backoff, Decision, Policy, Sample, Scaler
from flask_flashsale.keys import Keys
from flask_flashsale.registry import SupervisorInfo, live_supervisors, live_workers
from flask_flashsale.worker import SIGNAL_REPEAT_WINDOW

from .helpers import ROOT, MakeApp, build_app, invoke
from .worker_host import WorkerProcess, create_app, init_db, rows, wait_until

KEYS = Keys("flashsale")
STREAM = "flashsale:{drop}:orders"
#: Thresholds and cool-downs small enough for tests (the defaults are seconds).
FAST_SCALING = {
    "HOSTCFG_FLASHSALE_AUTOSCALE_INTERVAL": "0.05",
    "HOSTCFG_FLASHSALE_AUTOSCALE_LAG": "2",
    "HOSTCFG_FLASHSALE_AUTOSCALE_UP_AFTER": "0.3",
    "HOSTCFG_FLASHSALE_AUTOSCALE_DOWN_AFTER": "0.5",
    "HOSTCFG_FLASHSALE_AUTOSCALE_RESTART_BACKOFF": "0.1",
}
POLICY = Policy(lag=10, up_after=3.0, down_after=30.0, interval=1.0, restart_backoff=1.0)


# -- the policy, on a fake clock ------------------------------------------------


def test_one_worker_is_added_once_the_lag_per_worker_stayed_high_for_up_after() -> None:
    scaler = Scaler(POLICY, 1, 4)
    high = Sample(lag=50, pending=2)  # 25 per worker for 2 workers: above 10
    assert scaler.decide(100.0, high, 2) is None
    assert scaler.decide(102.9, high, 2) is None
    decision = scaler.decide(103.0, high, 2)
    assert decision is not None
    assert decision.target == 3
    assert "lag 50" in decision.reason
    # The wait starts again: the third worker gets UP_AFTER to make a difference.
    assert scaler.decide(105.9, high, 3) is None
    assert scaler.decide(106.0, high, 3) == Decision(4, decision.reason.replace("25", "17"))


def test_a_dip_below_the_threshold_restarts_the_wait_for_more_workers() -> None:
    scaler = Scaler(POLICY, 1, 4)
    assert scaler.decide(0.0, Sample(lag=50, pending=1), 1) is None
    assert scaler.decide(2.0, Sample(lag=5, pending=1), 1) is None  # 5 per worker: fine
    assert scaler.decide(4.0, Sample(lag=50, pending=1), 1) is None
    assert scaler.decide(6.9, Sample(lag=50, pending=1), 1) is None
    assert scaler.decide(7.0, Sample(lag=50, pending=1), 1) is not None


def test_one_worker_is_removed_after_down_after_without_lag_and_with_idle_capacity() -> None:
    scaler = Scaler(POLICY, 1, 4)
    idle = Sample(lag=0, pending=1)  # one order in hand, three workers: two have nothing
    assert scaler.decide(0.0, idle, 3) is None
    assert scaler.decide(29.0, idle, 3) is None
    decision = scaler.decide(30.0, idle, 3)
    assert decision is not None
    assert decision.target == 2
    assert "no lag" in decision.reason
    assert scaler.decide(31.0, idle, 2) is None  # the next one waits DOWN_AFTER again
    assert scaler.decide(60.0, idle, 2) is not None


def test_workers_busy_with_held_batches_are_not_removed() -> None:
    # No lag, but every worker holds orders (big batches, slow hooks): not idle.
    scaler = Scaler(POLICY, 1, 4)
    busy = Sample(lag=0, pending=90)
    assert scaler.decide(0.0, busy, 3) is None
    assert scaler.decide(100.0, busy, 3) is None


def test_the_scaler_stays_within_min_and_max() -> None:
    scaler = Scaler(POLICY, 2, 3)
    assert scaler.decide(0.0, Sample(lag=1000, pending=0), 3) is None
    assert scaler.decide(100.0, Sample(lag=1000, pending=0), 3) is None
    scaler = Scaler(POLICY, 2, 3)
    assert scaler.decide(0.0, Sample(lag=0, pending=0), 2) is None
    assert scaler.decide(100.0, Sample(lag=0, pending=0), 2) is None


def test_restarts_back_off_while_workers_die_young_and_reset_after_a_healthy_run() -> None:
    backoff = Backoff(0.5, stable_after=10.0, cap=3.0)
    assert [backoff.after_death(lived=1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.after_death(lived=10.0) == 0.5  # it had run well: a fresh start
    assert backoff.after_death(lived=0.1) == 1.0


# -- configuration and refusals -------------------------------------------------


def test_autoscale_settings_are_validated_at_init(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="FLASHSALE_AUTOSCALE_LAG"):
        build_app(redis_url, FLASHSALE_AUTOSCALE_LAG="many")
    with pytest.raises(ConfigurationError, match="FLASHSALE_AUTOSCALE_RESTART_BACKOFF"):
        build_app(redis_url, FLASHSALE_AUTOSCALE_RESTART_BACKOFF=0)


def test_autoscale_is_refused_under_memory_with_a_one_line_error() -> None:
    app, ext = build_app("memory://")
    ext.order_handler(lambda order: None)
    code, output = invoke(app, "worker", "--autoscale", "1,2")
    assert code == 3  # the app cannot be used from the CLI (docs/cli.rst)
    assert output.count("\n") == 1
    assert "memory://" in output
    with app.app_context(), pytest.raises(ConfigurationError, match="memory://"):
        ext.run_worker(autoscale=(1, 2))


@pytest.mark.parametrize(
    ("value", "message"),
    [("3,1", "MIN,MAX"), ("0,2", "MIN,MAX"), ("two", "MIN,MAX"), ("1,999", "MIN,MAX")],
)
def test_a_bad_autoscale_range_is_a_usage_error(
    make_app: MakeApp, value: str, message: str
) -> None:
    app, ext = make_app()
    ext.order_handler(lambda order: None)
    code, output = invoke(app, "worker", "--autoscale", value)
    assert code == 2
    assert message in output


def test_autoscale_does_not_mix_with_burst(make_app: MakeApp) -> None:
    app, ext = make_app()
    ext.order_handler(lambda order: None)
    code, output = invoke(app, "worker", "--autoscale", "1,2", "--burst")
    assert code == 2
    assert "--burst" in output


def test_autoscale_without_a_handler_fails_before_starting_workers(make_app: MakeApp) -> None:
    app, _ = make_app()
    code, output = invoke(app, "worker", "--autoscale", "1,2")
    assert code == 1
    assert "order_handler" in output


# -- real processes -------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    """The host app in this process, its database, and a sale ``drop`` to fill."""
    db = tmp_path / "host.sqlite3"
    init_db(db)
    monkeypatch.setenv("TEST_REDIS_URL", redis_url)
    monkeypatch.setenv("HOST_DB", str(db))
    host = Host(create_app(), tmp_path, redis_url)
    yield host
    host.kill_all()


class Host:
    """The test's view of the host: orders, tickets, database, supervisors."""

    def __init__(self, app: Flask, tmp_path: Path, redis_url: str) -> None:
        self.app = app
        self.ext: FlashSale = app.extensions["flashsale"].ext
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.db = tmp_path / "host.sqlite3"
        self.tickets: list[str] = []
        self._processes: list[WorkerProcess] = []
        self._workers: set[int] = set()

    def admit(self, orders: int) -> list[str]:
        with self.app.app_context():
            self.ext.create_sale("drop", stock=orders)
            for i in range(orders):
                admission = self.ext.place_order("drop", f"user{i}")
                assert admission.ticket_id is not None
                self.tickets.append(admission.ticket_id)
        return self.tickets

    def statuses(self) -> Counter[str]:
        with self.app.app_context():
            return Counter(
                self.ext.get_ticket(t).status  # type: ignore[union-attr]
                for t in self.tickets
            )

    def supervise(self, name: str, autoscale: str, **env: str) -> WorkerProcess:
        """``flask flashsale worker --autoscale`` in a subprocess (killed at teardown)."""
        proc = WorkerProcess(
            {
                "TEST_REDIS_URL": self.redis_url,
                "HOST_DB": str(self.db),
                "STUCK_MARKER": str(self.tmp_path / "stuck"),
                **FAST_SCALING,
                **env,
            },
            self.tmp_path / f"{name}.log",
            "--autoscale",
            autoscale,
            "--name",
            name,
        )
        self._processes.append(proc)
        return proc

    def watch(self, pids: list[int]) -> list[int]:
        """Remember worker pids, to kill them at teardown if a test left them running."""
        self._workers.update(pids)
        return pids

    def kill_all(self) -> None:
        """After a failed test: no supervisor nor worker of ours outlives it (by pid)."""
        for proc in self._processes:
            self._workers.update(child_pids(proc.proc.pid))
            proc.close()
        for pid in self._workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def supervisor(client: redis_lib.Redis, name: str) -> SupervisorInfo | None:
    return next((s for s in live_supervisors(client, KEYS) if s.name == name), None)


def child_pids(pid: int) -> list[int]:
    """The kernel's list of ``pid``'s child processes."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def registered_pids(client: redis_lib.Redis, name: str) -> list[int]:
    """Pids of the supervisor's workers, from its registry entry."""
    info = supervisor(client, name)
    if info is None:
        return []
    return [c.pid for c in info.children]


class Sampler:
    """Counts the supervisor's worker processes every few ms, in a thread."""

    def __init__(self, client: redis_lib.Redis, name: str, pid: int) -> None:
        self.client, self.name, self.pid = client, name, pid
        #: Workers in the supervisor's registry entry (its children, running or stopping).
        self.registry: list[int] = []
        #: Child processes of the supervisor according to the kernel.
        self.processes: list[int] = []
        #: Lag over all sales, as ``flask flashsale status`` reads it.
        self.lag: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.processes.append(len([p for p in child_pids(self.pid) if alive(p)]))
            info = supervisor(self.client, self.name)
            if info is not None:
                self.registry.append(len(info.children))
            xlen = self.client.xlen(STREAM)
            groups = self.client.xinfo_groups(STREAM) if xlen else []
            pending = sum(int(g["pending"]) for g in groups)
            self.lag.append(max(int(xlen) - pending, 0))


def decisions(output: str) -> list[tuple[str, int, int]]:
    """The supervisor's scaling lines: ``("up", 1, 2)``..."""
    return [
        (m.group(1), int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"scaling (up|down) (\d+) -> (\d+) workers: \S", output)
    ]


def stop(proc: WorkerProcess, timeout: float = 30) -> tuple[int, str]:
    proc.signal(signal.SIGTERM)
    code = proc.wait(timeout)
    return code, proc.output()


@pytest.mark.slow
def test_a_burst_scales_from_min_to_max_drains_and_falls_back_to_min(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    tickets = host.admit(90)
    sup = host.supervise("sup", "1,3", HOOK_SECONDS="0.05", WORKER_BATCH="1")
    try:
        with Sampler(redis_client, "sup", sup.proc.pid) as sample:
            wait_until(lambda: host.statuses()["confirmed"] == len(tickets), timeout=30)
            drained_at = len(sample.registry)
            # Back to MIN once idle: one worker, the same in the registry and the kernel.
            wait_until(lambda: len(registered_pids(redis_client, "sup")) == 1, timeout=15)
            wait_until(lambda: len(child_pids(sup.proc.pid)) == 1, timeout=15)
            (last,) = registered_pids(redis_client, "sup")
            assert child_pids(sup.proc.pid) == [last]
            assert alive(last)
        code, output = stop(sup)
    finally:
        sup.close()
    print(f"\nworkers over time (registry): {compress(sample.registry)}")
    assert code == 0, output
    assert sample.registry[0] == 1  # MIN to begin with
    assert max(sample.registry[:drained_at]) == 3  # MAX under the burst
    assert max(sample.registry) == 3
    assert max(sample.processes) == 3  # never more processes than MAX
    ups = [d for d in decisions(output) if d[0] == "up"]
    downs = [d for d in decisions(output) if d[0] == "down"]
    assert ups == [("up", 1, 2), ("up", 2, 3)], output
    assert downs == [("down", 3, 2), ("down", 2, 1)], output
    assert re.search(r"scaling up 1 -> 2 workers: lag \d+", output)
    stored = [order_id for (order_id,) in rows(host.db, "SELECT id FROM orders")]
    assert sorted(stored) == sorted(tickets)  # each once
    assert redis_client.xlen(STREAM) == 0


@pytest.mark.slow
def test_the_number_of_workers_never_exceeds_max_while_the_lag_stays_high(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    host.admit(300)
    sup = host.supervise("sup", "1,2", HOOK_SECONDS="0.05", WORKER_BATCH="1")
    try:
        with Sampler(redis_client, "sup", sup.proc.pid) as sample:
            wait_until(lambda: len(registered_pids(redis_client, "sup")) == 2, timeout=15)
            reached = len(sample.lag)
            time.sleep(1.5)  # five times UP_AFTER, with a lag far above 2 per worker
        code, output = stop(sup)
    finally:
        sup.close()
    assert code == 0, output
    assert min(sample.lag[reached:]) > 2 * 2  # the supervisor would have liked more
    assert max(sample.processes) == 2
    assert max(sample.registry) == 2
    assert decisions(output) == [("up", 1, 2)]
    assert redis_client.xpending(STREAM, "workers")["pending"] == 0


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_order_is_claimed(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    tickets = host.admit(5)
    sup = host.supervise("sup", "1,1", STUCK_ORDER=tickets[0], STUCK_SECONDS="60", WORKER_BATCH="1")
    try:
        marker = host.tmp_path / "stuck"
        wait_until(marker.exists, timeout=30)
        victim = int(wait_until(marker.read_text))
        (before,) = wait_until(lambda: supervisor(redis_client, "sup")).children
        assert before.pid == victim
        os.kill(victim, signal.SIGKILL)

        wait_until(lambda: host.statuses() == Counter({"confirmed": 5}), timeout=30)
        (after,) = wait_until(lambda: supervisor(redis_client, "sup")).children
        code, output = stop(sup)
    finally:
        sup.close()
    assert code == 0, output
    assert after.pid != victim and after.name != before.name
    assert not alive(victim)
    calls = rows(host.db, f"SELECT pid, attempt FROM calls WHERE order_id = '{tickets[0]}'")
    assert calls == [(victim, 1), (after.pid, 2)]  # claimed by the replacement, once
    assert "killed by SIGKILL" in output
    assert sorted(o for (o,) in rows(host.db, "SELECT id FROM orders")) == sorted(tickets)


@pytest.mark.slow
def test_sigterm_to_the_supervisor_finishes_the_orders_in_hand_and_exits_0(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    tickets = host.admit(10)
    sup = host.supervise(
        "sup",
        "2,2",
        STUCK_ORDER=tickets[0],
        STUCK_SECONDS="1",
        WORKER_BATCH="1",
        CLAIM_IDLE="30",  # nothing may be taken over: the order in hand must be finished
    )
    try:
        wait_until((host.tmp_path / "stuck").exists, timeout=30)
        pids = wait_until(lambda: registered_pids(redis_client, "sup"))
        assert len(pids) == 2
        code, output = stop(sup)
    finally:
        sup.close()
    assert code == 0, output
    assert not [p for p in pids if alive(p)]
    with host.app.app_context():
        assert host.ext.get_ticket(tickets[0]).status == "confirmed"  # type: ignore[union-attr]
    assert (tickets[0],) in rows(host.db, "SELECT id FROM orders")
    assert redis_client.xpending(STREAM, "workers")["pending"] == 0
    assert redis_client.xinfo_consumers(STREAM, "workers") == []
    assert live_workers(redis_client, KEYS) == []
    assert live_supervisors(redis_client, KEYS) == []
    assert "SIGTERM" in output


@pytest.mark.slow
def test_a_second_signal_stops_the_workers_at_once_and_exits_1(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    tickets = host.admit(3)
    sup = host.supervise("sup", "1,1", STUCK_ORDER=tickets[0], STUCK_SECONDS="60", WORKER_BATCH="1")
    try:
        wait_until((host.tmp_path / "stuck").exists, timeout=30)
        sup.signal(signal.SIGTERM)
        wait_until(lambda: "finishing the order in hand" in sup.output(), timeout=10)
        time.sleep(SIGNAL_REPEAT_WINDOW + 0.1)  # a repeat within the window is the same request
        sup.signal(signal.SIGTERM)
        code = sup.wait(15)  # far less than the hook's 60 s
        output = sup.output()
    finally:
        sup.close()
    assert code == 1, output
    assert "second signal" in output
    # The order in hand stays pending on the stopped worker: another claims it later.
    assert redis_client.xpending(STREAM, "workers")["pending"] == 1
    assert live_supervisors(redis_client, KEYS) == []


@pytest.mark.slow
def test_a_crash_looping_worker_is_restarted_with_growing_back_off(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    max_attempts = 3
    tickets = host.admit(10)
    sup = host.supervise("sup", "1,1", POISON_USER="user3", MAX_ATTEMPTS=str(max_attempts))
    try:
        wait_until(lambda: host.statuses() == Counter({"confirmed": 9, "failed": 1}), timeout=40)
        # Restarted after the last death, still supervised.
        (pid,) = wait_until(lambda: registered_pids(redis_client, "sup"), timeout=10)
        assert alive(pid)
        code, output = stop(sup)
    finally:
        sup.close()
    assert code == 0, output
    print("\n" + "\n".join(line for line in output.splitlines() if "supervisor" in line))
    deaths = re.findall(r"exited with status 17 .*; restarting in ([\d.]+)s", output)
    # The poison order's first death is inside a batch, then MAX_ATTEMPTS in
    # careful mode: each restart waits twice as long as the one before.
    assert [float(d) for d in deaths] == [0.1, 0.2, 0.4, 0.8]
    # ...and really waits: each worker starts at least that long after the death.
    events = [
        (datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f"), "started" in line)
        for line in output.splitlines()
        if "supervisor sup: worker" in line
        and ("exited with status 17" in line or "started (pid" in line)
    ]
    gaps = [
        (b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(events) if not a[1] and b[1]
    ]
    assert len(gaps) == 4, events
    assert all(gap >= float(d) - 0.002 for gap, d in zip(gaps, deaths, strict=True)), gaps
    assert tickets[3] in [t for (t,) in rows(host.db, "SELECT order_id FROM calls")]
    assert (tickets[3],) not in rows(host.db, "SELECT id FROM orders")


@pytest.mark.slow
def test_status_shows_the_supervisor_and_its_workers(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    sup = host.supervise("sup", "2,3")
    try:
        pids = wait_until(
            lambda: (
                len(registered_pids(redis_client, "sup")) == 2
                and registered_pids(redis_client, "sup")
            )
        )
        wait_until(lambda: len(live_workers(redis_client, KEYS)) == 2)
        code, text = invoke(host.app, "status", "--json")
        doc = json.loads(text)
        code_text, human = invoke(host.app, "status")
        stop_code, output = stop(sup)
    finally:
        sup.close()
    assert code == 0 and code_text == 0 and stop_code == 0, output
    (entry,) = doc["supervisors"]
    assert (entry["name"], entry["min"], entry["max"], entry["pid"]) == ("sup", 2, 3, sup.proc.pid)
    assert sorted(c["pid"] for c in entry["children"]) == sorted(pids)
    children = sorted(c["name"] for c in entry["children"])
    assert sorted(w["name"] for w in doc["workers"]) == children
    assert {w["parent"] for w in doc["workers"]} == {"sup"}
    assert all(name.startswith("sup.") for name in children)
    assert "sup  supervisor host=" in human
    for name in children:
        assert f"\n    {name}  host=" in human  # indented under its supervisor


@pytest.mark.slow
def test_workers_stop_by_themselves_when_their_supervisor_is_killed(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    sup = host.supervise("sup", "2,2")
    try:
        pids = host.watch(
            wait_until(
                lambda: (
                    len(registered_pids(redis_client, "sup")) == 2
                    and registered_pids(redis_client, "sup")
                )
            )
        )
        sup.signal(signal.SIGKILL)
        sup.wait(10)
        wait_until(lambda: not any(alive(p) for p in pids), timeout=15)
        output = sup.output()
    finally:
        sup.close()
    assert live_workers(redis_client, KEYS) == []  # they left the registry on their way out
    assert output.count("its supervisor (pid") == 2, output


@pytest.mark.slow
def test_run_worker_with_autoscale_supervises_from_python(
    host: Host, redis_client: redis_lib.Redis
) -> None:
    host.admit(20)
    script = (
        "import logging; logging.basicConfig(level=logging.INFO, "
        "format='%(asctime)s %(levelname)s %(message)s')\n"
        "from tests.worker_host import create_app\n"
        "app = create_app()\n"
        "with app.app_context():\n"
        "    print('settled', app.extensions['flashsale'].ext.run_worker("
        "autoscale=(1, 2), name='py'), flush=True)\n"
    )
    log = (host.tmp_path / "py.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **FAST_SCALING,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: host.statuses() == Counter({"confirmed": 20}), timeout=30)
        info = wait_until(lambda: supervisor(redis_client, "py"))
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        host.watch(child_pids(proc.pid))
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    output = (host.tmp_path / "py.log").read_text()
    assert code == 0, output
    assert info.pid == proc.pid
    assert all(c.name.startswith("py.w") for c in info.children)
    assert "settled 20" in output


def compress(values: list[int]) -> list[tuple[int, int]]:
    """``[1, 1, 2, 2, 2]`` -> ``[(1, 2), (2, 3)]``: value and run length."""
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out
