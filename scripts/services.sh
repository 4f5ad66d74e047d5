#!/usr/bin/env bash
# Start the Postgres and Redis the integration tests use, when they are not running.
# On a machine without them the integration tests skip (outside CI) with the reason.
set -u
PGHOST=127.0.0.1
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h "$PGHOST" -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -V | tail -1)
    echo "starting Postgres $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || echo "warning: could not start Postgres" >&2
    for _ in $(seq 1 30); do pg_isready -q -h "$PGHOST" -p 5432 && break; sleep 0.5; done
  else
    echo "warning: Postgres is not running and pg_ctlcluster is not available" >&2
  fi
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  else
    echo "warning: Redis is not running and redis-server is not installed" >&2
  fi
fi
pg_isready -h "$PGHOST" -p 5432 2>/dev/null || true
redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null || true
exit 0
