from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from xenweb.accounts.roles import ADMIN, OPERATOR, VIEWER, set_role, sync_roles
from xenweb.appliance import setup_state
from xenweb.appliance.models import ApplianceSettings, forget_settings

PASSWORD = "correct-horse-battery-staple"

# A test using one of these boots real machines or a browser: its subject is the hypervisor
# or the page, not the database, so CI's PostgreSQL pass leaves it to the SQLite pass
# (`-m "not hypervisor"`, see the Makefile).
HYPERVISOR_FIXTURES = frozenset({"lab_hosts", "xen_hosts", "browser", "appliance_image"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HYPERVISOR_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hypervisor)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """The setup flag and appliance settings are cached per process; the database is not."""
    setup_state.forget()
    forget_settings()
    yield
    setup_state.forget()
    forget_settings()


@pytest.fixture
def appliance_ready(db: Any) -> ApplianceSettings:
    """An appliance whose first-boot setup is done."""
    row = ApplianceSettings.load()
    row.setup_completed_at = timezone.now()
    row.save()
    return row


def make_user(username: str, role: str) -> Any:
    sync_roles()
    user = get_user_model().objects.create_user(username, password=PASSWORD)
    set_role(user, role)
    return user


@pytest.fixture
def admin_user(appliance_ready: Any) -> Any:
    return make_user("alice-admin", ADMIN)


@pytest.fixture
def operator_user(appliance_ready: Any) -> Any:
    return make_user("oscar-operator", OPERATOR)


@pytest.fixture
def viewer_user(appliance_ready: Any) -> Any:
    return make_user("vera-viewer", VIEWER)


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    return logged_in(admin_user)


@pytest.fixture
def operator_client(operator_user: Any) -> Client:
    return logged_in(operator_user)


@pytest.fixture
def viewer_client(viewer_user: Any) -> Client:
    return logged_in(viewer_user)


@pytest.fixture
def admin_client_tx(transactional_db: Any) -> Client:
    """An administrator's client whose session is committed (for websockets and workers)."""
    row = ApplianceSettings.load()
    row.setup_completed_at = timezone.now()
    row.save()
    return logged_in(make_user("alice-admin", ADMIN))


@pytest.fixture
def demo(admin_user: Any) -> Iterator[Any]:
    """The embedded demo host (libvirt's test driver), enrolled: a fresh copy for each test,
    and none of its changes left for the next one."""
    from hosts.services import enrol_host
    from hosts.virt import demo_uri
    from hosts.virt.connection import drop_connection

    drop_connection(demo_uri())
    yield enrol_host(name="demo", uri=demo_uri(), user=admin_user)
    drop_connection(demo_uri())


@pytest.fixture(scope="session")
def web_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    """The web process (uvicorn, as the Procfile runs it) on a free port, for the session."""
    from tests.live.processes import WebServer

    server = WebServer()
    yield server
    server.stop()
