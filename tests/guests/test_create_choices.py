"""The create form knows its host: the host's bridges and networks (never a free-text
bridge), pools, free volumes, guest types (others with the reason) and bounds; a request
naming what the host does not have is refused before anything is made.

Two hosts of libvirt's test driver: the demo host (bridge xenbr0 on eth0, networks xenbr0,
internal and default, 64 GiB) and test:///default ('plain': only the NAT network 'default' on
virbr0, no host bridge, 3 GiB).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt.connection import drop_connection, get_connection
from storage.models import Pool, Volume, VolumeAttachment

pytestmark = pytest.mark.django_db


@pytest.fixture
def plain(admin_user: Any) -> Any:
    drop_connection("test:///default")
    yield enrol_host(name="plain", uri="test:///default", user=admin_user)
    drop_connection("test:///default")


def options(page: str, select: str) -> list[str]:
    body = re.search(rf'<select[^>]*id="{select}"[^>]*>(.*?)</select>', page, re.S)
    assert body, f"no select #{select}"
    return re.findall(r'<option value="([^"]*)"', body[1])


def create_page(client: Client, host: Host, **values: str) -> str:
    response = client.get("/guests/new/", {"host": host.pk, **values})
    assert response.status_code == 200
    return response.content.decode()


def test_the_form_offers_the_chosen_hosts_networks_and_no_free_text_bridge(
        admin_client: Client, demo: Host, plain: Host) -> None:
    page = create_page(admin_client, demo)
    assert 'name="bridge"' not in page
    assert options(page, "nic") == ["", "bridge:xenbr0", "network:default", "network:internal",
                                    "network:xenbr0"]
    assert re.search(r'<option value="bridge:xenbr0" selected>', page)  # the first bridge
    page = create_page(admin_client, plain)
    assert options(page, "nic") == ["", "network:default"]  # virbr0 is the network's own
    assert re.search(r'<option value="network:default" selected>', page)
    # A choice the new host does not have falls back to its default.
    page = create_page(admin_client, plain, nic="bridge:xenbr0", name="kept")
    assert re.search(r'<option value="network:default" selected>', page)
    assert 'value="kept"' in page  # what was typed survives the host change


def test_the_form_offers_the_hosts_pools_volumes_types_and_bounds(
        admin_client: Client, demo: Host, plain: Host) -> None:
    page = create_page(admin_client, plain)
    demo_pools = {str(pk) for pk in Pool.objects.filter(host=demo).values_list("pk", flat=True)}
    assert demo_pools and not demo_pools & set(options(page, "disk_pool"))
    assert set(options(page, "disk_pool")) - {""} == {
        str(pk) for pk in Pool.objects.filter(host=plain, active=True).values_list("pk", flat=True)}
    assert 'id="memory_mib" name="memory_mib" min="16" max="3072"' in page
    page = create_page(admin_client, demo)
    assert 'id="vcpus" name="vcpus" min="1" max="32"' in page
    assert 'id="max_vcpus" name="max_vcpus"' in page
    assert re.search(r'<option value="pvh" disabled>PVH — not on demo</option>', page)
    assert "PVH: Host &#x27;demo&#x27; cannot run PVH guests." in page
    # Volumes other guests hold are not offered as the new guest's disk.
    held = {str(v.pk) for v in Volume.objects.filter(pool__host=demo, name="web01.img")}
    assert held and not held & set(options(page, "disk_volume"))


def test_the_host_select_reloads_the_form_with_htmx(admin_client: Client, demo: Host) -> None:
    page = create_page(admin_client, demo)
    select = re.search(r'<select class="form-select" id="host"[^>]*>', page)[0]
    assert 'hx-get="/guests/new/"' in select and 'hx-select="#create-form"' in select
    assert "csrfmiddlewaretoken" in select  # excluded from the query string
    assert "<noscript>" in page  # and a button without scripts


def post_create(client: Client, host: Host, **fields: Any) -> str:
    response = client.post("/guests/new/", {"name": "made", "type": "hvm", "memory_mib": "256",
                                            "host": host.pk, **fields}, follow=True)
    return response.content.decode()


@pytest.mark.parametrize(("nic", "says"), [
    ("bridge:br-nowhere", "Host &#x27;plain&#x27; has no bridge &#x27;br-nowhere&#x27;: it "
                          "has networks default."),
    ("bridge:xenbr0", "has no bridge &#x27;xenbr0&#x27;"),  # the other host's bridge
    ("network:internal", "Host &#x27;plain&#x27; has no active network &#x27;internal&#x27;"),
])
def test_a_nic_the_host_lacks_is_refused_and_nothing_is_made(
        admin_client: Client, plain: Host, nic: str, says: str) -> None:
    pool = Pool.objects.filter(host=plain, active=True).first()
    volumes = Volume.objects.filter(pool__host=plain).count()
    page = post_create(admin_client, plain, nic=nic, disk_pool=pool.pk, disk_size_gib="0.1")
    assert says in page
    assert not Guest.objects.filter(name="made").exists()
    assert Volume.objects.filter(pool__host=plain).count() == volumes


@pytest.mark.parametrize(("nic", "kind", "source"), [
    ("bridge:xenbr0", "bridge", "xenbr0"), ("network:internal", "network", "internal")])
def test_a_nic_on_what_the_host_has_is_made(admin_client: Client, demo: Host, nic: str,
                                            kind: str, source: str) -> None:
    post_create(admin_client, demo, nic=nic)
    made = Guest.objects.get(name="made", host=demo)
    assert [(n["kind"], n["source"]) for n in made.devices["nics"]] == [(kind, source)]


def test_no_network_interface_is_a_choice(admin_client: Client, demo: Host) -> None:
    post_create(admin_client, demo, nic="")
    assert Guest.objects.get(name="made").devices["nics"] == []


@pytest.mark.parametrize(("fields", "says"), [
    ({"vcpus": "33"}, "Host &#x27;demo&#x27; allows at most 32 vCPUs per guest."),
    ({"vcpus": "2", "max_vcpus": "40"}, "allows at most 32 vCPUs per guest"),
    ({"memory_mib": str(65536 + 1)}, "Host &#x27;demo&#x27; has 65536 MiB of memory"),
    ({"vcpus": "4", "max_vcpus": "2"}, "not above the maximum"),
])
def test_bounds_of_the_host_are_kept(admin_client: Client, demo: Host, fields: dict[str, str],
                                     says: str) -> None:
    assert says in post_create(admin_client, demo, **fields)
    assert not Guest.objects.filter(name="made").exists()


def test_max_vcpus_is_defined(admin_client: Client, demo: Host) -> None:
    post_create(admin_client, demo, vcpus="2", max_vcpus="8")
    made = Guest.objects.get(name="made")
    assert made.vcpus == 2
    definition = get_connection(demo.virt_target).lookupByUUIDString(str(made.uuid)).XMLDesc(0)
    assert re.search(r"<vcpu[^>]* current=.2.[^>]*>8</vcpu>", definition), definition


def test_the_api_refuses_a_bridge_the_host_lacks(operator_client: Client, demo: Host) -> None:
    response = operator_client.post("/api/v1/guests/", {
        "name": "api-made", "host": demo.pk, "memory_mib": 256, "nics": [{"bridge": "br9"}]},
        content_type="application/json")
    assert response.status_code == 400
    assert "Host 'demo' has no bridge 'br9': it has bridges xenbr0 and networks default, " \
           "internal, xenbr0." in str(response.json())
    assert not Guest.objects.filter(name="api-made").exists()


def test_attach_nic_offers_and_checks_the_hosts_networks(admin_client: Client,
                                                         demo: Host) -> None:
    mail = Guest.objects.get(name="mail01")
    page = admin_client.get(mail.get_absolute_url()).content.decode()
    assert options(page, "attach-nic") == ["bridge:xenbr0", "network:default",
                                           "network:internal", "network:xenbr0"]
    refused = admin_client.post(f"/guests/{mail.pk}/hardware/attach-nic/",
                                {"nic": "bridge:br-gone"}, follow=True).content.decode()
    assert "Host &#x27;demo&#x27; has no bridge &#x27;br-gone&#x27;" in refused
    assert len(Guest.objects.get(pk=mail.pk).devices["nics"]) == 1
    admin_client.post(f"/guests/{mail.pk}/hardware/attach-nic/", {"nic": "network:internal"})
    nics = Guest.objects.get(pk=mail.pk).devices["nics"]
    assert [(n["kind"], n["source"]) for n in nics][1:] == [("network", "internal")]


def test_attach_disk_offers_only_free_volumes(admin_client: Client, demo: Host) -> None:
    mail = Guest.objects.get(name="mail01")
    pool = Pool.objects.get(host=demo, name="default")
    free = Volume.objects.create(pool=pool, name="spare.img", path=f"{pool.target_path}/spare.img",
                                 capacity=1 << 30, format="raw")
    page = admin_client.get(mail.get_absolute_url()).content.decode()
    offered = set(re.findall(r'name="volume">(.*?)</select>', page, re.S)[0].split("<option"))
    values = {re.search(r'value="(\d+)"', o)[1] for o in offered if "value=" in o}
    assert str(free.pk) in values
    held = Volume.objects.filter(pool__host=demo, path__in=VolumeAttachment.objects.filter(
        role="disk").exclude(guest=mail).values("path"))
    assert held and not values & {str(v.pk) for v in held}


@pytest.mark.parametrize("nic", ["bridge:../../run/x", "bridge:xenbr0;reboot",
                                 "network:a b", "bridge:" + "b" * 16, "script:/tmp/evil.sh"])
def test_a_nic_choice_is_a_name_the_host_has_never_a_path(admin_client: Client, demo: Host,
                                                         nic: str) -> None:
    page = post_create(admin_client, demo, nic=nic)
    assert not Guest.objects.filter(name="made").exists(), nic
    errors = page[page.index("create-errors"):][:300]
    assert ("nics[0]" in errors and ("does not match" in errors
                                     or "Give a bridge or a network" in errors)), errors
