#!/usr/bin/env bash
# Make PostgreSQL (127.0.0.1:5432, database `test`) and Redis (127.0.0.1:6379) reachable for
# the test suite: start them when down, install them when missing (as root), otherwise stop
# with a message naming what is missing. Tests never skip for a missing service.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432

have() { command -v "$1" >/dev/null 2>&1; }
as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if as_root && have apt-get; then
    echo "services: installing $*"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "services: $* missing and cannot be installed (need root and apt-get); install it and re-run" >&2
    exit 1
  fi
}

ensure_postgres() {
  have pg_isready || apt_install postgresql postgresql-client
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
  fi
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || { echo "services: PostgreSQL is not reachable at $PG_HOST:$PG_PORT" >&2; exit 1; }
  if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "select 1" test >/dev/null 2>&1; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -tAc "create database test" >/dev/null 2>&1 \
      || su postgres -c "createdb test" 2>/dev/null || true
  fi
}

ensure_redis() {
  have redis-server || apt_install redis-server
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "services: Redis is not reachable at 127.0.0.1:6379" >&2; exit 1; }
}

if [ -n "${KILN_TEST_PG_URL:-}" ]; then echo "services: using KILN_TEST_PG_URL"; else ensure_postgres; fi
if [ -n "${KILN_TEST_REDIS_URL:-}" ]; then echo "services: using KILN_TEST_REDIS_URL"; else ensure_redis; fi
echo "services: PostgreSQL and Redis are up"
