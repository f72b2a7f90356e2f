#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs the whole suite:
# ruff (lint + format), mypy --strict on the four packages, the import contracts, pytest.
# The job log's PostgreSQL cases run against a throwaway cluster on 127.0.0.1 (scripts/pg_scratch.sh),
# unless SPINENODE_TEST_POSTGRES_URL already names a scratch database.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dcmdump >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v Orthanc >/dev/null 2>&1 || need_apt+=(orthanc)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "installing with apt: ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts an Orthanc service on install; the tests start their own on loopback.
    $sudo_cmd service orthanc stop >/dev/null 2>&1 || true
    # Likewise PostgreSQL's own cluster: the tests start a throwaway one of their own.
    $sudo_cmd service postgresql stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# torch is pinned in the same command as everything that depends on it, so pip takes the CPU build.
.venv/bin/pip install -q torch==2.13.0 -e '.[learned,dev,postgres]'

export TCP_NODELAY=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports

if [ -z "${SPINENODE_TEST_POSTGRES_URL:-}" ]; then
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/spinenode-pg.XXXXXX")
    if pg_url=$(scripts/pg_scratch.sh start "$pg_dir"); then
        trap 'scripts/pg_scratch.sh stop "$pg_dir"' EXIT
        export SPINENODE_TEST_POSTGRES_URL="$pg_url"
        echo "PostgreSQL cases: throwaway cluster at ${pg_url}"
    else
        rm -rf "$pg_dir"
        echo "PostgreSQL cases: no cluster could be started, they are skipped"
    fi
fi
.venv/bin/python -m pytest "$@"
