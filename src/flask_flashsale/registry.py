"""Worker registry: which workers are alive, for ``flask flashsale status``.

Each worker keeps a small hash ``<prefix>:worker:<name>`` that expires unless
its heartbeat renews it, and adds its name to the set ``<prefix>:workers``.
Liveness is the key's expiry in Redis, so no worker's clock is trusted.

An autoscaling supervisor (``flask flashsale worker --autoscale``) registers
the same way under ``<prefix>:supervisor:<name>`` and ``<prefix>:supervisors``;
its hash lists the worker processes it runs, which is where a worker's
:attr:`WorkerInfo.parent` comes from. Supervisors run no orders, so they are
not counted among the workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .keys import Keys
from .models import from_millis

if TYPE_CHECKING:
    from collections.abc import Callable

    from .protocols import RedisClient


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a live worker last reported in its heartbeat."""

    name: str
    host: str
    pid: int
    #: Consumer threads in the worker process.
    concurrency: int
    #: ``busy`` (an order in hand) or ``idle``.
    state: str
    started_at: datetime | None
    last_beat: datetime | None
    #: Orders settled by this worker: confirmed + failed + found cancelled.
    processed: int
    confirmed: int
    failed: int
    #: Name of the live supervisor that runs this worker (``--autoscale``), else ``None``.
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the CLI."""
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "concurrency": self.concurrency,
            "state": self.state,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "last_beat": None if self.last_beat is None else self.last_beat.isoformat(),
            "processed": self.processed,
            "confirmed": self.confirmed,
            "failed": self.failed,
            "parent": self.parent,
        }


@dataclass(frozen=True, slots=True)
class SupervisedWorker:
    """One worker process of a supervisor, as the supervisor last reported it."""

    name: str
    pid: int
    #: ``running``, or ``stopping`` (sent SIGTERM, finishing the order in hand).
    state: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation."""
        return {"name": self.name, "pid": self.pid, "state": self.state}


@dataclass(frozen=True, slots=True)
class SupervisorInfo:
    """What a live autoscaling supervisor last reported in its heartbeat."""

    name: str
    host: str
    pid: int
    #: The ``--autoscale MIN,MAX`` range.
    minimum: int
    maximum: int
    #: Worker processes it wants now (between ``minimum`` and ``maximum``).
    target: int
    #: Lag over every sale at its last sample (``None``: Redis could not be read).
    lag: int | None
    #: ``running`` or ``stopping``.
    state: str
    started_at: datetime | None
    last_beat: datetime | None
    #: Its worker processes, oldest first.
    children: tuple[SupervisedWorker, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready representation used by the CLI."""
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "min": self.minimum,
            "max": self.maximum,
            "target": self.target,
            "lag": self.lag,
            "state": self.state,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "last_beat": None if self.last_beat is None else self.last_beat.isoformat(),
            "children": [c.to_dict() for c in self.children],
        }


def _beat(
    client: RedisClient, index: str, key: str, name: str, fields: dict[str, Any], ttl: float
) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping=fields)
    pipe.pexpire(key, max(1, int(ttl * 1000)))
    pipe.sadd(index, name)
    pipe.execute()


def _unregister(client: RedisClient, index: str, key: str, name: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.delete(key)
    pipe.srem(index, name)
    pipe.execute()


def _live(
    client: RedisClient, index: str, key: Callable[[str], str]
) -> list[tuple[str, dict[str, str]]]:
    """``(name, hash)`` of every entry of ``index`` whose hash has not expired; forgets the rest."""
    names = sorted(client.smembers(index))
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(key(name))
    out, gone = [], []
    for name, data in zip(names, pipe.execute(), strict=True):
        if data:
            out.append((name, data))
        else:
            gone.append(name)
    if gone:
        client.srem(index, *gone)
    return out


def _when(data: dict[str, str], field: str) -> datetime | None:
    return from_millis(int(data[field])) if data.get(field) else None


def beat(client: RedisClient, keys: Keys, name: str, fields: dict[str, Any], ttl: float) -> None:
    """Record a heartbeat: the worker counts as alive for ``ttl`` seconds."""
    _beat(client, keys.workers(), keys.worker(name), name, fields, ttl)


def unregister(client: RedisClient, keys: Keys, name: str) -> None:
    """Remove a stopping worker from the registry."""
    _unregister(client, keys.workers(), keys.worker(name), name)


def beat_supervisor(
    client: RedisClient,
    keys: Keys,
    name: str,
    fields: dict[str, Any],
    children: list[SupervisedWorker],
    ttl: float,
) -> None:
    """Record a supervisor's heartbeat and its worker processes, alive for ``ttl`` seconds."""
    fields = {**fields, "children": json.dumps([c.to_dict() for c in children])}
    _beat(client, keys.supervisors(), keys.supervisor(name), name, fields, ttl)


def unregister_supervisor(client: RedisClient, keys: Keys, name: str) -> None:
    """Remove a stopped supervisor from the registry."""
    _unregister(client, keys.supervisors(), keys.supervisor(name), name)


def live_supervisors(client: RedisClient, keys: Keys) -> list[SupervisorInfo]:
    """Every supervisor whose heartbeat has not expired, by name; forgets the others."""
    out = []
    for name, data in _live(client, keys.supervisors(), keys.supervisor):
        children = tuple(
            SupervisedWorker(str(c["name"]), int(c["pid"]), str(c["state"]))
            for c in json.loads(data.get("children") or "[]")
        )
        out.append(
            SupervisorInfo(
                name=name,
                host=data.get("host", ""),
                pid=int(data.get("pid") or 0),
                minimum=int(data.get("min") or 0),
                maximum=int(data.get("max") or 0),
                target=int(data.get("target") or 0),
                lag=int(data["lag"]) if data.get("lag", "") != "" else None,
                state=data.get("state", ""),
                started_at=_when(data, "started"),
                last_beat=_when(data, "beat"),
                children=children,
            )
        )
    return out


def live_workers(
    client: RedisClient, keys: Keys, supervisors: list[SupervisorInfo] | None = None
) -> list[WorkerInfo]:
    """Every worker whose heartbeat has not expired, by name; forgets the others.

    A worker run by a live supervisor has its name as :attr:`WorkerInfo.parent`
    (``supervisors``: from :func:`live_supervisors`, read here when not given).
    """
    entries = _live(client, keys.workers(), keys.worker)
    if not entries:
        return []
    if supervisors is None:
        supervisors = live_supervisors(client, keys)
    parents = {c.name: s.name for s in supervisors for c in s.children}
    return [
        WorkerInfo(
            name=name,
            host=data.get("host", ""),
            pid=int(data.get("pid") or 0),
            concurrency=int(data.get("concurrency") or 1),
            state=data.get("state", ""),
            started_at=_when(data, "started"),
            last_beat=_when(data, "beat"),
            processed=int(data.get("processed") or 0),
            confirmed=int(data.get("confirmed") or 0),
            failed=int(data.get("failed") or 0),
            parent=parents.get(name),
        )
        for name, data in entries
    ]
