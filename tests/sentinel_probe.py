"""Where do a forced Sentinel failover's lost orders go? A timeline, measured.

``python -m tests.sentinel_probe [--min-replicas]`` starts a local Sentinel
group (tests/cluster.py), sends orders from 4 threads, forces ``SENTINEL
FAILOVER`` and records, on one monotonic clock:

- every sentinel event (``+selected-slave``, ``+promoted-slave``,
  ``+switch-master``, ``+convert-to-slave``...), from a pub/sub subscription;
- each data node's role, polled every 5 ms;
- each acknowledged order (ticket and time);
- the old master's stream, read every 20 ms while it still says ``master``
  (a demoted master resyncs from the new one and forgets what it took).

It prints the timeline and, for the acknowledged orders missing from the new
master, when they were acknowledged relative to the promotion and whether the
old master had them. With ``--min-replicas`` the master runs with
``min-replicas-to-write 1`` and ``min-replicas-max-lag 1``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any

from .cluster import LocalSentinel
from .helpers import build_app


def run(group: LocalSentinel, *, seconds_after: float = 2.0, **config: Any) -> dict[str, Any]:
    """One forced failover under load; the measured timeline as a dict."""
    t0 = time.monotonic()

    def now() -> float:
        return round(time.monotonic() - t0, 3)

    app, flashsale = build_app(
        group.url, FLASHSALE_REDIS_SOCKET_TIMEOUT=0.5, FLASHSALE_BREAKER_RESET_TIMEOUT=0.5, **config
    )
    with app.app_context():
        flashsale.create_sale("hot", stock=100_000, per_user_limit=1)
    old_port = group.current_master()
    old = group.node_on(old_port)
    new = group.replica if old is group.master else group.master  # (one replica)
    events: list[tuple[float, str, str]] = []
    roles: dict[int, list[tuple[float, str]]] = {old.port: [], new.port: []}
    acks: list[tuple[float, str]] = []
    codes: Counter[str] = Counter()
    old_stream: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def listen() -> None:
        pubsub = group.sentinels[0].client(socket_timeout=None).pubsub()
        pubsub.psubscribe("*")
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "pmessage":
                events.append((now(), message["channel"], str(message["data"])[:90]))
        pubsub.close()

    def watch_roles() -> None:
        clients = {old.port: old.client(), new.port: new.client()}
        while not stop.is_set():
            for port, client in clients.items():
                try:
                    role = str(client.execute_command("ROLE")[0])
                except Exception as exc:
                    role = type(exc).__name__
                if not roles[port] or roles[port][-1][1] != role:
                    roles[port].append((now(), role))
            time.sleep(0.005)

    def snapshot_old() -> None:
        client = old.client()
        while not stop.is_set():
            try:
                if client.execute_command("ROLE")[0] != "master":
                    return
                tickets = {f["t"] for _, f in client.xrange("flashsale:{hot}:orders")}
                if client.execute_command("ROLE")[0] == "master":  # still: keep it
                    old_stream.update(tickets)
            except Exception:
                pass
            time.sleep(0.02)

    def buyer(n: int) -> None:
        http = app.test_client()
        i = 0
        while not stop.is_set():
            i += 1
            r = http.post("/api/flash-sales/hot/order", headers={"X-User": f"b{n}-{i}"}, json={})
            with lock:
                code = str(r.status_code)
                if r.status_code >= 400:
                    code += " " + str((r.json or {}).get("code"))
                codes[code] += 1
                if r.status_code == 202:
                    acks.append((now(), r.json["ticket_id"]))  # type: ignore[index]
            time.sleep(0.01)

    helpers = [threading.Thread(target=f) for f in (listen, watch_roles, snapshot_old)]
    buyers = [threading.Thread(target=buyer, args=(n,)) for n in range(4)]
    for t in (*helpers, *buyers):
        t.start()
    time.sleep(0.5)
    failover_at = now()
    group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", group.service)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and group.current_master() == old_port:
        time.sleep(0.02)
    switch_seen = now()
    time.sleep(seconds_after)
    stop.set()
    for t in (*helpers, *buyers):
        t.join(10)
    master = group.node_on(group.current_master()).client()
    stream = {f["t"] for _, f in master.xrange("flashsale:{hot}:orders")}
    lost = [(t, ticket) for t, ticket in acks if ticket not in stream]
    promoted = next((t for t, role in roles[new.port] if role == "master"), None)
    demoted = next((t for t, role in roles[old.port] if role != "master"), None)
    return {
        "failover_sent": failover_at,
        "replica_promoted": promoted,
        "switch_seen_by_client_poll": switch_seen,
        "old_master_demoted": demoted,
        "events": events,
        "roles": roles,
        "codes": dict(codes),
        "acknowledged": len(acks),
        "acknowledged_after_promotion": sum(1 for t, _ in acks if promoted and t >= promoted),
        "lost": len(lost),
        "lost_first_last": (lost[0][0], lost[-1][0]) if lost else None,
        "lost_before_promotion": sum(1 for t, _ in lost if promoted and t < promoted),
        "lost_on_old_master": sum(1 for _, ticket in lost if ticket in old_stream),
        "first_ack_after_promotion": next((t for t, _ in acks if promoted and t > promoted), None),
        "last_ack": acks[-1][0] if acks else None,
    }


def main(argv: list[str]) -> int:
    """Start a group, run once, print the timeline."""
    group = LocalSentinel(min_replicas=1 if "--min-replicas" in argv else 0).start()
    try:
        after = float(argv[argv.index("--after") + 1]) if "--after" in argv else 2.0
        result = run(group, seconds_after=after)
    finally:
        group.cleanup()
    for t, channel, data in result.pop("events"):
        print(f"{t:8.3f}  sentinel {channel:24} {data}")
    for port, changes in result.pop("roles").items():
        print(f"node {port}: " + ", ".join(f"{role}@{t}" for t, role in changes))
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
