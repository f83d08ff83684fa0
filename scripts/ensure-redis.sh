#!/usr/bin/env bash
# Makes sure a Redis server answers on ${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}
# (when those are unset, the host and port of REDIS_URL, as the appliance uses it).
# When none does, starts one in the background (no persistence), with its log and pid file
# in ${XENWEB_DATA_DIR:-./var}/redis/, and waits until it answers (about 10 s at most).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

url_host="" url_port=""
if [[ "${REDIS_URL:-}" =~ ^rediss?://([^@/]*@)?(\[([^]/]+)\]|([^:/]+))(:([0-9]+))? ]]; then
    url_host="${BASH_REMATCH[3]}${BASH_REMATCH[4]}"
    url_port="${BASH_REMATCH[6]}"
fi
HOST="${REDIS_HOST:-${url_host:-127.0.0.1}}"
PORT="${REDIS_PORT:-${url_port:-6379}}"
DATA_DIR="${XENWEB_DATA_DIR:-./var}"

log() { printf '[ensure-redis] %s\n' "$*"; }
die() {
    printf '[ensure-redis] ERROR: %s\n' "$*" >&2
    exit 1
}

for tool in redis-cli redis-server; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: run scripts/bootstrap.sh (Debian package redis-server)"
done

answers() {
    local reply
    reply="$(redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null || true)"
    # A server that wants a password still answers, with NOAUTH.
    [[ "$reply" == PONG || "$reply" == *NOAUTH* ]]
}

if answers; then
    log "Redis answers on $HOST:$PORT"
    exit 0
fi

case "$HOST" in
127.0.0.1 | localhost | ::1) ;;
*) die "nothing answers on $HOST:$PORT, and only a local Redis can be started here" ;;
esac

mkdir -p "$DATA_DIR/redis"
REDIS_DIR="$(cd "$DATA_DIR/redis" && pwd)"
bind=(127.0.0.1)
[[ "$HOST" == ::1 ]] && bind+=(::1)
log "starting redis-server on ${bind[*]} port $PORT (log: $REDIS_DIR/redis.log)"
redis-server --daemonize yes --bind "${bind[@]}" --port "$PORT" --save "" --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --pidfile "$REDIS_DIR/redis.pid" ||
    die "redis-server did not start; see $REDIS_DIR/redis.log"

for _ in $(seq 50); do
    if answers; then
        log "Redis answers on $HOST:$PORT"
        exit 0
    fi
    sleep 0.2
done

printf '[ensure-redis] ERROR: Redis started but does not answer on %s:%s after 10 s.\n' \
    "$HOST" "$PORT" >&2
if [[ -f "$REDIS_DIR/redis.log" ]]; then
    printf '[ensure-redis] last lines of %s:\n' "$REDIS_DIR/redis.log" >&2
    tail -n 20 "$REDIS_DIR/redis.log" >&2
fi
exit 1
