"""Whether the background services answer, for the banner every page shows when not."""

from __future__ import annotations

import time

import redis
from django.conf import settings

CHECK_EVERY_SECONDS = 3.0
_last: tuple[float, bool] = (0.0, True)


def redis_ok() -> bool:
    """Redis answers a PING (checked at most every few seconds per process)."""
    global _last
    checked_at, answer = _last
    now = time.monotonic()
    if now - checked_at < CHECK_EVERY_SECONDS:
        return answer
    try:
        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=0.5,
                                      socket_connect_timeout=0.5)
        answer = bool(client.ping())
        client.close()
    except (redis.exceptions.RedisError, OSError):
        answer = False
    _last = (now, answer)
    return answer


def forget() -> None:
    global _last
    _last = (0.0, True)


def services_status(request: object) -> dict[str, bool]:
    """Template context: ``redis_down`` drives the banner in base.html."""
    return {"redis_down": not redis_ok()}
