"""Converted machines boot: the lab's bootable disk (MBR, SYSLINUX, ext4 root with fstab and a
hostname; lab.bootdisk) in the shapes real exports have, imported through the API onto a
real lab host, started, and watched on its serial console until the guest has mounted its
own root file system and printed its hostname and the MACs of its NICs: the source's,
kept (the NICs are on a bridge of this machine; the lab hosts have no libvirt network).

Shapes: a VMware VM directory (lsilogic SCSI, vmxnet3 with a static MAC) with the disk as
monolithicSparse and as twoGbMaxExtentSparse, an OVA with a streamOptimized disk, an XVA
written by the tests' own writer (xva_maker), and the XVA the app writes from the VMware
directory in one call (checked by the spec-written checker first).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.v2v.import_job import run_import
from conversions.v2v.xva_output import run_convert_to_xva
from guests.models import Guest
from lab.bootdisk import BootDisk, ensure_boot_disk
from storage.models import Pool
from tests.conversions.boot_disks import boot_to_banner, defined_macs, remove_guest
from tests.conversions.bridge import lab_bridge
from tests.conversions.v2v.conftest import make_vmdk
from tests.conversions.v2v.test_export_lab import check_xva
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(1200)]

MAC = "00:50:56:01:02:03"

VMX = """.encoding = "UTF-8"
displayName = "{name}"
memsize = "256"
numvcpus = "1"
guestOS = "debian12-64"
firmware = "bios"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsilogic"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "disk0.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.addressType = "static"
ethernet0.address = "{mac}"
"""


@pytest.fixture(scope="module")
def disks() -> dict[str, BootDisk]:
    return {naming: ensure_boot_disk(f"src-{naming}", naming) for naming in ("device", "uuid")}


def vmware_dir(area: Path, disk: BootDisk, subformat: str, name: str) -> str:
    vm = area / name
    vm.mkdir()
    make_vmdk(vm, "disk0", subformat, disk.path)
    (vm / "vm.vmx").write_text(VMX.format(name=name, mac=MAC))
    return f"{area.name}/{name}/vm.vmx"


def _ova(area: Path, disk: BootDisk, name: str, tmp_path: Path) -> str:
    from tests.conversions.v2v.ova_maker import build_ova, ovf_text

    vmdk = make_vmdk(tmp_path, "disk0", "streamOptimized", disk.path)
    ovf = ovf_text(name, [(vmdk.name, vmdk.stat().st_size, disk.size_bytes)], vcpus="1",
                   memory="256").replace(
        '<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>', "")
    build_ova(area / f"{name}.ova", name, [vmdk], ovf=ovf)
    return f"{area.name}/{name}.ova"


def _xva(area: Path, disk: BootDisk, name: str) -> str:
    from tests.conversions.v2v.xva_maker import build_xva

    build_xva(area / f"{name}.xva", name, [disk.path], memory_mib=256, vcpus=1, mac=MAC)
    return f"{area.name}/{name}.xva"


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    with lab_bridge() as name:
        yield name


@pytest.fixture
def booted(operator_client: Client, local_pool: Pool, bridge: str) -> Iterator[Any]:
    """Import a source with its NICs on a bridge of this machine, check the kept MACs in
    the definition, start the guest, return its console up to the banner, which names the
    MACs the guest sees (tests.conversions.boot_disks); tears the guest and its volumes down
    afterwards."""
    made: list[tuple[Guest, list[str]]] = []

    def boot(source: str, hostname: str, macs: list[str]) -> str:
        started = operator_client.post("/api/v1/imports/", {
            "source": source, "host": local_pool.host_id, "pool": local_pool.pk,
            "format": "qcow2", "bridge": bridge}, content_type="application/json")
        assert started.status_code == 202, started.json()
        run_job(started.json()["id"], run_import, task_id="t", worker="w")
        job = Job.objects.get(pk=started.json()["id"])
        assert job.state == "succeeded", job.error
        guest = Guest.objects.select_related("host").get(pk=job.result["guest"])
        made.append((guest, job.result["volumes"]))
        assert defined_macs(guest) == macs
        return boot_to_banner(operator_client, guest, hostname, macs)

    yield boot
    for guest, volumes in made:
        remove_guest(guest, volumes)


@pytest.mark.parametrize(("subformat", "naming"), [
    ("monolithicSparse", "device"), ("twoGbMaxExtentSparse", "uuid")])
def test_a_vmware_vm_boots_after_import(booted: Any, lab_area: Path, disks: dict[str, BootDisk],
                                        subformat: str, naming: str) -> None:
    disk = disks[naming]
    source = vmware_dir(lab_area, disk, subformat, f"vm-{uuid.uuid4().hex[:6]}")
    booted(source, disk.hostname, [MAC])


def test_an_ova_boots_after_import(booted: Any, lab_area: Path, disks: dict[str, BootDisk],
                                   tmp_path: Path) -> None:
    disk = disks["device"]
    booted(_ova(lab_area, disk, f"ova-{uuid.uuid4().hex[:6]}", tmp_path), disk.hostname,
           ["00:50:56:aa:bb:01"])


def test_an_xva_boots_after_import(booted: Any, lab_area: Path,
                                   disks: dict[str, BootDisk]) -> None:
    disk = disks["uuid"]
    booted(_xva(lab_area, disk, f"xva-{uuid.uuid4().hex[:6]}"), disk.hostname, [MAC])


def test_the_xva_written_from_a_vmware_vm_boots(booted: Any, operator_client: Client,
                                                lab_area: Path,
                                                disks: dict[str, BootDisk]) -> None:
    disk = disks["device"]
    name = f"seed-{uuid.uuid4().hex[:6]}"
    source = vmware_dir(lab_area, disk, "monolithicSparse", name)
    started = operator_client.post("/api/v1/imports/", {"source": source, "output": "xva"},
                                   content_type="application/json")
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], run_convert_to_xva, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "succeeded", job.error
    from conversions.v2v.export_job import export_dir

    written = export_dir() / job.result["file"]
    try:
        assert list(check_xva(written.read_bytes()).values()) == [disk.path.read_bytes()]
        shutil.copy(written, lab_area / f"{name}.xva")
    finally:
        written.unlink(missing_ok=True)
    booted(f"{lab_area.name}/{name}.xva", disk.hostname, [MAC])
