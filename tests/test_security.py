"""The security suite beyond authentication (tests/test_access.py): the viewer role changes
nothing anywhere, forms need their CSRF token, logins are throttled, and the production
settings send the headers a browser needs. Routes are generated from the URL conf."""

from __future__ import annotations

import re
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.test import Client

from guests.models import ConflictSet
from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt.demo import demo_uri
from tests.conftest import PASSWORD, logged_in
from tests.test_access import PUBLIC, all_paths
from xenweb.asgi import application
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.routing import websocket_urlpatterns
from xenweb.security import HEADER

pytestmark = pytest.mark.django_db

MUTATING = ("post", "put", "patch", "delete")
# A user's own session and credentials: every role may log out, change its own password
# and manage its own API token.
OWN_ACCOUNT = {"/accounts/logout/", "/accounts/password/", "/accounts/profile/token/",
               "/accounts/profile/token/revoke/"}
SETUP = "/setup/"


@pytest.fixture
def inventory(admin_user: Any) -> None:
    """Objects behind the generated paths' ids (1): the demo host with its guests, pools and
    volumes, a job and a conflict set, so a refusal is not just a missing object."""
    enrol_host(name="demo", uri=demo_uri(), user=None)
    Job.objects.create(kind="selftest", title="t")
    ConflictSet.objects.create(name="firewalls", labels=["fw"])


def mutating_routes() -> list[str]:
    return [p for p in all_paths()
            if p not in PUBLIC | OWN_ACCOUNT and not p.startswith(SETUP)]


def _snapshot() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()
            if m._meta.app_label in {"hosts", "guests", "storage", "jobs", "auth", "authtoken"}}


# The generated paths use id 1: the objects must get it on PostgreSQL too, whose
# sequences are not reset between tests unless asked.
@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_viewer_cannot_change_anything(inventory: None, viewer_user: Any) -> None:
    client = logged_in(viewer_user)
    before = _snapshot()
    done_before = AuditRecord.objects.filter(result="ok").count()
    failures = []
    for path in mutating_routes():
        for method in MUTATING:
            response = getattr(client, method)(path, {}, content_type="application/json")
            if response.status_code not in (403, 405):
                failures.append(f"{method.upper()} {path} -> {response.status_code}")
    assert not failures, "\n".join(failures)
    assert _snapshot() == before
    assert AuditRecord.objects.filter(result="ok").count() == done_before


@pytest.mark.django_db(transaction=True, reset_sequences=True)
def test_every_form_post_needs_its_csrf_token(inventory: None, admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    before = _snapshot()
    failures = []
    forms = [p for p in mutating_routes() if not p.startswith("/api/")]
    for path in [*forms, "/api/v1/jobs/selftest/"]:  # the API's session auth checks it too
        response = client.post(path, {})
        if response.status_code not in (403, 405):
            failures.append(f"POST {path} -> {response.status_code}")
    assert not failures, "\n".join(failures)
    assert _snapshot() == before


def test_logins_are_throttled(viewer_user: Any, operator_user: Any) -> None:
    client = Client()
    wrong = {"username": viewer_user.username, "password": "not-" + PASSWORD}
    for _ in range(4):
        answer = client.post("/accounts/login/", wrong)
        assert answer.status_code == 200 and "alert-danger" in answer.content.decode()
    assert client.post("/accounts/login/", wrong).status_code == 429  # the fifth
    locked = client.post("/accounts/login/", {"username": viewer_user.username,
                                              "password": PASSWORD})
    assert locked.status_code == 429
    assert "Too many login attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    # Another user from the same address is not locked out.
    other = client.post("/accounts/login/", {"username": operator_user.username,
                                             "password": PASSWORD})
    assert other.status_code == 302 and other["Location"] == "/"


def test_pages_carry_a_content_security_policy(admin_client: Client, demo: Any) -> None:
    for path in ("/", "/guests/", "/api/docs/", "/accounts/login/"):
        response = admin_client.get(path, follow=True)
        policy = response[HEADER]
        assert "script-src 'self' 'nonce-" in policy and "unsafe-inline" not in policy.split(
            "style-src")[0], policy
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    page = admin_client.get(demo.guests.get(name="web01").get_absolute_url())  # inline script
    nonce = page[HEADER].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page.content.decode()
    assert "onchange=" not in admin_client.get("/jobs/").content.decode()




def ws_paths() -> list[str]:
    """Every websocket route of xenweb/routing.py, ids filled with 1."""
    return ["/" + re.sub(r"<(?:int:)?\w+>", "1", str(route.pattern))
            for route in websocket_urlpatterns]


async def _ws_accepted(path: str, headers: list[tuple[bytes, bytes]]) -> bool:
    # The handshake names the host it is made to, as every browser does (xenweb.ws_origin).
    communicator = WebsocketCommunicator(application, path,
                                         headers=[(b"host", b"127.0.0.1"), *headers])
    connected, _ = await communicator.connect(timeout=10)
    await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_every_websocket_route_refuses_anonymous_and_foreign_origins(
    admin_client_tx: Client,
) -> None:
    await sync_to_async(enrol_host)(name="demo", uri=demo_uri(), user=None)
    await Job.objects.acreate(kind="selftest", title="t")
    cookie = (b"cookie", f"sessionid={admin_client_tx.cookies['sessionid'].value}".encode())
    paths = ws_paths()
    assert len(paths) >= 4, paths
    # The same session from the appliance's own origin is welcome (the test is not vacuous).
    assert await _ws_accepted("/ws/events/", [(b"origin", b"http://127.0.0.1"), cookie])
    for path in paths:
        assert not await _ws_accepted(path, [(b"origin", b"http://127.0.0.1")]), path
        assert not await _ws_accepted(path, [(b"origin", b"https://evil.example"), cookie]), path


def test_pages_that_take_a_post_still_take_it(inventory: None, admin_client: Client) -> None:
    """Read-only pages refuse POST; the host networks fragment takes the admin's form."""
    demo = Host.objects.get(name="demo")
    assert admin_client.post(f"/hosts/{demo.pk}/").status_code == 405
    page = admin_client.post(f"/hosts/{demo.pk}/networks/", {"name": "dmz", "bridge": "xenbr9"})
    assert page.status_code == 200 and "xenbr9" in page.content.decode()
