"""Redis unreachable: the cache degrades to "nothing cached", every page shows a banner,
and nothing fails. A private redis-server is started and stopped here, so the Redis the
rest of the suite uses is never touched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from tests.live.processes import PrivateRedis
from xenweb import health
from xenweb.cache import SoftRedisCache

pytestmark = pytest.mark.django_db


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


def test_cache_degrades_while_redis_is_down_and_recovers(private_redis: PrivateRedis) -> None:
    cache = SoftRedisCache(f"{private_redis.url}/0", {"OPTIONS": {"socket_connect_timeout": 0.5,
                                                           "socket_timeout": 1}})
    cache.set("k", "v")
    assert cache.get("k") == "v"
    private_redis.stop()
    assert cache.get("k", "fallback") == "fallback"
    cache.set("k", "w")  # no error: nothing is cached meanwhile
    assert cache.add("n", 1) is False and cache.get_many(["k"]) == {}
    private_redis.start()
    cache.set("k", "x")
    assert cache.get("k") == "x"


def test_pages_show_a_banner_while_redis_is_down(admin_client: Client,
                                                 private_redis: PrivateRedis) -> None:
    with override_settings(CELERY_BROKER_URL=f"{private_redis.url}/0"):
        health.forget()
        page = admin_client.get("/").content.decode()
        assert 'id="services-banner"' not in page
        private_redis.stop()
        health.forget()
        page = admin_client.get("/").content.decode()
        assert 'id="services-banner"' in page and "Nothing is lost" in page
        assert admin_client.get("/api/v1/guests/").status_code == 200
        private_redis.start()
        health.forget()
        assert 'id="services-banner"' not in admin_client.get("/").content.decode()
    health.forget()
