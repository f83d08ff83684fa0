"""A volume not marked shareable is never attached writable to two running guests: start,
attach (API and page) and the migration check, on the embedded demo host."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.placement.exclusivity import conflicts
from hosts.models import Host
from storage.models import Pool, Volume
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db

WEB_DISK = "/var/lib/xen/images/web01.img"


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def new_guest(client: Client, host: Host, name: str, volume: Volume) -> Guest:
    created = post(client, "/api/v1/guests/", {
        "name": name, "host": host.pk, "type": "pv", "memory_mib": 256,
        "bootloader": "pygrub", "disks": [{"volume": volume.pk}]})
    assert created.status_code == 201, created.json()
    return Guest.objects.select_related("host").get(pk=created.json()["id"])


def test_start_is_refused_while_another_guest_writes_the_volume(
        operator_client: Client, demo: Host) -> None:
    web = Guest.objects.get(name="web01")  # running, with web01.img as xvda
    twin = new_guest(operator_client, demo, "web01-twin", Volume.objects.get(path=WEB_DISK))
    refused = post(operator_client, f"/api/v1/guests/{twin.pk}/start/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"Guest 'web01-twin' cannot be started: Volume {WEB_DISK} is attached writable to "
        "guest 'web01' on host 'demo' (xvda), which is running; it is not marked shareable, "
        "so two running guests cannot write it at once.")
    assert Guest.objects.get(pk=twin.pk).state == "shutoff"
    assert AuditRecord.objects.filter(action="guest.start", result="refused",
                                      target_id=str(twin.pk)).exists()
    page = operator_client.post(f"/guests/{twin.pk}/start/", follow=True).content.decode()
    assert "attached writable to guest &#x27;web01&#x27; on host &#x27;demo&#x27;" in page

    assert post(operator_client, f"/api/v1/guests/{web.pk}/destroy/").status_code == 200
    assert post(operator_client, f"/api/v1/guests/{twin.pk}/start/").json()["state"] == \
        "running"
    # Now web01 is the one that may not start.
    again = post(operator_client, f"/api/v1/guests/{web.pk}/start/")
    assert again.status_code == 409 and "guest 'web01-twin' on host 'demo'" in \
        again.json()["detail"]


def test_attach_is_refused_unless_shareable_or_read_only(operator_client: Client,
                                                         demo: Host) -> None:
    mail = Guest.objects.get(name="mail01")  # shut off: the attachment is for its next boot
    web_disk = Volume.objects.get(path=WEB_DISK)
    refused = post(operator_client, f"/api/v1/guests/{mail.pk}/disks/", {"volume": web_disk.pk})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        "Volume 'web01.img' cannot be attached to 'mail01': Volume "
        f"{WEB_DISK} is attached writable to guest 'web01' on host 'demo' (xvda)")
    assert AuditRecord.objects.filter(action="guest.attach_disk", result="refused").exists()
    # Marking only the new attachment shareable is not enough: web01's is not.
    half = post(operator_client, f"/api/v1/guests/{mail.pk}/disks/",
                {"volume": web_disk.pk, "shareable": True})
    assert half.status_code == 409

    # Read-only never conflicts, and a guest with it starts.
    readonly = post(operator_client, f"/api/v1/guests/{mail.pk}/disks/",
                    {"volume": web_disk.pk, "readonly": True})
    assert readonly.status_code == 200, readonly.json()
    disk = next(d for d in readonly.json()["guest"]["disks"] if d["source"] == WEB_DISK)
    assert disk["readonly"] and not disk["shareable"]
    assert post(operator_client, f"/api/v1/guests/{mail.pk}/start/").json()["state"] == \
        "running"


def test_shareable_volumes_are_explicit(operator_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")

    def volume(name: str) -> Volume:
        made = post(operator_client, "/api/v1/volumes/", {"pool": pool.pk, "name": name,
                                                          "size": "64M", "format": "raw"})
        assert made.status_code == 201, made.json()
        return Volume.objects.get(pk=made.json()["id"])

    quorum = volume("quorum.img")
    nodes = [new_guest(operator_client, demo, f"node-{n}", volume(f"node-{n}.img"))
             for n in "ab"]
    for node in nodes:
        shared = post(operator_client, f"/api/v1/guests/{node.pk}/disks/",
                      {"volume": quorum.pk, "shareable": True})
        assert shared.status_code == 200, shared.json()
        assert any(d["source"] == quorum.path and d["shareable"]
                   for d in shared.json()["guest"]["disks"])
        started = post(operator_client, f"/api/v1/guests/{node.pk}/start/")
        assert started.status_code == 200 and started.json()["state"] == "running"
    # A third, non-shareable attachment names one of the writers (API and page alike).
    mail = Guest.objects.get(name="mail01")
    refused = post(operator_client, f"/api/v1/guests/{mail.pk}/disks/", {"volume": quorum.pk})
    assert refused.status_code == 409 and "is attached writable to guest 'node-a' on host " \
        "'demo'" in refused.json()["detail"]
    page = operator_client.post(f"/guests/{mail.pk}/hardware/attach-disk/",
                                {"volume": quorum.pk}, follow=True).content.decode()
    assert "cannot be attached to &#x27;mail01&#x27;" in page
    page = operator_client.post(f"/guests/{mail.pk}/hardware/attach-disk/",
                                {"volume": quorum.pk, "shareable": "1"}, follow=True)
    assert "change applied at the next boot" in page.content.decode()
    mail.refresh_from_db()
    assert any(d["source"] == quorum.path and d["shareable"] for d in mail.devices["disks"])
    assert post(operator_client, f"/api/v1/guests/{mail.pk}/start/").status_code == 200


def test_migration_check_compares_volumes_across_hosts(demo: Host) -> None:
    """The plain function the migration preflight calls: a path on a pool shared by both
    hosts is one volume; the same path on unshared pools is not."""
    other = Host.objects.create(name="dom0-b", uri="test:///default", hypervisor_type="Xen")
    web = Guest.objects.get(name="web01")
    mover = Guest.objects.create(host=other, uuid=uuid.uuid4(), name="mover", state="shutoff",
                                 devices={"disks": [{"target": "xvda", "device": "disk",
                                                     "source": WEB_DISK, "readonly": False,
                                                     "shareable": False}]})
    pool_b = Pool.objects.create(host=other, uuid=uuid.uuid4(), name="images", pool_type="dir",
                                 target_path=WEB_DISK.rsplit("/", 1)[0])
    Volume.objects.create(pool=pool_b, name="web01.img", path=WEB_DISK)
    assert conflicts(mover) == []  # its own host: another file with the same path
    assert conflicts(mover, target_host=demo)[0].other == web  # moved next to web01

    # Both sides declared the same storage (one label groups them, as an admin would).
    Pool.objects.filter(host=demo, name="default").update(shared=True, share_label="san")
    assert conflicts(mover) == []  # only one side shared: still two different volumes
    pool_b.shared, pool_b.share_label = True, "san"
    pool_b.save()
    [found] = conflicts(mover)
    assert (found.other, found.disk, found.other_disk) == (web, "xvda", "xvda")
    assert "guest 'web01' on host 'demo'" in found.message
    web.state = "shutoff"
    web.save()
    assert conflicts(mover) == []
