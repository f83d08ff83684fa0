"""Storage pools through the API on demo hosts (libvirt's test driver): create per type,
start/stop/autostart/refresh/delete, permissions, shared-storage recognition across hosts,
the ISO library in the create-guest wizard.

NFS, LVM and iSCSI pools start in the test driver without mounting anything (this
machine has no NFS server and no device-mapper); the lab suite runs dir pools for real.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client, override_settings

from guests.models import Guest
from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt import DEMO_NODE_FILE, VirtTarget
from hosts.virt.connection import drop_connection
from hosts.virt.pools import list_pools
from storage.models import Pool, Volume
from storage.sharing import hosts_sharing, shared_pool_on
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo2(admin_user: Any, tmp_path: Path) -> Host:
    """A second demo host (its own copy of the node file)."""
    node = tmp_path / "demo2.xml"
    shutil.copy(DEMO_NODE_FILE, node)
    uri = "test://" + quote(node.as_posix(), safe="/")
    drop_connection(uri)
    return enrol_host(name="demo2", uri=uri, user=admin_user)


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def create(client: Client, host: Host, **fields: Any) -> Any:
    return post(client, "/api/v1/pools/", {"host": host.pk, **fields})


def libvirt_pool(host: Host, name: str) -> Any:
    return next((p for p in list_pools(VirtTarget(host.uri)) if p.name == name), None)


def test_listing_has_capacity_sharing_and_iso_fields(admin_client: Client, demo: Host) -> None:
    pools = admin_client.get(f"/api/v1/pools/?host={demo.pk}").json()["results"]
    default = next(p for p in pools if p["name"] == "default")
    assert default["type"] == "dir" and default["autostart"] is False
    assert default["target_path"] == "/var/lib/xen/images"
    assert default["storage_key"] == "path:/var/lib/xen/images"
    assert default["shared"] is False and default["shared_with"] == []
    assert default["low_space"] is False and default["iso_library"] is False
    assert default["volumes"] == 8 and default["capacity"] == 100 * 1024**3


def test_low_space_follows_the_setting(admin_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")  # 100 GiB, ~32 GiB free
    with override_settings(POOL_LOW_SPACE_PERCENT=10):
        assert admin_client.get(f"/api/v1/pools/{pool.pk}/").json()["low_space"] is False
    with override_settings(POOL_LOW_SPACE_PERCENT=50):
        assert admin_client.get(f"/api/v1/pools/{pool.pk}/").json()["low_space"] is True


def test_dir_pool_lifecycle_on_the_demo_host(admin_client: Client, demo: Host) -> None:
    made = create(admin_client, demo, type="dir", name="extra", target_path="/srv/extra",
                  build=True, autostart=False)
    assert made.status_code == 201, made.json()
    pool = made.json()
    assert pool["active"] is True and pool["autostart"] is False and pool["type"] == "dir"
    url = pool["url"]

    on = post(admin_client, f"{url}autostart/", {"enabled": True})
    assert on.status_code == 200 and on.json()["autostart"] is True
    assert libvirt_pool(demo, "extra").autostart is True
    stopped = post(admin_client, f"{url}stop/")
    assert stopped.status_code == 200 and stopped.json()["active"] is False
    assert libvirt_pool(demo, "extra").active is False
    started = post(admin_client, f"{url}start/")
    assert started.json()["active"] is True
    assert post(admin_client, f"{url}refresh/").status_code == 200

    again = create(admin_client, demo, type="dir", name="extra", target_path="/srv/other")
    assert again.status_code == 409 and "already" in again.json()["detail"]

    assert admin_client.delete(url).status_code == 204
    assert libvirt_pool(demo, "extra") is None and not Pool.objects.filter(name="extra").exists()
    actions = set(AuditRecord.objects.filter(target_type="storage.pool").values_list(
        "action", flat=True))
    assert {"pool.create", "pool.autostart", "pool.stop", "pool.start", "pool.refresh",
            "pool.delete"} <= actions


def test_nfs_lvm_iscsi_fs_pools_are_defined_from_their_fields(admin_client: Client,
                                                              demo: Host) -> None:
    nfs = create(admin_client, demo, type="netfs", name="nfs", source_host="nas.example.org",
                 source_dir="/export/vm", target_path="/mnt/nfs")
    assert nfs.status_code == 201, nfs.json()
    assert nfs.json()["source"]["hosts"] == ["nas.example.org"]
    assert nfs.json()["shared"] is True  # network storage: shared without a declaration
    # (Building a VG passes NO_OVERWRITE, which the test driver does not take: no build.)
    lvm = create(admin_client, demo, type="logical", name="vmvg", devices=["/dev/sdb"])
    assert lvm.status_code == 201, lvm.json()
    assert lvm.json()["target_path"] == "/dev/vmvg" and lvm.json()["source"]["name"] == "vmvg"
    iscsi = create(admin_client, demo, type="iscsi", name="san", source_host="san.example.org",
                   target_iqn="iqn.2024-01.org.example:store")
    assert iscsi.status_code == 201, iscsi.json()
    assert iscsi.json()["storage_key"] == \
        "iscsi:san.example.org:3260:iqn.2024-01.org.example:store"
    fs = create(admin_client, demo, type="fs", name="local-fs", devices=["/dev/sdd1"],
                target_path="/srv/fs", source_format="xfs", start=False)
    assert fs.status_code == 201 and fs.json()["active"] is False

    built = create(admin_client, demo, type="iscsi", name="san2", source_host="s",
                   target_iqn="iqn.2024-01.org.example:x", build=True)
    assert built.status_code == 409 and "nothing to build" in built.json()["detail"]
    assert libvirt_pool(demo, "san2") is None  # nothing stays defined
    bad = create(admin_client, demo, type="netfs", name="n2", source_host="nas",
                 source_dir="export", target_path="/mnt/n2")
    assert bad.status_code == 400 and "exported directory" in bad.json()["detail"]
    unknown = create(admin_client, demo, type="rbd", name="ceph")
    assert unknown.status_code == 400
    failed = AuditRecord.objects.filter(action="pool.create", result="failed")
    assert failed.count() == 1 and "san2" in str(failed.first().detail)


def test_other_pool_types_are_listed_read_only(admin_client: Client, demo: Host) -> None:
    from hosts.virt.connection import get_connection

    conn = get_connection(VirtTarget(demo.uri))
    conn.storagePoolDefineXML("<pool type='scsi'><name>hba</name><source><adapter "
                              "type='scsi_host' name='host0'/></source><target><path>/dev/"
                              "disk/by-path</path></target></pool>", 0)
    from storage.inventory import reconcile_pools

    reconcile_pools(demo)
    hba = admin_client.get(f"/api/v1/pools/?host={demo.pk}").json()["results"]
    row = next(p for p in hba if p["name"] == "hba")
    assert row["type"] == "scsi" and row["source"]["adapter"] == "host0"
    assert row["storage_key"] == "" and row["shared"] is False
    stop = post(admin_client, f"/api/v1/pools/{row['id']}/stop/")
    assert stop.status_code == 409 and "listed read-only" in stop.json()["detail"]
    assert admin_client.delete(f"/api/v1/pools/{row['id']}/").status_code == 409
    assert post(admin_client, f"/api/v1/pools/{row['id']}/refresh/").status_code == 200
    html = admin_client.get(f"/storage/pools/{row['id']}/").content.decode()
    assert "read-only: scsi pool" in html and "/stop/" not in html and "/delete/" not in html


def test_permissions(operator_client: Client, viewer_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    assert viewer_client.get(f"/api/v1/pools/{pool.pk}/").status_code == 200
    for path in ("stop", "start", "refresh", "iso-library"):
        assert post(viewer_client, f"/api/v1/pools/{pool.pk}/{path}/",
                    {"enabled": True}).status_code == 403
    assert create(viewer_client, demo, type="dir", name="v", target_path="/v").status_code == 403
    # Operators run pools; defining, deleting and declaring sharing is for administrators.
    assert create(operator_client, demo, type="dir", name="o",
                  target_path="/o").status_code == 403
    assert operator_client.delete(f"/api/v1/pools/{pool.pk}/").status_code == 403
    assert post(operator_client, f"/api/v1/pools/{pool.pk}/sharing/",
                {"shared": True}).status_code == 403
    assert post(operator_client, f"/api/v1/pools/{pool.pk}/iso-library/",
                {"enabled": True}).json()["iso_library"] is True
    assert post(operator_client, f"/api/v1/pools/{pool.pk}/refresh/").status_code == 200


def test_delete_and_stop_are_refused_while_guests_use_the_pool(admin_client: Client,
                                                               demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    refused = admin_client.delete(f"/api/v1/pools/{pool.pk}/")
    assert refused.status_code == 409
    assert "guest 'build01'" in refused.json()["detail"]  # the first by name, paused
    assert "Detach the disk" in refused.json()["detail"]
    stop = post(admin_client, f"/api/v1/pools/{pool.pk}/stop/")
    assert stop.status_code == 409 and "is in use" in stop.json()["detail"]
    assert libvirt_pool(demo, "default").active is True

    # Only mail01 (shut off) left on a pool: stopping is fine, deleting is not.
    for guest in Guest.objects.filter(host=demo).exclude(name="mail01"):
        guest.devices = {}
        guest.save(update_fields=["devices"])  # the cache's writers save, keeping the records
    refused = admin_client.delete(f"/api/v1/pools/{pool.pk}/")
    assert refused.status_code == 409 and "'mail01' (shut off" in refused.json()["detail"]
    assert post(admin_client, f"/api/v1/pools/{pool.pk}/stop/").status_code == 200
    # Stopped, it lists no volumes; a disk below its path still counts.
    assert admin_client.delete(f"/api/v1/pools/{pool.pk}/").status_code == 409
    storage = admin_client.delete(f"/api/v1/pools/{Pool.objects.get(name='iso').pk}/"
                                  "?delete_storage=1")
    assert storage.status_code == 409 and "delete them first" in storage.json()["detail"]


def test_shared_storage_is_recognised_across_hosts(admin_client: Client, demo: Host,
                                                   demo2: Host) -> None:
    one = create(admin_client, demo, type="netfs", name="vmstore",
                 source_host="NAS.example.org.", source_dir="/export//vm/",
                 target_path="/mnt/vmstore").json()
    two = create(admin_client, demo2, type="netfs", name="nfs-vm", source_host="nas.example.org",
                 source_dir="/export/vm", target_path="/var/lib/xen/nfs").json()
    assert one["storage_key"] == two["storage_key"] == "nfs:nas.example.org:/export/vm"
    one = admin_client.get(one["url"]).json()
    assert one["shared_with"] == [{"host": demo2.pk, "host_name": "demo2", "pool": two["id"],
                                   "pool_name": "nfs-vm"}]
    p1, p2 = Pool.objects.get(pk=one["id"]), Pool.objects.get(pk=two["id"])
    assert shared_pool_on(p1, demo2) == p2 and shared_pool_on(p2, demo) == p1
    assert [h.name for h in hosts_sharing(p2)] == ["demo2", "demo"]

    iqn = "iqn.2024-01.org.example:store"
    a = create(admin_client, demo, type="iscsi", name="san", source_host="san.example.org",
               target_iqn=iqn, initiator_iqn="iqn.2024-01.org.example:demo").json()
    b = create(admin_client, demo2, type="iscsi", name="lun", source_host="SAN.example.org",
               target_iqn=iqn.upper().replace("IQN", "iqn"), port=3260).json()
    assert admin_client.get(a["url"]).json()["shared_with"][0]["pool"] == b["id"]
    other = create(admin_client, demo2, type="iscsi", name="lun2", source_host="san.example.org",
                   target_iqn="iqn.2024-01.org.example:other").json()
    assert other["shared_with"] == []

    # What a migration check asks per disk.
    from storage.sharing import disk_on_target

    there = disk_on_target(demo, "/mnt/vmstore/vm1/guest.img", demo2)
    assert there is not None and there.pool == p2
    assert there.path == "/var/lib/xen/nfs/vm1/guest.img"  # its mount point on demo2
    assert disk_on_target(demo, "/var/lib/xen/images/web01.img", demo2) is None
    assert disk_on_target(demo, "/nowhere/x.img", demo2) is None

    # The admin says one of them is not shared after all: the group loses it.
    off = post(admin_client, f"{two['url']}sharing/", {"shared": False})
    assert off.status_code == 200 and off.json()["shared"] is False
    assert shared_pool_on(p1, demo2) is None
    assert admin_client.get(one["url"]).json()["shared_with"] == []
    assert AuditRecord.objects.filter(action="pool.sharing").count() == 1


def test_declared_sharing_of_dir_pools(admin_client: Client, demo: Host, demo2: Host) -> None:
    d1 = Pool.objects.get(host=demo, name="default")
    d2 = Pool.objects.get(host=demo2, name="default")
    assert d1.storage_key == d2.storage_key and shared_pool_on(d1, demo2) is None
    assert post(admin_client, f"/api/v1/pools/{d1.pk}/sharing/",
                {"shared": True}).json()["shared_with"] == []  # only one side declared
    both = post(admin_client, f"/api/v1/pools/{d2.pk}/sharing/", {"shared": True}).json()
    assert both["shared"] is True and both["shared_declared"] is True
    assert both["shared_with"][0]["pool"] == d1.pk
    d1.refresh_from_db()
    d2.refresh_from_db()
    assert shared_pool_on(d2, demo) == d1

    # A label groups declared pools whatever their path.
    iso1 = Pool.objects.get(host=demo, name="iso")
    for pool in (iso1, d2):
        assert post(admin_client, f"/api/v1/pools/{pool.pk}/sharing/",
                    {"shared": True, "label": "gfs2-vm"}).status_code == 200
    iso1.refresh_from_db()
    d2.refresh_from_db()
    assert shared_pool_on(iso1, demo2) == d2
    assert shared_pool_on(d1, demo2) is None
    bad = post(admin_client, f"/api/v1/pools/{iso1.pk}/sharing/", {"shared": None,
                                                                   "label": "x"})
    assert bad.status_code == 409 and "label only goes" in bad.json()["detail"]
    auto = post(admin_client, f"/api/v1/pools/{d1.pk}/sharing/", {"shared": None}).json()
    assert auto["shared"] is False and auto["shared_declared"] is None

    # Reconciling keeps the declarations (libvirt knows nothing of them).
    from storage.inventory import reconcile_pools

    reconcile_pools(demo2)
    assert Pool.objects.get(pk=d2.pk).share_label == "gfs2-vm"
    assert Pool.objects.get(pk=d2.pk).shared is True


def test_iso_library_in_the_create_wizard(admin_client: Client, demo: Host,
                                          demo2: Host) -> None:
    iso_pool = Pool.objects.get(host=demo, name="iso")
    image = Volume.objects.get(pool=iso_pool, name="debian-12.5.0-amd64-netinst.iso")
    payload = {"name": "installer", "host": demo.pk, "type": "hvm", "memory_mib": 512,
               "boot": ["cdrom", "hd"], "cdrom": image.pk,
               "disks": [{"pool": Pool.objects.get(host=demo, name="default").pk,
                          "size_gib": 1}]}
    refused = post(admin_client, "/api/v1/guests/", payload)
    assert refused.status_code == 400
    assert "Pool 'iso' is not an ISO library" in str(refused.json())

    marked = post(admin_client, f"/api/v1/pools/{iso_pool.pk}/iso-library/", {"enabled": True})
    assert marked.json()["iso_library"] is True
    page = admin_client.get("/guests/new/").content.decode()
    assert "debian-12.5.0-amd64-netinst.iso" in page
    assert "web01.img" not in page.split('id="cdrom"')[1].split("</select>")[0]

    elsewhere = Volume.objects.get(pool__host=demo2, name="debian-12.5.0-amd64-netinst.iso")
    other_host = post(admin_client, "/api/v1/guests/", {**payload, "cdrom": elsewhere.pk})
    assert other_host.status_code == 400 and "not on 'demo'" in str(other_host.json())
    not_iso = Volume.objects.get(pool__host=demo, name="web01.img")
    Pool.objects.filter(pk=not_iso.pool_id).update(iso_library=True)
    assert "not an ISO image" in str(post(admin_client, "/api/v1/guests/",
                                          {**payload, "cdrom": not_iso.pk}).json())

    made = post(admin_client, "/api/v1/guests/", payload)
    assert made.status_code == 201, made.json()
    cdrom = next(d for d in made.json()["disks"] if d["device"] == "cdrom")
    assert cdrom["source"] == image.path and cdrom["readonly"] is True
    assert cdrom["target"] == "hdc"

    # The wizard form posts the same field.
    form = admin_client.post("/guests/new/", {
        "name": "installer2", "host": demo.pk, "type": "hvm", "vcpus": 1, "memory_mib": 256,
        "cdrom": image.pk, "bridge": "xenbr0"})
    assert form.status_code == 302, form.content.decode()[:2000]
    guest = Guest.objects.get(name="installer2")
    assert any(d["device"] == "cdrom" and d["source"] == image.path
               for d in guest.devices["disks"])
