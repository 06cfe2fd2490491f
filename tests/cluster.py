"""Real local Redis Cluster and Sentinel groups, for tests, benchmarks and people.

No containers: ``redis-server`` processes on free ports of 127.0.0.1, each in
its own temporary directory, stopped by pid.

- :class:`LocalCluster`: 3 masters + 3 replicas (``--cluster-enabled yes``,
  ``redis-cli --cluster create ... --cluster-replicas 1``), ready once every
  node reports ``cluster_state:ok``.
- :class:`LocalSentinel`: 1 master, 1 replica and 3 sentinels
  (``redis-server <conf> --sentinel``).

Run ``python -m tests.cluster [cluster|sentinel]`` (or
``scripts/redis-cluster.sh``) to start one by hand; it prints the
``FLASHSALE_REDIS_URL`` and runs until Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from tests.redis_server import stop_process

#: Seconds a master may be unreachable before the cluster fails it over.
NODE_TIMEOUT_MS = 2000
#: Seconds a sentinel waits before calling a master down.
SENTINEL_DOWN_AFTER_MS = 1000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` free ports of 127.0.0.1; with ``bus``, each one's ``port + 10000``
    (its cluster bus) is free and below 65536 too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port in ports:
            continue
        if bus and (port + 10000 > 65535 or not _port_free(port + 10000)):
            continue
        ports.append(port)
    return ports


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; raise ``RuntimeError`` naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Node:
    """One ``redis-server`` process."""

    def __init__(self, port: int, root: str, args: list[str]) -> None:
        self.port = port
        self.dir = os.path.join(root, str(port))
        os.makedirs(self.dir, exist_ok=True)
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, *self.args],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self, **kwargs: object) -> redis.Redis:
        options: dict[str, object] = {
            "socket_timeout": 1, "socket_connect_timeout": 1, "decode_responses": True, **kwargs
        }
        return redis.Redis(port=self.port, **options)  # type: ignore[arg-type]

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would, and wait for the process."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 5 s) and wait."""
        stop_process(self.process)
        self.process = None


def _base_args(port: int) -> list[str]:
    return [
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--loglevel", "warning",
    ]


class LocalCluster:
    """3 masters and 3 replicas on 127.0.0.1 (``masters`` and ``replicas`` per master)."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.root = tempfile.mkdtemp(prefix="flashsale-cluster-")
        ports = free_ports(masters * (1 + replicas), bus=True)
        self.replicas = replicas
        self.nodes = [
            _Node(
                p,
                self.root,
                [
                    *_base_args(p),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # Replicas sync at once (Redis 7 waits 5 s for more replicas).
                    "--repl-diskless-sync-delay", "0",
                ],
            )
            for p in ports
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...``."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Start the nodes, create the cluster, wait for ``cluster_state:ok`` everywhere."""
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                wait_until(lambda n=node: bool(n.client().ping()), 10, f"node {node.port}")
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas", str(self.replicas), "--cluster-yes",
                ],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
            )
            self.wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and every live
        replica has finished its sync with its master (a replica promoted
        before that would come up empty)."""

        def ok() -> bool:
            for node in self.nodes:
                if not node.alive:
                    continue
                client = node.client()
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                replication = client.info("replication")
                if replication["role"] != "master" and (
                    replication.get("master_link_status") != "up"
                    or replication.get("master_sync_in_progress")
                ):
                    return False
            return True

        wait_until(ok, timeout, "cluster_state:ok on every node, replicas in sync")

    def node_of(self, port: int) -> _Node:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> _Node:
        """The node that serves ``key``'s slot now (asked of a live node)."""
        for node in self.nodes:
            if node.alive:
                client = node.client()
                slot = client.cluster("keyslot", key)
                for start, end, master, *_ in client.cluster("slots"):
                    if start <= slot <= end:
                        return self.node_of(int(master[1]))
        raise RuntimeError("no live node")

    def replicas_of(self, master: _Node) -> list[_Node]:
        """The live replicas of ``master``."""
        info = master.client().info("replication")
        ports = [
            int(v["port"]) for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()
        ]
        return [self.node_of(p) for p in ports if self.node_of(p).alive]

    def flushall(self) -> None:
        """Empty every master."""
        for node in self.nodes:
            if node.alive and node.client().info("replication")["role"] == "master":
                node.client().flushall()

    def cleanup(self) -> None:
        """Stop every node and remove the directories."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class LocalSentinel:
    """1 master, ``replicas`` replicas and 3 sentinels watching them as ``service``.

    ``min_replicas``: the data nodes' ``min-replicas-to-write`` (with
    ``min-replicas-max-lag 1``); 0 leaves it off.
    """

    def __init__(
        self, service: str = "flashsale", *, replicas: int = 1, min_replicas: int = 0
    ) -> None:
        self.service = service
        # On both data nodes (either may be the master after a failover).
        safety = (
            ["--min-replicas-to-write", str(min_replicas), "--min-replicas-max-lag", "1"]
            if min_replicas
            else []
        )
        self.root = tempfile.mkdtemp(prefix="flashsale-sentinel-")
        master, *ports = free_ports(replicas + 4)
        replica_ports, sentinels = ports[:replicas], ports[replicas:]
        self.master = _Node(
            master, self.root, [*_base_args(master), "--repl-diskless-sync-delay", "0", *safety]
        )
        self.replicas = [
            _Node(
                replica,
                self.root,
                [*_base_args(replica), "--replicaof", "127.0.0.1", str(master),
                 "--repl-diskless-sync-delay", "0", *safety],
            )
            for replica in replica_ports
        ]
        #: The first replica.
        self.replica = self.replicas[0]
        self.sentinels: list[_Node] = []
        for port in sentinels:
            node = _Node(port, self.root, [])
            conf = os.path.join(node.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(
                    f"port {port}\nbind 127.0.0.1\ndaemonize no\nloglevel warning\n"
                    f"dir {node.dir}\n"
                    f"sentinel monitor {service} 127.0.0.1 {master} 2\n"
                    f"sentinel down-after-milliseconds {service} {SENTINEL_DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {service} 5000\n"
                    f"sentinel parallel-syncs {service} 1\n"
                )
            node.args = [conf, "--sentinel"]
            self.sentinels.append(node)

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:<s1>,.../<service>/0``."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def current_master(self) -> int:
        """The master's port as the first live sentinel says."""
        for node in self.sentinels:
            if node.alive:
                try:
                    _host, port = node.client().sentinel_get_master_addr_by_name(self.service)
                    return int(port)
                except redis.RedisError:
                    continue
        raise RuntimeError("no sentinel answers")

    def start(self, timeout: float = 30.0) -> LocalSentinel:
        """Start the data nodes, then the sentinels; wait until they see the replica."""
        try:
            self.master.start()
            for node in self.replicas:
                node.start()
            for node in (self.master, *self.replicas):
                wait_until(lambda n=node: bool(n.client().ping()), 10, f"node {node.port}")
            for node in self.replicas:
                wait_until(
                    lambda n=node: n.client().info("replication")["master_link_status"] == "up",
                    timeout, "replica in sync",
                )
            for node in self.sentinels:
                node.start()

            def known() -> bool:
                for s in self.sentinels:
                    c = s.client()
                    if len(c.sentinel_slaves(self.service)) < len(self.replicas):
                        return False
                    if len(c.sentinel_sentinels(self.service)) < len(self.sentinels) - 1:
                        return False
                return True

            wait_until(known, timeout, "sentinels to know the replica and each other")
        except BaseException:
            self.cleanup()
            raise
        return self

    def node_on(self, port: int) -> _Node:
        """The data node listening on ``port``."""
        return next(n for n in (self.master, *self.replicas) if n.port == port)

    def cleanup(self) -> None:
        """Stop every process and remove the directories."""
        for node in (*self.sentinels, self.master, *self.replicas):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- pytest fixtures (registered by conftest.py's ``pytest_plugins``) ----------


def _start(make: Callable[[], LocalCluster | LocalSentinel]) -> LocalCluster | LocalSentinel:
    from tests.redis_server import require_redis_binary

    if not require_redis_binary() or not shutil.which("redis-cli"):
        if os.environ.get("CI") == "true":
            raise RuntimeError("CI=true and redis-server/redis-cli are missing")
        pytest.skip("redis-server/redis-cli are not installed")
    try:
        return make()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise  # under CI a cluster that does not start is a failure, never a skip
        pytest.skip(f"could not start a local Redis group: {exc}")


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One local Redis Cluster (3 masters, 3 replicas) for the whole run."""
    group = _start(LocalCluster().start)
    assert isinstance(group, LocalCluster)
    yield group
    group.cleanup()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """``redis+cluster://`` URL of the session's cluster, every master emptied first."""
    redis_cluster.wait_ok()
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """One local Sentinel group (1 master, 1 replica, 3 sentinels) for the whole run."""
    group = _start(LocalSentinel().start)
    assert isinstance(group, LocalSentinel)
    yield group
    group.cleanup()


def main(argv: list[str]) -> int:
    """``python -m tests.cluster [cluster|sentinel]``: start one, print its URL, wait."""
    kind = argv[0] if argv else "cluster"
    group: LocalCluster | LocalSentinel = (
        LocalSentinel().start() if kind == "sentinel" else LocalCluster().start()
    )
    print(f"FLASHSALE_REDIS_URL={group.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        group.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
