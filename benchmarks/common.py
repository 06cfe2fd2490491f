"""Shared plumbing: processes we start (and always stop), Redis, gunicorn, wrk,
machine facts, tables and JSON results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "bench.lua"


class NotAvailable(Exception):
    """A case cannot run yet (a feature it measures has not landed): say why."""


def env_for_children(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process a benchmark starts, each in its own process group.

    Use as a context manager: on exit (normal or not) each group gets SIGTERM,
    then SIGKILL after ``grace`` seconds, by pid, never by name.
    """

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new session (process group) and remember it."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            list(argv), start_new_session=True, **kwargs
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int | None:
        """Signal ``proc``'s group, wait, SIGKILL the group if it lingers; return its code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(self.grace)
        # Children that outlived their leader (gunicorn workers) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.returncode

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


class Redis:
    """A throwaway ``redis-server`` on a free port, bound to 127.0.0.1.

    ``aof=True`` turns on the append-only file (``appendfsync everysec``) in
    the server's own directory, so :meth:`restart` after a crash reloads it.
    """

    def __init__(self, procs: Processes, *, aof: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
        self.port = free_port()
        self.dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"flashsale-bench-redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._procs = procs
        self._argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
            "--dir", str(self.dir), "--daemonize", "no",
            "--loglevel", "warning", "--protected-mode", "yes"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        #: A plain client (``decode_responses=True``) for setup and inspection.
        self.client: Any = redis.Redis(port=self.port, decode_responses=True, socket_timeout=30)
        self.proc: subprocess.Popen[bytes]
        self._launch()

    def restart(self) -> None:
        """Start the server again, same port and directory (after it was killed)."""
        self._launch()

    def _launch(self) -> None:
        """Start ``redis-server`` and wait until it answers (its data loaded)."""
        self.proc = self._procs.start(self._argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """Redis's own CPU time so far (user + sys, all threads)."""
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def used_memory(self) -> int:
        """``INFO memory`` ``used_memory`` in bytes."""
        return int(self.client.info("memory")["used_memory"])

    def version(self) -> str:
        """``redis_version``."""
        return str(self.client.info("server")["redis_version"])

    def cleanup(self) -> None:
        """Remove the server's directory (the process goes with :class:`Processes`)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def python_argv() -> list[str]:
    """The interpreter running us."""
    return [sys.executable]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Wait until ``url`` answers (any HTTP status) or ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode} before answering") from None
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


def start_gunicorn(
    procs: Processes,
    *,
    redis_url: str,
    workers: int,
    worker_class: str,
    threads: int,
    strategy: str = "lua",
    log: Path | None = None,
    worker_connections: int = 1000,
    app: str = "benchmarks.app:create_app()",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve ``app`` (default ``benchmarks.app:create_app()``) with gunicorn on a free port.

    With keep-alive, a connection stays with the worker that accepted it; pass
    ``worker_connections`` = load-generator connections / workers so that every
    worker gets its share (one worker can otherwise grab them all in a burst).
    ``env``: more environment for the server (the app must serve ``/bare``).
    """
    port = free_port()
    argv = [
        *python_argv(), "-m", "gunicorn", app,
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", worker_class, "--threads", str(threads),
        "--backlog", "2048", "--timeout", "60", "--graceful-timeout", "3",
        "--keep-alive", "5", "--log-level", "warning",
        "--worker-connections", str(worker_connections),
    ]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = procs.start(
        argv, cwd=ROOT, stdout=out, stderr=out,
        env=env_for_children(BENCH_REDIS_URL=redis_url, BENCH_STRATEGY=strategy, **(env or {})),
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/bare", proc)
    return proc, base


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of ``pid`` on ``cpus`` only (threads it starts later
    inherit it from the thread that starts them)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cpus)


def parse_cpus(text: str) -> set[int] | None:
    """``"0"``, ``"0,1"`` or ``"2-3"`` as a set of CPU numbers; ``""`` gives None."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of ``pids`` (and their waited-for children)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine() -> dict[str, Any]:
    """Where the numbers came from: CPU, cores, load, versions."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "python"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "redis_parser": parser,
        "platform": platform.platform(),
    }


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages now."""
    return [round(x, 2) for x in os.getloadavg()]


def median(values: Sequence[float]) -> float:
    """Median (0.0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A compact fixed-width text table."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """``with timed() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def run_wrk(
    url: str,
    *,
    method: str,
    path: str,
    nonce: str,
    duration: float,
    connections: int,
    threads: int,
    quota: int = 0,
    timeout: float = 10,
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """Run wrk with ``wrk/bench.lua`` against ``url + path``; return its JSON summary.

    Adds ``cpu_s`` (wrk's own CPU time) to the summary. ``quota`` > 0 stops each
    thread after that many responses; ``duration`` is then the upper bound.
    ``cpus``: run wrk on these CPUs only (set before it starts, so its threads too).
    """
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
        f"--timeout={timeout:g}s", "-s", str(WRK_SCRIPT), url + path,
        "--", method, path, nonce, str(quota),
    ]
    before = os.times()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        done_threads = 0
        for line in proc.stdout:
            lines.append(line)
            if quota and line.startswith("WRK-QUOTA-DONE"):
                done_threads += 1
                if done_threads == threads:
                    proc.send_signal(signal.SIGINT)  # ends wrk's sleep: summary, done()
        proc.wait(duration + timeout + 30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    after = os.times()
    for line in lines:
        if line.startswith("WRK-JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK-JSON "):])
            data["cpu_s"] = (after.children_user - before.children_user) + (
                after.children_system - before.children_system
            )
            return data
    err = proc.stderr.read() if proc.stderr else ""
    out = "".join(lines)
    raise SystemExit(f"wrk failed ({proc.returncode}): {err.strip() or out[-500:]}")


# Child benchmark processes speak a three-line protocol on stdin/stdout: they
# print READY (or UNAVAILABLE <why>) once set up, start on a GO line, and
# print RESULT <json> when done.


def await_ready(proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait for ``proc``'s READY line; :class:`NotAvailable` on UNAVAILABLE."""
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if line.startswith("UNAVAILABLE"):
        raise NotAvailable(line.split(" ", 1)[1])
    if line != "READY":
        raise SystemExit(f"{what} process failed to start: {line!r}")


def send_go(proc: subprocess.Popen[bytes]) -> None:
    """Send one GO line to ``proc``."""
    assert proc.stdin is not None
    proc.stdin.write(b"GO\n")
    proc.stdin.flush()


def read_result(proc: subprocess.Popen[bytes], what: str, timeout: float) -> dict[str, Any]:
    """Read ``proc``'s output to the end, wait for it, and return its RESULT."""
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.wait(timeout)
    result = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if result is None:
        raise SystemExit(f"{what} process exited {proc.returncode} without a result")
    parsed: dict[str, Any] = json.loads(result[len("RESULT "):])
    return parsed


def run_crowds(
    procs: Processes,
    *,
    redis_url: str,
    processes: int,
    threads: int,
    sales: Sequence[str],
    nonce: str,
    strategy: str = "lua",
    duration: float = 0.0,
    count: int = 0,
) -> dict[str, Any]:
    """Run ``processes`` crowds (:mod:`benchmarks.crowd`) released together; merge results.

    Raises :class:`NotAvailable` if the strategy is not really in use.
    """
    argv = [*python_argv(), "-m", "benchmarks.crowd", "--redis", redis_url, "--strategy",
            strategy, "--threads", str(threads), "--sales", ",".join(sales)]
    started = []
    try:
        for i in range(processes):
            extra = ["--nonce", f"{nonce}p{i}", "--duration", str(duration), "--count",
                     str(count // processes + (i < count % processes))]
            started.append(procs.start(argv + extra, cwd=ROOT, env=env_for_children(),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for proc in started:
            await_ready(proc, "crowd")
        t0 = time.perf_counter()
        for proc in started:
            send_go(proc)
        parts = [read_result(proc, "crowd", 60) for proc in started]
        wall = time.perf_counter() - t0
    finally:
        for proc in started:
            procs.stop(proc)
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    merged: dict[str, Any] = {
        "attempts": sum(p["attempts"] for p in parts),
        "statuses": statuses,
        "wall_s": max(p["wall_s"] for p in parts) if parts else wall,
        "latency_ms": {
            "p50": median([p["latency_ms"]["p50"] for p in parts]),
            "p99": max(p["latency_ms"]["p99"] for p in parts),
            "max": max(p["latency_ms"]["max"] for p in parts),
        },
    }
    stats = [p["strategy_stats"] for p in parts if "strategy_stats" in p]
    if stats:
        names = sorted({k for s in stats for k in s})
        merged["strategy_stats"] = {k: sum(s.get(k, 0) for s in stats) for k in names}
    return merged


def start_pyspy(pid: int, raw: Path, *, duration: float,
                subprocesses: bool = False) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` into ``raw`` (collapsed stacks); None if no py-spy."""
    if shutil.which("py-spy") is None:
        return None
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
            "--duration", str(max(1, round(duration))), "--output", str(raw), "--nonblocking"]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def summarise_profile(raw: Path, buckets: Sequence[tuple[str, str]],
                      focus: Sequence[str]) -> dict[str, Any]:
    """Collapsed stacks -> share of CPU samples per layer, per function of ``focus``
    (inclusive), and the top leaf functions."""
    if not raw.exists():
        return {"skipped": "py-spy wrote no profile (ptrace not permitted?)"}
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1]] += count
        names = {frame.split(" (", 1)[0] for frame in frames}
        for name in focus:
            if name in names:
                inclusive[name] += count
        for frame in reversed(frames):
            label = next((lab for lab, needle in buckets if needle in frame), None)
            if label:
                layers[label] += count
                break
        else:
            layers["other (interpreter, stdlib)"] += count
    if not total:
        return {"skipped": "empty profile"}
    return {
        "samples": total,
        "file": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
        "layers": {k: round(v / total, 3) for k, v in layers.most_common()},
        "inclusive": {k: round(inclusive[k] / total, 3) for k in focus if inclusive[k]},
        "top_leaves": [[k, round(v / total, 3)] for k, v in leaves.most_common(12)],
    }
