#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs the whole suite:
# ruff (lint + format), mypy --strict on the four packages, the import contracts, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dcmdump >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need_apt+=(dicom3tools)
command -v Orthanc >/dev/null 2>&1 || need_apt+=(orthanc)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "installing with apt: ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    # Debian starts an Orthanc service on install; the tests start their own on loopback.
    $sudo_cmd service orthanc stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# torch is pinned in the same command as everything that depends on it, so pip takes the CPU build.
.venv/bin/pip install -q torch==2.13.0 -e '.[learned,dev]'

export TCP_NODELAY=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
