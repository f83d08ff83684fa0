from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from tests.live.processes import CeleryWorker


def _flush_test_redis() -> None:
    """Start from empty test queues and groups (the test run owns these Redis databases)."""
    for offset in range(3):
        url = f"{settings.REDIS_URL}/{settings.REDIS_DB_BASE + offset}"
        redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def live_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[CeleryWorker]:
    _flush_test_redis()
    worker = CeleryWorker()
    yield worker
    worker.stop()



