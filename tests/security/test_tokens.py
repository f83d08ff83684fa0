"""API tokens are hashed at rest, shown once and die with a password change (issue 18, L5).

Before: DRF's authtoken kept every key in clear in the database, and a token survived its
user's password change and an administrator's reset."""

from __future__ import annotations

import hashlib
import importlib
from io import StringIO
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from tests.conftest import PASSWORD, logged_in
from xenweb.accounts.models import ApiToken
from xenweb.accounts.tokens import create_token
from xenweb.audit.models import AuditRecord

NEW_PASSWORD = "another-horse-battery-staple"


def api_status(key: str) -> int:
    return Client().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {key}").status_code


def database_holds(text: str) -> list[str]:
    """Every table whose rows contain the text anywhere (the whole database is read)."""
    found = []
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {quote(table)}")  # noqa: S608
            if any(text in str(value) for row in cursor.fetchall() for value in row):
                found.append(table)
    return found


def key_from_profile_post(client: Client) -> str:
    page = client.post("/accounts/profile/token/").content.decode()
    return page.split('id="new-token" class="user-select-all fs-6">')[1].split("<")[0]


@pytest.mark.django_db
def test_token_is_stored_hashed_and_shown_once(admin_user: Any, admin_client: Client) -> None:
    key = key_from_profile_post(admin_client)
    assert len(key) == 40
    assert api_status(key) == 200
    # Not in any table (tokens, sessions, messages, audit…): only its SHA-256 is kept.
    assert database_holds(key) == []
    assert ApiToken.objects.get(user=admin_user).digest == hashlib.sha256(
        key.encode()).hexdigest()
    # Shown once: the profile page afterwards says a token exists, not which.
    page = admin_client.get("/accounts/profile/").content.decode()
    assert key not in page and "A token exists" in page
    # The digest itself is no token, nor is a prefix or a wrong key.
    digest = ApiToken.objects.get(user=admin_user).digest
    for wrong in (digest, key[:-1], key + "0", "", "x" * 5000):
        assert api_status(wrong) == 401, wrong[:50]
    # Replacing the token kills the old key.
    second = key_from_profile_post(admin_client)
    assert (api_status(key), api_status(second)) == (401, 200)


@pytest.mark.django_db
def test_token_of_an_inactive_user_is_refused(operator_user: Any) -> None:
    key = create_token(operator_user)
    operator_user.is_active = False
    operator_user.save()
    assert api_status(key) == 401


@pytest.mark.django_db
def test_own_password_change_revokes_the_token(operator_user: Any) -> None:
    key = create_token(operator_user)
    client = logged_in(operator_user)
    changed = client.post("/accounts/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD,
        "new_password2": NEW_PASSWORD})
    assert changed.status_code == 302
    assert api_status(key) == 401
    assert not ApiToken.objects.filter(user=operator_user).exists()
    assert AuditRecord.objects.filter(action="token.revoke",
                                      username=operator_user.username).exists()


@pytest.mark.django_db
def test_admin_reset_revokes_the_token(admin_client: Client, operator_user: Any) -> None:
    key = create_token(operator_user)
    reset = admin_client.post(f"/accounts/users/{operator_user.pk}/password/", {
        "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert reset.status_code == 302
    assert api_status(key) == 401


@pytest.mark.django_db
def test_changepassword_command_revokes_the_token(operator_user: Any,
                                                  monkeypatch: Any) -> None:
    key = create_token(operator_user)
    # changepassword reads the new password twice from getpass (a terminal); given here.
    monkeypatch.setattr("django.contrib.auth.management.commands.changepassword.getpass"
                        ".getpass", lambda prompt="": NEW_PASSWORD)
    call_command("changepassword", operator_user.username, stdout=StringIO())
    assert api_status(key) == 401


@pytest.mark.django_db
def test_other_saves_and_a_rehash_keep_the_token(operator_user: Any, settings: Any) -> None:
    key = create_token(operator_user)
    operator_user.first_name = "Oscar"
    operator_user.save()
    operator_user.refresh_from_db()
    # Logging in with new hasher settings rehashes the password: the same password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    assert logged_in_with_password(operator_user.username)
    assert get_user_model().objects.get(pk=operator_user.pk).password.startswith("pbkdf2")
    assert api_status(key) == 200
    # A locked account (unusable password) loses it.
    operator_user.refresh_from_db()
    operator_user.set_unusable_password()
    operator_user.save()
    assert api_status(key) == 401


def logged_in_with_password(username: str) -> bool:
    answer = Client().post("/accounts/login/", {"username": username, "password": PASSWORD})
    return answer.status_code == 302


@pytest.mark.django_db
def test_drf_create_token_command_prints_a_new_key_once(operator_user: Any) -> None:
    out = StringIO()
    call_command("drf_create_token", operator_user.username, stdout=out)
    text = out.getvalue().strip()
    assert text.startswith("Generated token ") and text.endswith(
        f" for user {operator_user.username}")
    key = text.split()[2]
    assert api_status(key) == 200 and database_holds(key) == []
    again = StringIO()
    call_command("drf_create_token", "-r", operator_user.username, stdout=again)
    assert api_status(key) == 401 and api_status(again.getvalue().split()[2]) == 200
    with pytest.raises(Exception, match="does not exist"):
        call_command("drf_create_token", "nobody", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_clear_drf_tokens_are_hashed_by_the_migration(appliance_ready: Any) -> None:
    """A deployed appliance's DRF tokens (table authtoken_token, keys in clear) keep
    working after the upgrade, and no clear key stays in the database."""
    from tests.conftest import make_user

    user = make_user("deployed-client", "operator")
    key = "0123456789abcdef0123456789abcdef01234567"
    # DRF's table as its migration made it on either database.
    created_type = "timestamp with time zone" if connection.vendor == "postgresql" else \
        "datetime"
    with connection.cursor() as cursor:
        cursor.execute('CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY,'
                       f' "created" {created_type} NOT NULL, "user_id" integer NOT NULL UNIQUE)')
        cursor.execute('INSERT INTO "authtoken_token" VALUES (%s, %s, %s)',
                       [key, "2025-01-02 03:04:05", user.pk])
    MigrationRecorder(connection).record_applied("authtoken", "0001_initial")
    migration = importlib.import_module(
        "xenweb.accounts.migrations.0002_hash_clear_drf_tokens")
    with connection.schema_editor() as editor:
        migration.hash_clear_tokens(django_apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    assert not MigrationRecorder(connection).migration_qs.filter(app="authtoken").exists()
    assert database_holds(key) == []
    assert api_status(key) == 200
    assert ApiToken.objects.get(user=user).created.year == 2025
