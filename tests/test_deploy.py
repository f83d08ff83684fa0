"""Production settings pass Django's deployment checks, and the schema is served."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

BASE = Path(__file__).resolve().parent.parent


def test_check_deploy_is_clean_with_production_variables(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "xenweb.settings",
        "XENWEB_DATA_DIR": str(tmp_path),
        "DEBUG": "false",
        "XENWEB_SECURE": "true",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "xenweb.example.org",
        "FORWARDED_ALLOW_IPS": "127.0.0.1,::1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        cwd=BASE, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_generated_secret_key_is_private_and_stable(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "xenweb.settings",
           "XENWEB_DATA_DIR": str(tmp_path)}
    env.pop("SECRET_KEY", None)
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    keys = [
        subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"],
                       cwd=BASE, env=env, capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert keys[0] == keys[1] and len(keys[0].strip()) >= 50
    assert oct((tmp_path / "secret-key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.django_db
def test_openapi_schema_and_docs(admin_client: Client, admin_user: Any) -> None:
    schema = admin_client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/jobs/{id}/", "/api/v1/jobs/{id}/cancel/", "/api/v1/audit/",
                 "/api/v1/me/", "/api/v1/jobs/selftest/"):
        assert path in text, path
    docs = admin_client.get("/api/docs/")
    assert docs.status_code == 200
    assert "cdn" not in docs.content.decode().lower()  # Swagger UI served locally


@pytest.mark.django_db
def test_token_authentication(admin_client: Client, admin_user: Any) -> None:
    # The key is in the answer to the POST only (it is stored hashed, nowhere in clear).
    page = admin_client.post("/accounts/profile/token/").content.decode()
    key = page.split('id="new-token" class="user-select-all fs-6">')[1].split("<")[0]
    me = Client().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {key}")
    assert me.status_code == 200
    assert me.json()["username"] == admin_user.username and me.json()["role"] == "admin"
    assert 'id="new-token"' not in admin_client.get("/accounts/profile/").content.decode()
    admin_client.post("/accounts/profile/token/revoke/")
    assert Client().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_openapi_schema_validates_without_warnings() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn",
         "--file", os.devnull],
        cwd=BASE, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
