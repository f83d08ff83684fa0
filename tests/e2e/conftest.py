"""The browser suite: Debian's chromium driven by Playwright against a real daphne server,
a real Celery worker and the lab's libvirt/QEMU hosts."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import lab_hosts  # noqa: F401 (the lab's session fixture, shared)
from tests.live.conftest import _flush_test_redis
from tests.live.processes import CeleryWorker, WebServer

CHROMIUM = Path(os.environ.get("XENWEB_CHROMIUM", "/usr/bin/chromium"))
# Screenshots of the main pages go here when set (`make screenshots`).
SCREENSHOT_DIR = os.environ.get("XENWEB_SCREENSHOT_DIR", "")
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def e2e_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WebServer]:
    """A daphne of its own: the wizard needs a process that has not yet seen setup done."""
    server = WebServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def e2e_worker(django_db_setup: Any, django_db_blocker: Any) -> Iterator[CeleryWorker]:
    """A worker for this module only: it is gone before the live suite kills its own."""
    _flush_test_redis()
    worker = CeleryWorker()
    yield worker
    worker.stop()


@pytest.fixture
def browser(transactional_db: Any) -> Iterator[Any]:
    """A fresh chromium profile per test. Playwright's sync API keeps an event loop running
    in this thread, where Django refuses synchronous queries: the browser is closed before
    the test database is flushed (hence the transactional_db dependency)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no system chromium at {CHROMIUM} (scripts/bootstrap.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tempfile.mkdtemp(prefix="xenweb-chromium-")
    with sync_api.sync_playwright() as playwright:
        # A persistent context is the only way to pass an explicit, empty user data dir.
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
