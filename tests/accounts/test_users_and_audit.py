from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.conftest import PASSWORD
from xenweb.accounts.roles import role_of
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "An0ther-long-passphrase"


def test_admin_creates_user_with_role_and_it_is_audited(admin_client: Client) -> None:
    assert admin_client.get("/accounts/users/").status_code == 200
    response = admin_client.post("/accounts/users/new/", {
        "username": "olga", "email": "olga@example.org", "first_name": "", "last_name": "",
        "role": "operator", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD,
    })
    assert response.status_code == 302
    olga = get_user_model().objects.get(username="olga")
    assert role_of(olga) == "operator" and olga.check_password(NEW_PASSWORD)
    record = AuditRecord.objects.get(action="user.create", target_label="olga")
    assert record.username == "alice-admin" and record.detail == {"role": "operator"}

    response = admin_client.post(f"/accounts/users/{olga.pk}/", {
        "email": "olga@example.org", "first_name": "Olga", "last_name": "", "role": "viewer",
        "is_active": "on",
    })
    assert response.status_code == 302
    olga.refresh_from_db()
    assert role_of(olga) == "viewer" and olga.first_name == "Olga"


def test_bad_user_input_is_refused_with_messages(admin_client: Client) -> None:
    response = admin_client.post("/accounts/users/new/", {
        "username": "alice-admin", "role": "operator", "password1": "x", "password2": "y",
    })
    page = response.content.decode()
    assert response.status_code == 200
    assert "already exists" in page and "differ" in page
    response = admin_client.post("/accounts/users/new/", {
        "username": "bob", "role": "superhero", "password1": "abc", "password2": "abc",
    })
    page = response.content.decode()
    assert "valid choice" in page and "too short" in page
    assert not get_user_model().objects.filter(username="bob").exists()


def test_admin_cannot_lock_themselves_out(admin_client: Client, admin_user: Any) -> None:
    response = admin_client.post(f"/accounts/users/{admin_user.pk}/", {
        "email": "", "first_name": "", "last_name": "", "role": "viewer", "is_active": "on",
    })
    assert "cannot remove your own administrator role" in response.content.decode()
    admin_user.refresh_from_db()
    assert role_of(admin_user) == "admin"


def test_password_change_and_login_logout_are_audited(admin_user: Any) -> None:
    client = Client()
    assert client.post("/accounts/login/", {"username": admin_user.username,
                                            "password": "wrong"}).status_code == 200
    assert AuditRecord.objects.filter(action="user.login", result="failed").exists()
    response = client.post("/accounts/login/", {"username": admin_user.username,
                                                "password": PASSWORD})
    assert response.status_code == 302
    response = client.post("/accounts/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD,
        "new_password2": NEW_PASSWORD,
    })
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # still logged in after the change
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    assert {"user.login", "user.password", "user.logout"} <= actions


def test_audit_api_and_page(admin_client: Client) -> None:
    admin_client.post("/accounts/profile/token/")
    data = admin_client.get("/api/v1/audit/?action=token.create").json()
    assert data["count"] == 1
    entry = data["results"][0]
    assert entry["username"] == "alice-admin" and entry["result"] == "ok"
    assert admin_client.get("/audit/?q=token").status_code == 200
    assert admin_client.get("/api/v1/me/").json()["role"] == "admin"
