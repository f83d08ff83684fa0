"""The API root (GET /api/v1/) lists every collection, including the prefixes several apps
register view sets under (hosts, guests), and each link answers."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_the_root_lists_every_collection_and_each_link_answers(admin_client: Client) -> None:
    answer = admin_client.get("/api/v1/")
    assert answer.status_code == 200
    listed = answer.json()
    assert {"hosts", "guests", "jobs", "audit", "pools", "volumes", "imports",
            "conflict-sets"} <= set(listed)
    assert listed["hosts"].endswith("/api/v1/hosts/")
    assert listed["guests"].endswith("/api/v1/guests/")
    for name, url in listed.items():  # imports is a POST-only collection
        assert admin_client.get(url).status_code == (405 if name == "imports" else 200), name

