"""Errors are pages of the layout (navigation, theme, a way back), not Django's bare text;
the API keeps answering JSON."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, RequestFactory

from xenweb.api_errors import server_error

pytestmark = pytest.mark.django_db


def test_not_found_is_a_page_of_the_layout(admin_client: Client) -> None:
    response = admin_client.get("/guests/987654/")
    assert response.status_code == 404
    page = response.content.decode()
    assert 'id="error-page"' in page and 'id="mainnav"' in page and "Not found" in page
    assert "/guests/987654/" in page
    api = admin_client.get("/api/v1/guests/987654/")
    assert api.status_code == 404 and api.json() == {"detail": "No Guest matches the given query."}


def test_forbidden_is_a_page_of_the_layout_naming_the_role(viewer_client: Client) -> None:
    response = viewer_client.get("/guests/new/")
    assert response.status_code == 403
    page = response.content.decode()
    assert 'id="error-page"' in page and 'id="mainnav"' in page
    assert "Your role (viewer) does not allow this." in page


def test_a_csrf_failure_says_what_to_do(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post("/guests/new/", {"name": "x"})
    assert response.status_code == 403
    page = response.content.decode()
    assert 'id="error-page"' in page and "Reload the page and send the form again" in page


def test_a_server_error_is_a_page_of_the_layout() -> None:
    request = RequestFactory().get("/guests/")
    page = server_error(request).content.decode()
    assert 'id="error-page"' in page and "Something went wrong" in page
    assert "bootstrap.min.css" in page
    api = server_error(RequestFactory().get("/api/v1/guests/"))
    assert api.status_code == 500 and b"Server error" in api.content
