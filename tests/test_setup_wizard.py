"""The first-boot wizard end to end through Django's test client, and its unattended twin."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client

from hosts.models import Host
from hosts.virt.demo import demo_uri
from xenweb.accounts.roles import role_of
from xenweb.appliance.models import ApplianceSettings
from xenweb.appliance.setup_state import setup_done
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db

STRONG = "Tr1cky-passphrase-for-setup"


@pytest.fixture(autouse=True)
def _fresh_token() -> Any:
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
    cache.clear()
    yield
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)


def token() -> str:
    return settings.SETUP_TOKEN_FILE.read_text().strip()


def test_every_page_leads_to_setup_until_done(client: Client) -> None:
    for path in ["/", "/guests/", "/jobs/", "/accounts/login/"]:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"] == "/setup/"
    api = client.get("/api/v1/jobs/")
    assert api.status_code == 503
    assert "not set up" in api.json()["detail"]
    assert settings.SETUP_TOKEN_FILE.exists()  # generated on first contact
    assert oct(settings.SETUP_TOKEN_FILE.stat().st_mode & 0o777) == "0o600"


def test_wizard_end_to_end(client: Client) -> None:
    assert client.get("/setup/").status_code == 200
    # Skipping ahead is not possible.
    assert client.get("/setup/admin/")["Location"] == "/setup/"
    assert client.get("/setup/host/")["Location"] == "/setup/"

    wrong = client.post("/setup/", {"token": "not-the-token"})
    assert wrong.status_code == 200
    assert "not the setup token" in wrong.content.decode()
    assert client.get("/setup/admin/")["Location"] == "/setup/"
    assert AuditRecord.objects.filter(action="appliance.setup_token", result="refused").exists()

    assert client.post("/setup/", {"token": token()})["Location"] == "/setup/admin/"

    mismatch = client.post("/setup/admin/", {"username": "root", "password1": STRONG,
                                             "password2": STRONG + "x"})
    assert "differ" in mismatch.content.decode()
    weak = client.post("/setup/admin/", {"username": "root", "password1": "123",
                                         "password2": "123"})
    assert "too short" in weak.content.decode()
    done = client.post("/setup/admin/", {"username": "root", "email": "root@example.org",
                                         "password1": STRONG, "password2": STRONG})
    assert done["Location"] == "/setup/appliance/"

    bad_tz = client.post("/setup/appliance/", {"name": "lab", "time_zone": "Mars/Olympus"})
    assert bad_tz.status_code == 200 and "valid choice" in bad_tz.content.decode()
    response = client.post("/setup/appliance/", {"name": "rack-7", "time_zone": "Europe/Berlin"})
    assert response["Location"] == "/setup/host/"

    page = client.get("/setup/host/").content.decode()
    assert demo_uri() in page
    tested = client.post("/setup/host/test/", {"uri": demo_uri()}, HTTP_HX_REQUEST="true")
    assert "Connected to" in tested.content.decode()
    refused = client.post("/setup/host/test/", {"uri": "ftp://nowhere/"})
    assert "alert-danger" in refused.content.decode()

    bad_host = client.post("/setup/host/", {"name": "x", "uri": "test:///no/such/file.xml"})
    assert bad_host.status_code == 200
    assert not setup_done()

    finished = client.post("/setup/host/", {"name": "demo", "uri": demo_uri()})
    assert finished["Location"] == "/"
    assert setup_done()

    # After completion: the wizard is gone, the token deleted, the appliance configured.
    assert client.get("/setup/").status_code == 404
    assert Client().get("/setup/").status_code == 404
    assert Client().post("/setup/", {"token": "x"}).status_code == 404
    assert not settings.SETUP_TOKEN_FILE.exists()
    appliance = ApplianceSettings.load()
    assert (appliance.name, appliance.time_zone) == ("rack-7", "Europe/Berlin")
    admin = get_user_model().objects.get(username="root")
    assert role_of(admin) == "admin" and admin.check_password(STRONG)
    host = Host.objects.get(name="demo")
    assert host.uri == demo_uri() and host.state == Host.State.ONLINE
    assert client.get("/").status_code == 200  # logged in as the new administrator
    assert AuditRecord.objects.filter(action="appliance.setup", username="root").exists()


def test_wrong_tokens_are_throttled(client: Client) -> None:
    client.get("/setup/")
    for _ in range(10):
        client.post("/setup/", {"token": "guess"})
    locked = client.post("/setup/", {"token": token()})
    assert "Too many wrong tokens" in locked.content.decode()
    assert client.get("/setup/admin/")["Location"] == "/setup/"


def test_unattended_setup_command() -> None:
    call_command("setup_appliance", "--admin-user", "ops", "--admin-password", STRONG)
    assert setup_done()
    assert role_of(get_user_model().objects.get(username="ops")) == "admin"
    assert Host.objects.get().uri == demo_uri()
    assert not settings.SETUP_TOKEN_FILE.exists()
    with pytest.raises(CommandError, match="complete already"):
        call_command("setup_appliance", "--admin-user", "x", "--admin-password", STRONG)


def test_unattended_setup_refuses_bad_input() -> None:
    with pytest.raises(CommandError, match="too short"):
        call_command("setup_appliance", "--admin-user", "ops", "--admin-password", "abc")
    with pytest.raises(CommandError):
        call_command("setup_appliance", "--admin-user", "ops", "--admin-password", STRONG,
                     "--host-uri", "ftp://example.org/")
    assert not setup_done()
    assert not Host.objects.exists()
