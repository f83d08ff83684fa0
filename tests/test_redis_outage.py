"""Redis unreachable: the cache degrades to "nothing cached", every page shows a banner,
and nothing fails. A private redis-server is started and stopped here, so the Redis the
rest of the suite uses is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client, override_settings

from xenweb import health
from xenweb.cache import SoftRedisCache

pytestmark = pytest.mark.django_db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp, self.proc = _free_port(), tmp, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_cache_degrades_while_redis_is_down_and_recovers(private_redis: PrivateRedis) -> None:
    cache = SoftRedisCache(private_redis.url, {"OPTIONS": {"socket_connect_timeout": 0.5,
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
    with override_settings(CELERY_BROKER_URL=private_redis.url):
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
