"""Imports through the API into a real lab host's `local` pool: the volumes hold what
the source disks held (`qemu-img compare`), the guest is defined with the source's MACs;
a failing disk leaves nothing behind; so does a cancelled import."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.v2v.import_job import run_import
from guests.models import Guest
from hosts.virt import VirtTarget, domains
from storage.models import Pool
from tests.conversions.v2v.conftest import MIB, make_vmdk, patterned_raw, qemu_img
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


VMX = """.encoding = "UTF-8"
displayName = "{name}"
memsize = "256"
numvcpus = "2"
guestOS = "debian10-64"
scsi0.present = "TRUE"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "disk0.vmdk"
scsi0:1.present = "TRUE"
scsi0:1.fileName = "disk1.vmdk"
ethernet0.present = "TRUE"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:01:02:03"
ethernet0.virtualDev = "vmxnet3"
annotation = "imported|0Afrom VMware"
"""


def _vm(area: Path, tmp_path: Path, name: str, second: str = "twoGbMaxExtentFlat") \
        -> tuple[Path, Path]:
    raw0 = patterned_raw(tmp_path / "r0.raw", 16 * MIB)
    raw1 = patterned_raw(tmp_path / "r1.raw", 8 * MIB)
    make_vmdk(area, "disk0", "monolithicSparse", raw0)
    make_vmdk(area, "disk1", second, raw1)
    (area / "vm.vmx").write_text(VMX.format(name=name))
    return raw0, raw1


def _start(client: Client, area: Path, pool: Pool, **extra: Any) -> Any:
    return client.post("/api/v1/imports/", {
        "source": f"{area.name}/vm.vmx", "host": pool.host_id, "pool": pool.pk,
        "format": "qcow2", **extra}, content_type="application/json")


def _pool_files(pool: Pool) -> set[str]:
    return {p.name for p in Path(pool.target_path).iterdir()}


def test_vmx_import_into_a_lab_pool(operator_client: Client, local_pool: Pool,
                                   lab_area: Path, tmp_path: Path) -> None:
    name = f"imp-{uuid.uuid4().hex[:6]}"
    raw0, raw1 = _vm(lab_area, tmp_path, name)
    inspected = operator_client.post("/api/v1/imports/inspect/",
                                     {"source": f"{lab_area.name}/vm.vmx"},
                                     content_type="application/json")
    assert inspected.status_code == 200, inspected.json()
    proposal = inspected.json()
    assert (proposal["name"], proposal["vcpus"], proposal["memory_mib"]) == (name, 2, 256)
    assert [(d["virtual_size"], d["format"]) for d in proposal["disks"]] == [
        (16 * MIB, "vmdk"), (8 * MIB, "vmdk")]
    assert proposal["nics"][0]["mac"] == "00:50:56:01:02:03"
    assert any("VMware Tools" in w for w in proposal["warnings"])

    started = _start(operator_client, lab_area, local_pool)
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    assert job.done == job.total == 24 * MIB
    guest = Guest.objects.get(pk=job.result["guest"])
    try:
        assert guest.name == name and guest.vcpus == 2
        volumes = job.result["volumes"]
        qemu_img("compare", "-f", "raw", "-F", "qcow2", str(raw0), volumes[0])
        qemu_img("compare", "-f", "raw", "-F", "qcow2", str(raw1), volumes[1])
        defined = domains.get_domain(VirtTarget(guest.host.uri, allow_insecure=True),
                                     str(guest.uuid)).xml
        assert [n.mac for n in defined.nics] == ["00:50:56:01:02:03"]
        assert [d.source for d in defined.disks if d.device == "disk"] == volumes
        assert (defined.memory_mib, defined.description) == (256, "imported\nfrom VMware")
        assert AuditRecord.objects.filter(action="guest.import", result="ok").exists()
    finally:
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in job.result["volumes"]:
            Path(path).unlink(missing_ok=True)


def test_a_failing_disk_leaves_nothing(operator_client: Client, local_pool: Pool,
                                       lab_area: Path, tmp_path: Path) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    _vm(lab_area, tmp_path, name, second="streamOptimized")
    before = _pool_files(local_pool)
    started = _start(operator_client, lab_area, local_pool, format="raw")
    assert started.status_code == 202
    # The second disk's grains are cut off after the checks passed (a truncated copy).
    disk1 = lab_area / "disk1.vmdk"
    disk1.write_bytes(disk1.read_bytes()[:disk1.stat().st_size * 2 // 3])
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "failed" and "Nothing of the import was kept" in job.error, job.error
    assert "could not convert" in job.error  # disk0 was converted already, then removed
    assert _pool_files(local_pool) == before
    assert not Guest.objects.filter(name=name).exists()
    assert AuditRecord.objects.filter(action="guest.import", result="failed").exists()


def test_a_cancelled_import_leaves_nothing(operator_client: Client, local_pool: Pool,
                                           lab_area: Path, tmp_path: Path) -> None:
    name = f"cxl-{uuid.uuid4().hex[:6]}"
    _vm(lab_area, tmp_path, name)
    before = _pool_files(local_pool)
    started = _start(operator_client, lab_area, local_pool)
    Job.objects.filter(pk=started.json()["id"]).update(cancel_requested=True)
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    assert Job.objects.get(pk=started.json()["id"]).state == "cancelled"
    assert _pool_files(local_pool) == before
    assert not Guest.objects.filter(name=name).exists()


@pytest.mark.parametrize("gzip_disks", [False, True])
def test_ova_import_into_a_lab_pool(operator_client: Client, local_pool: Pool,
                                    lab_area: Path, tmp_path: Path, gzip_disks: bool) -> None:
    from tests.conversions.v2v.ova_maker import build_ova

    name = f"ova-{uuid.uuid4().hex[:6]}"
    raws = [patterned_raw(tmp_path / f"r{i}.raw", size)
            for i, size in enumerate((8 * MIB, 4 * MIB))]
    work = tmp_path / "w"
    work.mkdir()
    disks = [make_vmdk(work, f"d{i}", "streamOptimized", raw) for i, raw in enumerate(raws)]
    build_ova(lab_area / "vm.ova", name, disks, gzip_disks=gzip_disks)
    started = operator_client.post("/api/v1/imports/", {
        "source": f"{lab_area.name}/vm.ova", "host": local_pool.host_id,
        "pool": local_pool.pk, "format": "raw"}, content_type="application/json")
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    guest = Guest.objects.get(pk=job.result["guest"])
    try:
        for raw, volume in zip(raws, job.result["volumes"], strict=True):
            qemu_img("compare", "-f", "raw", "-F", "raw", str(raw), volume)
        defined = domains.get_domain(VirtTarget(guest.host.uri, allow_insecure=True),
                                     str(guest.uuid)).xml
        assert [n.mac for n in defined.nics] == ["00:50:56:aa:bb:01"]
    finally:
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in job.result["volumes"]:
            Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("compress", ["", "zst"])
def test_xva_import_into_a_lab_pool(operator_client: Client, local_pool: Pool,
                                    lab_area: Path, tmp_path: Path, compress: str) -> None:
    from tests.conversions.v2v.xva_maker import build_xva

    name = f"xva-{uuid.uuid4().hex[:6]}"
    raws = [patterned_raw(tmp_path / "r0.raw", 6 * MIB),
            patterned_raw(tmp_path / "r1.raw", 3 * MIB)]
    build_xva(lab_area / "vm.xva", name, raws, compress=compress)
    started = operator_client.post("/api/v1/imports/", {
        "source": f"{lab_area.name}/vm.xva", "host": local_pool.host_id,
        "pool": local_pool.pk, "format": "qcow2"}, content_type="application/json")
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    guest = Guest.objects.get(pk=job.result["guest"])
    try:
        for raw, volume in zip(raws, job.result["volumes"], strict=True):
            qemu_img("compare", "-f", "raw", "-F", "qcow2", str(raw), volume)
        defined = domains.get_domain(VirtTarget(guest.host.uri, allow_insecure=True),
                                     str(guest.uuid)).xml
        assert [n.mac for n in defined.nics] == ["02:00:00:aa:bb:cc"]
        assert (defined.vcpus, defined.memory_mib) == (2, 512)
    finally:
        domains.undefine(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        for path in job.result["volumes"]:
            Path(path).unlink(missing_ok=True)
