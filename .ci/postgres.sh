#!/usr/bin/env bash
# Install (if needed), start and prepare a local PostgreSQL for the backend tests and
# benchmarks, then print its URL on stdout (everything else goes to stderr):
#
#   TEST_DATABASE_URL="$(bash .ci/postgres.sh)" cargo test -p backend
#
# Idempotent, non-interactive, Debian packages only; must run as root. Creates the role
# dp3t (password dp3t, CREATEDB: each test creates and drops its own database), the
# database dp3t_test, and the role dp3t_app (password dp3t_app, no rights of its own: the
# least-privilege test grants it row access to a database that dp3t migrated).
# Test-only credentials; never use them for a real deployment.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs and starts PostgreSQL)"
  exit 1
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  log "installing PostgreSQL from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if [ -z "$version" ]; then
  log "no PostgreSQL version directory under /etc/postgresql"
  exit 1
fi
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$version main"; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  log "starting cluster $version/main"
  pg_ctlcluster "$version" main start >&2
fi
port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p "$port"; then break; fi
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p "$port" >&2

psql_admin() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }

if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'dp3t'")" != "1" ]; then
  log "creating role dp3t"
  psql_admin -c "CREATE ROLE dp3t LOGIN PASSWORD 'dp3t' CREATEDB"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'dp3t_app'")" != "1" ]; then
  log "creating role dp3t_app"
  psql_admin -c "CREATE ROLE dp3t_app LOGIN PASSWORD 'dp3t_app'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'dp3t_test'")" != "1" ]; then
  log "creating database dp3t_test"
  psql_admin -c "CREATE DATABASE dp3t_test OWNER dp3t"
fi

echo "postgres://dp3t:dp3t@127.0.0.1:${port}/dp3t_test"
