#!/usr/bin/env bash
# Makes sure PostgreSQL answers on ${PGHOST:-127.0.0.1}:${PGPORT:-5432} for the PostgreSQL
# test run. When it does not and Debian's pg_ctlcluster is there, starts the local cluster
# and waits until it answers (about 20 s at most).
set -euo pipefail

HOST="${PGHOST:-127.0.0.1}"
PORT="${PGPORT:-5432}"

log() { printf '[ensure-postgres] %s\n' "$*"; }
die() {
    printf '[ensure-postgres] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v pg_isready >/dev/null 2>&1 ||
    die "pg_isready not found: install PostgreSQL (Debian: postgresql) or unset TEST_POSTGRES"

answers() { pg_isready -q -h "$HOST" -p "$PORT" >/dev/null 2>&1; }

if answers; then
    log "PostgreSQL answers on $HOST:$PORT"
    exit 0
fi

command -v pg_ctlcluster >/dev/null 2>&1 ||
    die "nothing answers on $HOST:$PORT and pg_ctlcluster is not there to start PostgreSQL"
[[ -d /etc/postgresql ]] || die "no PostgreSQL cluster in /etc/postgresql"

# Debian's layout: /etc/postgresql/<version>/<cluster>; the newest version's "main".
version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)"
[[ -n "$version" ]] || die "no PostgreSQL cluster in /etc/postgresql"
log "starting PostgreSQL $version/main"
sudo=()
if ((EUID != 0)) && command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
fi
"${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
    die "pg_ctlcluster $version main start failed"

for _ in $(seq 100); do
    if answers; then
        log "PostgreSQL answers on $HOST:$PORT"
        exit 0
    fi
    sleep 0.2
done
die "PostgreSQL $version/main was started but does not answer on $HOST:$PORT after 20 s"
