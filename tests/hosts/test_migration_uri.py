"""A host's migration URI: how other hosts' libvirtd reach it when a guest migrates to it
(its address on a migration or storage network), set by administrators through the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from hosts.models import Host
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db

URI = "xen+ssh://root@xen2.example.org/system"


@pytest.fixture
def xen_host(admin_user: Any) -> Host:
    return Host.objects.create(name="xen2", uri=URI)


def put(client: Client, host: Host, uri: str) -> Any:
    return client.put(f"/api/v1/hosts/{host.pk}/migration-uri/", {"migration_uri": uri},
                      content_type="application/json")


def test_set_shown_and_cleared(admin_client: Client, xen_host: Host) -> None:
    answer = put(admin_client, xen_host, "Xen+SSH://root@10.99.0.2/system")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["migration_uri"] == "xen+ssh://root@10.99.0.2/system"
    assert Host.objects.get(pk=xen_host.pk).migration_uri == "xen+ssh://root@10.99.0.2/system"
    assert AuditRecord.objects.filter(action="host.migration_uri").exists()
    cleared = put(admin_client, xen_host, "")
    assert cleared.status_code == 200 and cleared.json()["migration_uri"] == ""


@pytest.mark.parametrize(("uri", "reason"), [
    ("qemu+ssh://root@10.99.0.2/system", "host's own driver ('xen'"),
    ("xen+tcp://10.99.0.2/system", "unauthenticated"),
    ("xen+ssh://root@10.99.0.2/system?command=/bin/sh", "command"),
    ("not a uri", ""),
])
def test_bad_uris_are_refused_and_change_nothing(admin_client: Client, xen_host: Host,
                                                 uri: str, reason: str) -> None:
    answer = put(admin_client, xen_host, uri)
    assert answer.status_code == 400, answer.json()
    assert reason in answer.json()["detail"]
    assert Host.objects.get(pk=xen_host.pk).migration_uri == ""


def test_only_administrators_set_it(operator_client: Client, xen_host: Host) -> None:
    assert put(operator_client, xen_host, "xen+ssh://root@10.99.0.2/system").status_code == 403


def test_host_page_form(admin_client: Client, operator_client: Client, xen_host: Host) -> None:
    page = admin_client.get(f"/hosts/{xen_host.pk}/").content.decode()
    assert 'id="migration-uri"' in page
    form = f"/hosts/{xen_host.pk}/migration-uri/"
    done = admin_client.post(form, {"migration_uri": "xen+ssh://root@10.99.0.2/system"},
                             follow=True)
    assert "migration URI set to xen+ssh://root@10.99.0.2/system" in done.content.decode()
    bad = admin_client.post(form, {"migration_uri": "xen+tcp://10.99.0.2/system"}, follow=True)
    assert "The migration URI was not changed" in bad.content.decode()
    assert Host.objects.get(pk=xen_host.pk).migration_uri == "xen+ssh://root@10.99.0.2/system"
    assert operator_client.post(form, {"migration_uri": ""}).status_code == 403
    seen_by_operator = operator_client.get(f"/hosts/{xen_host.pk}/").content.decode()
    assert 'id="migration-uri"' not in seen_by_operator
