"""No request grants a host's capabilities: `allow_insecure_transport` (plain tcp, no host-key
pinning) and `files_local` (the appliance opens the host's pool paths as its own files) are
set only by the lab's own enrolment code. The API, the host page's form and the wizard take a
name and a URI; extra fields are ignored, and `is_lab` grants nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from hosts.models import Host
from hosts.virt import demo_uri
from hosts.virt.connection import drop_connection

GRANTS = {"allow_insecure_transport": True, "files_local": True, "is_lab": True}
CAPABILITIES = ("is_lab", "allow_insecure_transport", "files_local")


@pytest.fixture
def demo_free() -> Iterator[str]:
    drop_connection(demo_uri())
    yield demo_uri()
    drop_connection(demo_uri())


@pytest.mark.django_db
def test_the_api_ignores_capabilities_in_the_request(admin_client: Client,
                                                     demo_free: str) -> None:
    made = admin_client.post("/api/v1/hosts/", {"name": "h1", "uri": demo_free, **GRANTS},
                             content_type="application/json")
    assert made.status_code == 201, made.json()
    host = Host.objects.get(name="h1")
    assert tuple(getattr(host, field) for field in CAPABILITIES) == (False, False, False)


@pytest.mark.django_db
@pytest.mark.parametrize("uri", ["qemu+tcp://127.0.0.1:16509/system",
                                 "xen+tcp://10.1.1.1/system",
                                 "qemu+ssh://root@h/system?no_verify=1",
                                 "qemu+tls://h/system?no_verify=1"])
def test_an_insecure_uri_stays_refused_whatever_the_request_claims(
        admin_client: Client, uri: str) -> None:
    refused = admin_client.post("/api/v1/hosts/", {"name": "h2", "uri": uri, **GRANTS},
                                content_type="application/json")
    assert refused.status_code == 400, refused.json()
    assert not Host.objects.filter(name="h2").exists()


@pytest.mark.django_db
def test_the_host_page_ignores_capabilities_in_the_form(admin_client: Client,
                                                        demo_free: str) -> None:
    admin_client.post("/hosts/add/", {"name": "h3", "uri": demo_free,
                                      **{k: "on" for k in GRANTS}})
    host = Host.objects.get(name="h3")
    assert tuple(getattr(host, field) for field in CAPABILITIES) == (False, False, False)
    refused = admin_client.post("/hosts/add/", {"name": "h4",
                                                "uri": "qemu+tcp://127.0.0.1:16509/system",
                                                **{k: "on" for k in GRANTS}})
    assert refused.status_code == 200 and not Host.objects.filter(name="h4").exists()


@pytest.mark.django_db
def test_the_api_never_shows_a_writable_capability(admin_client: Client, demo: Any) -> None:
    changed = admin_client.patch(f"/api/v1/hosts/{demo.pk}/", GRANTS,
                                 content_type="application/json")
    assert changed.status_code in (403, 405)
    demo.refresh_from_db()
    assert (demo.allow_insecure_transport, demo.files_local) == (False, False)
