"""The P2V job body on the demo host (libvirt's test driver), its source and its copy
replaced by stand-ins: the volumes are made through the storage services, written, verified
and kept or removed as the job ends; the guest's request is checked without DRF. The demo's
volumes are not files here: where a test lets the job read "the copy" of the first disk, it
is a file of the lab's bootable disk (real inspection, real device choice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conversions.p2v import job as p2v_job
from conversions.p2v.inventory import Cpu, Disk, Inventory, Nic
from conversions.p2v.ssh import P2VError, Source
from conversions.v2v.guest_devices import NOT_HERE, SATA
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from lab.bootdisk import ensure_boot_disk
from storage.models import Pool, Volume
from tests.conversions.boot_disks import damaged_copy
from xenweb.audit.models import AuditRecord
from xenweb.jobs.errors import JobCancelled
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db
MIB = 1024 * 1024
DEVICES = ("/dev/sda", "/dev/sdb")


def _disk(path: str) -> Disk:
    return Disk(path=path, name=path.rsplit("/", 1)[-1], type="disk", size=2 * MIB,
                model="", serial="", pttype="dos", fstype="", removable=False,
                readonly=False, mountpoints=[])


def _inventory(hostname: str = "db1") -> Inventory:
    return Inventory(hostname=hostname, os_name="Debian 12", os_id="debian",
                     cpu=Cpu(count=2, model="x", vendor="x", lm=True, pae=True, vmx=False,
                             svm=False),
                     memory_bytes=512 * MIB, firmware="bios",
                     disks=[_disk(path) for path in DEVICES],
                     nics=[Nic(name="eth0", mac="00:50:56:01:02:03", state="UP", mtu=1500)],
                     tools=["python3"], root=True)


class Source_:
    """What the job sees of the source: its inventory, a copy that writes nothing (the
    test driver takes no bytes), a verification that may fail or cancel for one disk."""

    def __init__(self) -> None:
        self.inventory = _inventory()
        self.fail_verify: dict[str, BaseException] = {}

    def copy(self, source: Any, copy: Any, target: Any, **kwargs: Any) -> None:
        copy.attempts, copy.wire_bytes = 1, 4096

    def verify(self, copy: Any, target: Any, progress: Any) -> None:
        if copy.device in self.fail_verify:
            raise self.fail_verify[copy.device]


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> Source_:
    fake = Source_()
    monkeypatch.setattr(p2v_job, "checked", lambda source: source)
    monkeypatch.setattr(p2v_job, "confirm_host_key", lambda source, fingerprint: fingerprint)
    monkeypatch.setattr(p2v_job, "read_inventory", lambda source: fake.inventory)
    monkeypatch.setattr(p2v_job, "copy_disk", fake.copy)
    monkeypatch.setattr(p2v_job, "verify_disk", fake.verify)
    return fake


def _start(demo: Host, user: Any, name: str, fmt: str = "raw") -> int:
    pool = Pool.objects.get(host=demo, name="default")
    wanted = p2v_job.Request(source=Source("192.0.2.9"), fingerprint="SHA256:x",
                             disks=list(DEVICES), host=demo, pool=pool, name=name,
                             format=fmt)
    return p2v_job.start_p2v(wanted, user=user, enqueue=False).pk


def _run(job_id: int) -> Job:
    run_job(job_id, p2v_job.p2v_body, task_id=f"test-{job_id}", worker="test")
    return Job.objects.get(pk=job_id)


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_the_copies_become_the_guests_disks(demo: Host, admin_user: Any, source: Source_,
                                            fmt: str) -> None:
    job = _run(_start(demo, admin_user, f"p2v-{fmt}", fmt))
    assert job.state == "succeeded", job.error
    guest = Guest.objects.get(pk=job.result["guest"])
    volumes = [Volume.objects.get(pk=disk["volume"]) for disk in job.result["disks"]]
    suffix = ".img" if fmt == "raw" else ".qcow2"
    assert [volume.name for volume in volumes] == [
        f"p2v-{fmt}-p2v-disk0{suffix}", f"p2v-{fmt}-p2v-disk1{suffix}"]
    assert all(volume.content_state == "ready" for volume in volumes)
    assert not Volume.objects.filter(name__endswith=".part").exists()  # staging copies
    defined = domains.get_domain(VirtTarget(demo.uri), str(guest.uuid)).xml
    assert [(disk.source, disk.format) for disk in defined.disks] == [
        (volume.path, fmt) for volume in volumes]
    assert [nic.mac for nic in defined.nics] == ["00:50:56:01:02:03"]
    assert defined.description == "P2V of db1 (Debian 12)"
    assert job.result["devices"] == [NOT_HERE]  # the demo's volumes are not files here
    made = AuditRecord.objects.filter(action="volume.create", result="ok")
    assert {entry.target_label for entry in made} == (
        {volume.name for volume in volumes} if fmt == "raw" else
        {f"p2v-qcow2-p2v-disk{index}.part" for index in range(2)})
    assert AuditRecord.objects.filter(action="p2v.run", result="ok").exists()


def test_a_failure_keeps_the_verified_volumes_only(demo: Host, admin_user: Any,
                                                   source: Source_) -> None:
    source.fail_verify[DEVICES[1]] = P2VError("Region 0 differs.")
    job = _run(_start(demo, admin_user, "p2v-half"))
    assert job.state == "failed"
    kept = Volume.objects.get(name="p2v-half-p2v-disk0.img")
    assert job.error == f"Region 0 differs. The verified volumes were kept: {kept.path}."
    assert kept.content_state == "ready"
    assert not Volume.objects.filter(name="p2v-half-p2v-disk1.img").exists()
    assert not Guest.objects.filter(name="p2v-half").exists()
    assert AuditRecord.objects.filter(action="volume.delete",
                                      target_label="p2v-half-p2v-disk1.img").exists()


def test_a_cancel_removes_every_volume(demo: Host, admin_user: Any, source: Source_) -> None:
    source.fail_verify[DEVICES[1]] = JobCancelled()
    job = _run(_start(demo, admin_user, "p2v-cxl"))
    assert job.state == "cancelled"
    assert not Volume.objects.filter(name__startswith="p2v-cxl-").exists()
    assert not Guest.objects.filter(name="p2v-cxl").exists()
    record = AuditRecord.objects.get(action="p2v.run", result="failed")
    assert record.message == "cancelled" and len(record.detail["removed"]) == 2


def test_the_proposed_guest_is_checked_without_drf(demo: Host, admin_user: Any,
                                                   source: Source_,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import rest_framework.serializers

    def no_serializers(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a DRF serializer in the P2V job")

    monkeypatch.setattr(rest_framework.serializers.Serializer, "__init__", no_serializers)
    source.inventory = _inventory(hostname="h" * 1000)
    with pytest.raises(P2VError, match="The proposed guest is not valid: description: "):
        _start(demo, admin_user, "p2v-long")
    with pytest.raises(P2VError, match="The proposed guest is not valid: name: Guest names"):
        _start(demo, admin_user, "not a name")
    assert not Job.objects.exists()


def _first_copy_is(monkeypatch: pytest.MonkeyPatch, image: Path) -> None:
    """The job reads the copy of the first disk from `image` (this machine "holds" it)."""
    monkeypatch.setattr(p2v_job, "direct_path", lambda host, path: str(image)
                        if path.endswith("-p2v-disk0.img") else None)


def test_the_guest_gets_the_devices_its_first_disk_allows(
        demo: Host, admin_user: Any, source: Source_, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its fstab names the root /dev/sda2: SATA (sd*), not the default virtio (vd*)."""
    _first_copy_is(monkeypatch, ensure_boot_disk("p2v-units", "device").path)
    job = _run(_start(demo, admin_user, "p2v-dev"))
    assert job.state == "succeeded", job.error
    assert job.result["devices"] == [
        "Disks: sata (the guest has ahci; the root is named /dev/sda2).",
        "NICs: virtio (the guest has virtio_net)."]
    logged = [line for _stamp, line in job.log]
    assert all(note in logged for note in job.result["devices"])
    guest = Guest.objects.get(pk=job.result["guest"])
    defined = domains.get_domain(VirtTarget(demo.uri), str(guest.uuid)).xml
    assert [(disk.target, disk.bus) for disk in defined.disks] == [
        ("sda", SATA.bus), ("sdb", SATA.bus)]
    assert [nic.model for nic in defined.nics] == ["virtio"]


def test_a_damaged_first_disk_fails_the_job_and_nothing_is_kept(
        demo: Host, admin_user: Any, source: Source_, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Its copy was verified, yet it goes with the rest: the refusal comes before it is
    kept."""
    _first_copy_is(monkeypatch, damaged_copy(ensure_boot_disk("p2v-units", "device").path,
                                             tmp_path / "damaged.img"))
    job = _run(_start(demo, admin_user, "p2v-bad"))
    assert job.state == "failed"
    assert job.error.startswith(f"Inspecting the copy of {DEVICES[0]}: The partition table "
                                "is damaged"), job.error
    assert job.error.endswith("Nothing was imported."), job.error
    assert not Volume.objects.filter(name__startswith="p2v-bad-").exists()
    assert not Guest.objects.filter(name="p2v-bad").exists()
    deleted = AuditRecord.objects.filter(action="volume.delete", result="ok")
    assert {entry.target_label for entry in deleted} == {
        "p2v-bad-p2v-disk0.img", "p2v-bad-p2v-disk1.img"}
    assert AuditRecord.objects.filter(action="p2v.run", result="failed").exists()
