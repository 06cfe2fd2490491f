"""Worker registry: which workers are alive, for ``flask flashsale status``.

Each worker keeps a small hash ``<prefix>:worker:<name>`` that expires unless
its heartbeat renews it, and adds its name to the set ``<prefix>:workers``.
Liveness is the key's expiry in Redis, so no worker's clock is trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .keys import Keys
from .models import from_millis


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
        }


def beat(client: Any, keys: Keys, name: str, fields: dict[str, Any], ttl: float) -> None:
    """Record a heartbeat: the worker counts as alive for ``ttl`` seconds."""
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.worker(name), mapping=fields)
    pipe.pexpire(keys.worker(name), max(1, int(ttl * 1000)))
    pipe.sadd(keys.workers(), name)
    pipe.execute()


def unregister(client: Any, keys: Keys, name: str) -> None:
    """Remove a stopping worker from the registry."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.worker(name))
    pipe.srem(keys.workers(), name)
    pipe.execute()


def live_workers(client: Any, keys: Keys) -> list[WorkerInfo]:
    """Every worker whose heartbeat has not expired, by name; forgets the others."""
    names = sorted(client.smembers(keys.workers()))
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
    out, gone = [], []
    for name, data in zip(names, pipe.execute(), strict=True):
        if not data:
            gone.append(name)
            continue
        out.append(
            WorkerInfo(
                name=name,
                host=data.get("host", ""),
                pid=int(data.get("pid") or 0),
                concurrency=int(data.get("concurrency") or 1),
                state=data.get("state", ""),
                started_at=from_millis(int(data["started"])) if data.get("started") else None,
                last_beat=from_millis(int(data["beat"])) if data.get("beat") else None,
                processed=int(data.get("processed") or 0),
                confirmed=int(data.get("confirmed") or 0),
                failed=int(data.get("failed") or 0),
            )
        )
    if gone:
        client.srem(keys.workers(), *gone)
    return out
