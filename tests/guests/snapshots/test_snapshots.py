"""Guest snapshots on the embedded demo host (libvirt's test driver keeps snapshot
metadata in memory, like a real driver, without touching images): the API, the page,
permissions, audit, and the messages for storage that cannot snapshot.

LVM: this machine's kernel has no device-mapper, so no real LVM snapshot can be made
here. The LVM path is exercised in full against the test driver's logical pool (libvirt
stores the volume with its backing store just as the logical backend would hand it to
``lvcreate --snapshot``); the copy-back revert runs for real on a lab host
(tests/guests/snapshots/test_snapshots_lab.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from guests.models import Guest, LvmSnapshot
from guests.snapshots.jobs import create_body, revert_body
from guests.snapshots.plan import capability
from guests.snapshots.services import domain_request
from hosts.models import Host
from hosts.virt import VirtTarget, demo_uri
from hosts.virt import snapshots as virt
from hosts.virt.connection import get_connection
from storage.inventory import reconcile_pools
from storage.models import Volume
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def run(response: Any, body: Any) -> Job:
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")  # what the worker runs
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    return job


def snaps(client: Client, guest: Guest) -> dict[str, Any]:
    response = client.get(f"/api/v1/guests/{guest.pk}/snapshots/")
    assert response.status_code == 200, response.content
    return response.json()


def test_qcow2_guest_snapshots_through_the_api(operator_client: Client, demo: Host) -> None:
    win = Guest.objects.get(name="win2019")  # running; qcow2 disk hda and a CD-ROM
    base = f"/api/v1/guests/{win.pk}/snapshots"
    listed = snaps(operator_client, win)
    assert listed["results"] == []
    assert listed["capability"]["kind"] == "internal" and listed["capability"]["with_memory"]
    assert {d["target"]: d["how"] for d in listed["capability"]["disks"]} == \
        {"hda": "internal", "hdc": "skip"}

    # Running: QEMU saves the memory too, so it is a job.
    run(post(operator_client, f"{base}/", {"name": "before-update", "description": "KB5"}),
        create_body)
    [taken] = snaps(operator_client, win)["results"]
    assert taken["name"] == "before-update" and taken["description"] == "KB5"
    assert taken["kind"] == "internal" and taken["with_memory"] and taken["disks"] == ["hda"]
    assert taken["guest_state"] == "running"
    again = post(operator_client, f"{base}/", {"name": "before-update"})
    assert again.status_code == 409 and "has a snapshot named" in again.json()["detail"]
    bad = post(operator_client, f"{base}/", {"name": "../etc"})
    assert bad.status_code == 400

    # Shut off: taken at once, without memory; reverting it is immediate too.
    assert post(operator_client, f"/api/v1/guests/{win.pk}/destroy/").status_code == 200
    offline = post(operator_client, f"{base}/", {"name": "offline"})
    assert offline.status_code == 201, offline.json()
    assert offline.json()["with_memory"] is False and offline.json()["guest_state"] == "shutoff"
    reverted = post(operator_client, f"{base}/offline/revert/")
    assert reverted.status_code == 200 and reverted.json()["state"] == "shutoff"

    # Reverting to the running snapshot brings the guest back running: a job.
    job = run(post(operator_client, f"{base}/before-update/revert/"), revert_body)
    assert job.result["state"] == "running"
    assert Guest.objects.get(pk=win.pk).state == "running"

    assert operator_client.delete(f"{base}/offline/").status_code == 204
    assert operator_client.delete(f"{base}/before-update/").status_code == 204
    assert snaps(operator_client, win)["results"] == []
    missing = operator_client.delete(f"{base}/nope/")
    assert missing.status_code == 409 and "no snapshot named 'nope'" in missing.json()["detail"]
    actions = set(AuditRecord.objects.filter(action__startswith="guest.snapshot.")
                  .values_list("action", "result"))
    assert {("guest.snapshot.create", "ok"), ("guest.snapshot.revert", "ok"),
            ("guest.snapshot.delete", "ok"), ("guest.snapshot.create", "refused")} <= actions


def test_raw_disks_on_a_dir_pool_are_explained(operator_client: Client, demo: Host) -> None:
    web = Guest.objects.get(name="web01")
    listed = snaps(operator_client, web)
    assert listed["capability"]["supported"] is False
    reason = listed["capability"]["reason"]
    assert "disk xvda (raw in dir pool 'default')" in reason
    assert "raw images have no internal snapshots" in reason and "libvirt 9.0.0" in reason
    refused = post(operator_client, f"/api/v1/guests/{web.pk}/snapshots/", {"name": "s1"})
    assert refused.status_code == 409 and refused.json()["detail"] == reason
    assert AuditRecord.objects.filter(action="guest.snapshot.create", result="refused",
                                      target_id=str(web.pk)).exists()


def test_a_xen_host_says_it_has_no_domain_snapshots(demo: Host) -> None:
    Host.objects.filter(pk=demo.pk).update(hypervisor_type="Xen")
    win = Guest.objects.select_related("host").get(name="win2019")
    plan = capability(win)
    assert not plan.supported
    assert plan.reason.startswith("Xen hosts have no domain snapshots: libvirt's Xen driver "
                                  "(libxl) implements none of the snapshot calls, so disk hda "
                                  "(qcow2 in dir pool 'default') cannot be snapshotted")
    assert "only disks in LVM pools can" in plan.reason


def test_snapshot_requests_and_their_xml(demo: Host) -> None:
    win = Guest.objects.select_related("host").get(name="win2019")
    request = domain_request(capability(win), "s1", "notes")
    assert virt.build_snapshot_xml(request) == (
        "<domainsnapshot><name>s1</name><description>notes</description>"
        "<memory snapshot=\"internal\" /><disks><disk name=\"hda\" snapshot=\"internal\" />"
        "<disk name=\"hdc\" snapshot=\"no\" /></disks></domainsnapshot>")
    assert virt.create_flags(request) == libvirt_flags("ATOMIC")

    # Raw disks: an external disk-only snapshot where libvirt can also revert it (9.9.0+).
    Host.objects.filter(pk=demo.pk).update(libvirt_version="9.8.0")
    web = Guest.objects.select_related("host").get(name="web01")
    assert "cannot revert external ones (that needs libvirt 9.9.0)" in capability(web).reason
    Host.objects.filter(pk=demo.pk).update(libvirt_version="10.0.0")
    web = Guest.objects.select_related("host").get(name="web01")
    plan = capability(web)
    assert plan.kind == "external"
    request = domain_request(plan, "pre", "")
    assert virt.build_snapshot_xml(request) == (
        "<domainsnapshot><name>pre</name><memory snapshot=\"no\" /><disks>"
        "<disk name=\"xvda\" snapshot=\"external\"><driver type=\"qcow2\" /></disk>"
        "</disks></domainsnapshot>")
    assert virt.create_flags(request) == libvirt_flags("ATOMIC", "DISK_ONLY")
    parsed = virt.parse_snapshot_xml(
        "<domainsnapshot><name>pre</name><state>disk-snapshot</state><creationTime>17"
        "</creationTime><memory snapshot='no'/><disks><disk name='xvda' snapshot='external'>"
        "<driver type='qcow2'/><source file='/i/web01.pre'/></disk></disks>"
        "<parent><name>base</name></parent></domainsnapshot>")
    assert (parsed.kind, parsed.parent, parsed.created) == ("external", "base", 17)
    assert parsed.disks[0].source == "/i/web01.pre"


def libvirt_flags(*names: str) -> int:
    import libvirt

    flags = 0
    for name in names:
        flags |= getattr(libvirt, f"VIR_DOMAIN_SNAPSHOT_CREATE_{name}")
    return flags


def test_block_pools_cannot_snapshot(demo: Host) -> None:
    web = Guest.objects.select_related("host").get(name="web01")
    pool = Volume.objects.get(path="/var/lib/xen/images/web01.img").pool
    pool.pool_type = "iscsi"
    pool.save()
    plan = capability(web)
    assert plan.reason == ("No snapshots for disk xvda (raw in iscsi pool 'default'): iscsi "
                           "pools hold plain block devices, which have no snapshots.")


def test_viewer_reads_but_cannot_change(viewer_client: Client, operator_client: Client,
                                        demo: Host) -> None:
    win = Guest.objects.get(name="win2019")
    post(operator_client, f"/api/v1/guests/{win.pk}/destroy/")
    assert post(operator_client, f"/api/v1/guests/{win.pk}/snapshots/",
                {"name": "s1"}).status_code == 201
    base = f"/api/v1/guests/{win.pk}/snapshots"
    assert [s["name"] for s in snaps(viewer_client, win)["results"]] == ["s1"]
    assert post(viewer_client, f"{base}/", {"name": "s2"}).status_code == 403
    assert post(viewer_client, f"{base}/s1/revert/").status_code == 403
    assert viewer_client.delete(f"{base}/s1/").status_code == 403
    page = viewer_client.get(win.get_absolute_url()).content.decode()
    assert 'id="snapshots"' in page and "s1" in page
    assert 'id="snapshot-create"' not in page and "data-snapshot-action" not in page


def test_snapshot_section_on_the_guest_page(operator_client: Client, demo: Host) -> None:
    win = Guest.objects.get(name="win2019")
    post(operator_client, f"/api/v1/guests/{win.pk}/destroy/")
    created = operator_client.post(f"/guests/{win.pk}/snapshots/",
                                   {"name": "clean", "description": "fresh install"},
                                   follow=True)
    text = created.content.decode()
    assert "Snapshot &#x27;clean&#x27; taken" in text
    assert 'id="snapshot-create"' in text and "fresh install" in text
    assert 'data-snapshot-action="revert"' in text and 'data-snapshot-action="delete"' in text
    reverted = operator_client.post(f"/guests/{win.pk}/snapshots/clean/revert/", follow=True)
    assert "reverted to &#x27;clean&#x27;" in reverted.content.decode()
    deleted = operator_client.post(f"/guests/{win.pk}/snapshots/clean/delete/", follow=True)
    assert "Snapshot &#x27;clean&#x27; deleted" in deleted.content.decode()
    # A snapshot made outside the app, with a name no URL can carry, is listed only.
    virt.create_snapshot(VirtTarget(demo_uri()),
                         str(win.uuid), virt.SnapshotRequest(name="by virsh/x"))
    page = operator_client.get(win.get_absolute_url()).content.decode()
    assert "by virsh/x" in page and 'data-snapshot-action="revert"' not in page
    web = Guest.objects.get(name="web01")
    page = operator_client.get(web.get_absolute_url()).content.decode()
    assert "raw images have no internal snapshots" in page
    assert 'id="snapshot-create"' not in page


# --- LVM ------------------------------------------------------------------------------------

VG_POOL = """<pool type='logical'><name>vg0</name><source><name>vg0</name>
<format type='lvm2'/><device path='/dev/sdb'/></source><target><path>/dev/vg0</path></target>
</pool>"""


@pytest.fixture
def lvm_guest(demo: Host, admin_client: Client) -> Guest:
    """A shut-off guest whose disk is a logical volume of the demo host's VG 'vg0'."""
    conn = get_connection(VirtTarget(demo_uri()))  # the test driver's in-process state
    pool = conn.storagePoolDefineXML(VG_POOL, 0)
    pool.create(0)
    pool.createXML("<volume><name>db-root</name><capacity>1073741824</capacity>"
                   "<allocation>1073741824</allocation></volume>", 0)
    reconcile_pools(demo)
    volume = Volume.objects.get(path="/dev/vg0/db-root")
    assert volume.pool.pool_type == "logical"
    created = post(admin_client, "/api/v1/guests/", {
        "name": "lvm-db", "host": demo.pk, "type": "pv", "memory_mib": 256,
        "bootloader": "pygrub", "disks": [{"volume": volume.pk}]})
    assert created.status_code == 201, created.json()
    return Guest.objects.select_related("host").get(pk=created.json()["id"])


def test_lvm_snapshot_volume_xml() -> None:
    xml = virt.build_lvm_snapshot_xml("root.snap.s1", "/dev/vg0/root", 4 * 1024**3)
    assert xml == ("<volume><name>root.snap.s1</name>"
                   "<capacity unit=\"bytes\">4294967296</capacity>"
                   "<allocation unit=\"bytes\">4294967296</allocation>"
                   "<backingStore><path>/dev/vg0/root</path></backingStore></volume>")
    assert virt.parse_volume_backing(xml) == "/dev/vg0/root"


def test_lvm_snapshots_through_the_api(operator_client: Client, lvm_guest: Guest) -> None:
    base = f"/api/v1/guests/{lvm_guest.pk}/snapshots"
    listed = snaps(operator_client, lvm_guest)
    assert listed["capability"]["kind"] == "lvm"
    created = post(operator_client, f"{base}/", {"name": "s1", "description": "before"})
    assert created.status_code == 201, created.json()
    assert created.json()["kind"] == "lvm" and created.json()["disks"] == ["xvda"]
    [volume] = virt.list_volume_snapshots(VirtTarget(demo_uri()), "/dev/vg0/db-root")
    assert (volume.name, volume.path) == ("db-root.snap.s1", "/dev/vg0/db-root.snap.s1")
    assert volume.capacity == 1024**3  # copy-on-write space: the origin's size
    assert LvmSnapshot.objects.get(guest=lvm_guest).volumes[0]["origin"] == "/dev/vg0/db-root"
    # The same goes on a Xen host: LVM snapshots are the storage's, not the hypervisor's.
    Host.objects.filter(pk=lvm_guest.host_id).update(hypervisor_type="Xen")
    assert post(operator_client, f"{base}/", {"name": "s2"}).status_code == 201

    # Reverting rewrites the origin: never while the guest runs; else a copy-back job.
    post(operator_client, f"/api/v1/guests/{lvm_guest.pk}/start/")
    running = post(operator_client, f"{base}/s1/revert/")
    assert running.status_code == 409 and "shut it down before reverting an LVM snapshot" in \
        running.json()["detail"]
    post(operator_client, f"/api/v1/guests/{lvm_guest.pk}/destroy/")
    job = post(operator_client, f"{base}/s1/revert/")
    assert job.status_code == 202 and job.json()["kind"] == "guest.snapshot.revert"
    busy = operator_client.delete(f"{base}/s1/")
    assert busy.status_code == 409 and "busy with job" in busy.json()["detail"]
    # The test driver has no volume streams, so the copy-back itself cannot run here (it
    # runs on a lab host in test_snapshots_lab.py): the job fails with libvirt's reason.
    run_job(job.json()["id"], revert_body, task_id="t", worker="w")
    failed = Job.objects.get(pk=job.json()["id"])
    assert failed.state == "failed" and "virStorageVolDownload" in failed.error

    assert operator_client.delete(f"{base}/s1/").status_code == 204
    assert [v.name for v in virt.list_volume_snapshots(VirtTarget(demo_uri()),
                                                       "/dev/vg0/db-root")] == \
        ["db-root.snap.s2"]
    assert [s["name"] for s in snaps(operator_client, lvm_guest)["results"]] == ["s2"]

    # Deleting the guest with its volumes takes the snapshot volumes first.
    gone = operator_client.delete(f"/api/v1/guests/{lvm_guest.pk}/?confirm=lvm-db"
                                  "&delete_volumes=true")
    assert gone.status_code == 204, gone.content
    pool = get_connection(VirtTarget(demo_uri())).storagePoolLookupByName("vg0")
    assert pool.listVolumes() == []


def test_reverting_to_a_running_snapshot_respects_exclusivity(operator_client: Client,
                                                              demo: Host) -> None:
    """A revert that starts the guest is a start: not while another guest writes its disk."""
    win = Guest.objects.get(name="win2019")
    disk = Volume.objects.get(path="/var/lib/xen/images/win2019.qcow2")
    created = post(operator_client, "/api/v1/guests/", {
        "name": "win-twin", "host": demo.pk, "type": "hvm", "memory_mib": 512,
        "disks": [{"volume": disk.pk}]})
    assert created.status_code == 201, created.json()
    twin = Guest.objects.get(pk=created.json()["id"])
    api = "/api/v1/guests"
    post(operator_client, f"{api}/{win.pk}/destroy/")
    assert post(operator_client, f"{api}/{twin.pk}/start/").status_code == 200
    run(post(operator_client, f"{api}/{twin.pk}/snapshots/", {"name": "up"}), create_body)
    post(operator_client, f"{api}/{twin.pk}/destroy/")
    assert post(operator_client, f"{api}/{win.pk}/start/").status_code == 200
    refused = post(operator_client, f"{api}/{twin.pk}/snapshots/up/revert/")
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(
        "Guest 'win-twin' cannot be reverted to 'up', which starts it: Volume "
        "/var/lib/xen/images/win2019.qcow2 is attached writable to guest 'win2019' on host "
        "'demo' (hda)")
