#!/usr/bin/env bash
# Start a local Redis Cluster (3 masters + 3 replicas) or Sentinel group
# (1 master, 1 replica, 3 sentinels) on free ports of 127.0.0.1, print its
# FLASHSALE_REDIS_URL, and stop every process on Ctrl-C. No containers.
#   scripts/redis-cluster.sh [cluster|sentinel]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m tests.cluster "${1:-cluster}"
