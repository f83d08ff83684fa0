"""The Redis cache, degrading to "nothing cached" while Redis is unreachable, so that pages
and the API keep working (throttling and cached figures pause) instead of failing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
DOWN = (RedisConnectionError, RedisTimeoutError)


def _soft(default: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: RedisCacheClient, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except DOWN as exc:
                log.warning("cache unavailable (%s): %s skipped", exc, method.__name__)
                return default(*args, **kwargs)
        call.__name__ = method.__name__
        return call
    return wrap


class SoftRedisCacheClient(RedisCacheClient):
    add = _soft(lambda *a, **k: False)(RedisCacheClient.add)
    get = _soft(lambda key, default: default)(RedisCacheClient.get)
    set = _soft(lambda *a, **k: None)(RedisCacheClient.set)
    touch = _soft(lambda *a, **k: False)(RedisCacheClient.touch)
    delete = _soft(lambda *a, **k: False)(RedisCacheClient.delete)
    get_many = _soft(lambda *a, **k: {})(RedisCacheClient.get_many)
    has_key = _soft(lambda *a, **k: False)(RedisCacheClient.has_key)
    set_many = _soft(lambda *a, **k: [])(RedisCacheClient.set_many)
    delete_many = _soft(lambda *a, **k: None)(RedisCacheClient.delete_many)
    clear = _soft(lambda *a, **k: False)(RedisCacheClient.clear)

    def incr(self, key: Any, delta: int) -> Any:
        try:
            return super().incr(key, delta)
        except DOWN as exc:
            raise ValueError(f"cache unavailable: {exc}") from exc


class SoftRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SoftRedisCacheClient
