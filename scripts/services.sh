#!/usr/bin/env bash
# Make sure the services the test suite needs are available.
#
#   scripts/services.sh ensure
#
# Redis: by default the suite starts its own throwaway redis-server on a free
# port (tests/redis_dbs.py) and never touches the machine's Redis, so this
# only makes sure the redis-server program is installed (with apt-get when
# run as root). With FKD_TEST_REDIS_DBS set (the databases the suite may use
# on an existing server), it checks that the server at FKD_TEST_REDIS_URL
# (default redis://127.0.0.1:6379) answers, and starts nothing.
# memcached, redis-cli (Redis Cluster creation) and Debian's chromium and
# chromium-driver (the operator page's browser test) are installed the same way:
# the suite starts its own memcached, cluster and sentinels (tests/servers.py).
# PostgreSQL is optional: a stopped local cluster is started, but PostgreSQL is
# never installed automatically; if it is missing, a message says which tests
# will fail and the script still exits 0.
#
# Overrides (for testing this script without touching the real services):
#   FKD_PG_HOST (127.0.0.1)  FKD_PG_PORT (5432)  PGUSER (postgres)  PGDATABASE (test)
set -euo pipefail

# host and port of FKD_TEST_REDIS_URL (redis://[user:pass@]host:port[/db])
REDIS_URL=${FKD_TEST_REDIS_URL:-redis://127.0.0.1:6379}
_hostport=${REDIS_URL#*://}
_hostport=${_hostport##*@}
_hostport=${_hostport%%/*}
REDIS_HOST=${_hostport%%:*}
REDIS_PORT=${_hostport##*:}
[[ $REDIS_PORT == "$REDIS_HOST" ]] && REDIS_PORT=6379
PG_HOST=${FKD_PG_HOST:-127.0.0.1}
PG_PORT=${FKD_PG_PORT:-5432}
PG_USER=${PGUSER:-postgres}
PG_DB=${PGDATABASE:-test}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi

have() { command -v "$1" >/dev/null 2>&1; }
log() { echo "services: $*" >&2; }

is_local() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

# --- Redis ------------------------------------------------------------------

redis_ping() {
    if have redis-cli; then
        [[ $(timeout 2 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
        return
    fi
    if "$PYTHON" -c 'import redis' 2>/dev/null; then
        timeout 3 "$PYTHON" - "$REDIS_HOST" "$REDIS_PORT" <<'PY' 2>/dev/null
import sys, redis
redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=1,
            socket_connect_timeout=1).ping()
PY
        return
    fi
    # Last resort: speak RESP over bash's /dev/tcp.
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r -t 1 line <&3 && [[ $line == "+PONG"* ]]
    ' "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null
}

# install_pkg PACKAGE: apt-get install it when run as root (apt-get update once per run).
APT_UPDATED=
install_pkg() {
    if [[ $(id -u) -ne 0 ]] || ! have apt-get; then
        log "$1 is not installed and cannot be installed automatically"
        log "(need root and apt-get); install it with: apt-get install -y $1"
        return 1
    fi
    log "installing $1 with apt-get ..."
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    apt-get install -y -qq "$1" >/dev/null
}

install_redis() { install_pkg redis-server; }

ensure_redis() {
    if [[ -n ${FKD_TEST_REDIS_DBS:-} ]]; then
        # An existing server, named by the developer: check it, start nothing.
        if redis_ping; then
            echo "redis: ok ($REDIS_HOST:$REDIS_PORT, databases $FKD_TEST_REDIS_DBS)"
            return 0
        fi
        echo "redis: FAILED ($REDIS_HOST:$REDIS_PORT from FKD_TEST_REDIS_URL is not reachable)"
        return 1
    fi
    if have redis-server || install_redis; then
        echo "redis: ok (the suite starts its own throwaway redis-server on a free port)"
        return 0
    fi
    echo "redis: FAILED (redis-server is not installed: apt-get install -y redis-server)"
    return 1
}

# --- memcached, Redis Cluster and Sentinel ----------------------------------
# The suite starts its own throwaway servers on free loopback ports (tests/servers.py):
# memcached, a 6-node Redis Cluster (redis-server --cluster-enabled + redis-cli --cluster
# create) and a Sentinel topology (redis-server --sentinel). Only the programs are needed;
# a memcached or redis-sentinel service the OS packages start is never used.

ensure_servers() {
    local rc=0
    if have memcached || install_pkg memcached; then
        echo "memcached: ok (the suite starts its own throwaway memcached on a free port)"
    else
        echo "memcached: FAILED (not installed: apt-get install -y memcached); tests marked 'memcached' will fail"
        rc=1
    fi
    if have redis-cli || install_pkg redis-tools; then
        echo "redis-cli: ok (the suite creates its own Redis Cluster and Sentinel topology)"
    else
        echo "redis-cli: FAILED (not installed: apt-get install -y redis-tools); tests marked 'cluster' will fail"
        rc=1
    fi
    # The operator page's test drives Debian's headless Chromium through its chromedriver.
    if { have chromium || install_pkg chromium; } && { [[ -x /usr/bin/chromedriver ]] || install_pkg chromium-driver; }; then
        echo "chromium: ok (tests/test_operator_page.py drives it headless through /usr/bin/chromedriver)"
    else
        echo "chromium: FAILED (apt-get install -y chromium chromium-driver); tests/test_operator_page.py will fail"
        rc=1
    fi
    return $rc
}

# --- PostgreSQL -------------------------------------------------------------

pg_ready() {
    if have pg_isready; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
        return
    fi
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$PG_HOST" "$PG_PORT" 2>/dev/null
}

pg_missing() {
    echo "postgres: MISSING ($PG_HOST:$PG_PORT: $1)"
    echo "  tests marked 'postgres' will fail; everything else still runs."
    if pg_installed; then
        echo "  start it with: pg_ctlcluster <version> main start"
    else
        echo "  install it with: apt-get install -y postgresql"
    fi
    echo "  (or deselect those tests: make test PYTEST_ARGS='-m \"not postgres\"')"
}

start_pg() {
    is_local "$PG_HOST" || return 1
    have pg_ctlcluster && [[ -d /etc/postgresql ]] || return 1
    local ver
    for ver in $(ls /etc/postgresql); do
        [[ -d /etc/postgresql/$ver/main ]] || continue
        log "starting PostgreSQL cluster $ver/main"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start >&2 || true
    done
    for _ in $(seq 50); do
        pg_ready && return 0
        sleep 0.2
    done
    return 1
}

pg_installed() {
    have pg_ctlcluster || have postgres || compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

ensure_pg_database() {
    if ! have psql; then
        log "psql not found; not checking that database '$PG_DB' exists"
        return 0
    fi
    local out
    export PGCONNECT_TIMEOUT=3
    if [[ $(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -tAc \
            "select 1 from pg_database where datname = '$PG_DB'" 2>/dev/null) == 1 ]]; then
        return 0
    fi
    if out=$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
            -c "create database \"$PG_DB\"" 2>&1) || [[ $out == *"already exists"* ]]; then
        return 0
    fi
    log "could not create database '$PG_DB': $out"
    return 1
}

ensure_pg() {
    if ! pg_ready; then
        if ! pg_installed; then
            pg_missing "PostgreSQL is not installed"
            return 0
        fi
        if ! start_pg; then
            pg_missing "installed but not running, and could not be started"
            return 0
        fi
    fi
    if ensure_pg_database; then
        echo "postgres: ok ($PG_HOST:$PG_PORT, database $PG_DB)"
    else
        echo "postgres: MISSING database '$PG_DB' on $PG_HOST:$PG_PORT (server is up but creating it failed)"
        echo "  tests marked 'postgres' will fail; everything else still runs."
    fi
}

# --- main -------------------------------------------------------------------

case "${1:-}" in
    ensure)
        rc=0
        ensure_redis || rc=1
        ensure_servers || rc=1
        ensure_pg
        exit $rc
        ;;
    *)
        echo "usage: $0 ensure" >&2
        exit 2
        ;;
esac
