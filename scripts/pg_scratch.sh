#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite, on 127.0.0.1 only, in a folder of its own.
#   scripts/pg_scratch.sh start DIR [--durable]
#                                     initdb + start; prints the SQLAlchemy URL of its database
#                                     (--durable: fsync on, as a real server; for benchmarks)
#   scripts/pg_scratch.sh stop DIR    stop it (immediate) and delete DIR
# Exits 3 when no PostgreSQL server binaries are installed. Trust authentication: nothing but
# 127.0.0.1 can reach it, and it holds only test data. initdb refuses to run as root: as root the
# cluster runs as the `postgres` user (or `nobody`).
set -euo pipefail

bindir() {
    local pg_ctl
    pg_ctl=$(command -v pg_ctl 2>/dev/null || true)
    if [ -z "$pg_ctl" ]; then
        pg_ctl=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    [ -n "$pg_ctl" ] || return 1
    dirname "$(readlink -f "$pg_ctl")"
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        local user=postgres
        id -u "$user" >/dev/null 2>&1 || user=nobody
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir=$1 bin port user sync="-c fsync=off -c full_page_writes=off"
    [ "${2:-}" = "--durable" ] && sync=""
    bin=$(bindir) || { echo "pg_scratch: no PostgreSQL server (pg_ctl) installed" >&2; exit 3; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then
        user=postgres
        id -u "$user" >/dev/null 2>&1 || user=nobody
        chown "$user" "$dir"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    # fsync off unless --durable: a scratch cluster for tests (the job log's own durability is
    # SQLite's or the production server's business, not what these tests check).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $port -k $dir $sync -c max_connections=50" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    if ! as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres spinenode_test; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
        exit 1
    fi
    echo "$port" >"$dir/port"
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/spinenode_test"
}

stop() {
    local dir=$1 bin
    [ -d "$dir/data" ] || { rm -rf "$dir"; return 0; }
    bin=$(bindir) || exit 3
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start "${2:?usage: $0 start DIR [--durable]}" "${3:-}" ;;
    stop) stop "${2:?usage: $0 stop DIR}" ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
