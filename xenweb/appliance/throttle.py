"""An atomic attempt counter in Redis (the cache's server, with its key prefix).

Each attempt is counted *before* it is evaluated, in one MULTI/EXEC transaction (SET NX
with the window's expiry, then INCR): however many requests arrive at once, only `limit`
of them get a number within the limit, and the rest are refused unevaluated. A get-then-set
let every parallel request read the same old count.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class ThrottleUnavailable(Exception):
    """Redis did not answer: the attempt cannot be counted, so it is not evaluated."""


def _client_and_key(name: str) -> tuple[object, str]:
    key = cache.make_and_validate_key(name)
    # Django's Redis cache keeps its redis-py client behind `_cache`; its INCR is an
    # EXISTS-then-INCR pair, which is why the counter talks to the client itself.
    return cache._cache.get_client(key, write=True), key  # type: ignore[attr-defined]


def take_attempt(name: str, *, limit: int, window_seconds: int) -> bool:
    """Count one attempt under `name`; True while at most `limit` were taken in the window
    (which starts with the first attempt). Raises ThrottleUnavailable without Redis."""
    try:
        client, key = _client_and_key(name)
        pipe = client.pipeline(transaction=True)  # type: ignore[attr-defined]
        pipe.set(key, 0, ex=window_seconds, nx=True)
        pipe.incr(key)
        _, count = pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("attempt counter %s unavailable: %s", name, exc)
        raise ThrottleUnavailable(str(exc)) from exc
    return int(count) <= limit


def reset(name: str) -> None:
    cache.delete(name)
