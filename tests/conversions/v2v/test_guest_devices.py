"""How an imported guest sees its disks and NICs, from the inspection of its first disk
(conversions.v2v.guest_devices), and the inspection in the import preview and job."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from conversions.inspection.drivers import Drivers
from conversions.inspection.result import BootLoader, Inspection, KernelInfo, RootInfo
from conversions.v2v.guest_devices import IDE, SATA, VIRTIO, XEN, plan_devices
from conversions.v2v.proposal import ImportRefused
from hosts.virt import domain_xml as dx
from lab.bootdisk import ensure_boot_disk
from storage.models import Volume
from tests.conversions.boot_disks import damaged_copy
from tests.conversions.v2v.conftest import make_vmdk
from tests.conversions.v2v.test_import_api import post
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

NAME = "web"


def found(root: str = "/dev/sda2", *, disk: tuple[str, ...] = ("ahci", "virtio_blk"),
          network: tuple[str, ...] = ("virtio_net", "e1000"),
          xen_pv: bool | None = True) -> Inspection:
    naming = "device" if root.startswith("/dev/") else "uuid"
    kernel = KernelInfo(path="partition 1:/vmlinuz", initrd="", version="6.1", arch="x86_64",
                        compression="xz", xen_pv=xen_pv, xen_pvh=xen_pv,
                        evidence=("kernel image: Xen ELF notes",), cmdline="")
    return Inspection(
        os_family="linux", distribution="debian", version="12", pretty_name="Debian 12",
        arch="x86_64", arch_evidence="kernel", hostname="web", firmware="bios",
        partition_table="mbr", partitions=(), boot_loader=BootLoader("syslinux", "", ""),
        root=RootInfo(2, "ext4", root, naming, root, naming, 1), kernel=kernel,
        drivers=Drivers(disk, network, (), disk + network, ("initramfs",)))


@pytest.mark.parametrize(("root", "disk", "layout"), [
    ("/dev/sda2", ("ahci", "virtio_blk"), SATA),  # names kept: SATA disks are sd*
    ("UUID=1234", ("ahci", "virtio_blk"), VIRTIO),  # free to move to virtio
    ("/dev/sda2", ("ata_piix",), IDE),  # libata names IDE disks sd* too
    ("/dev/vda2", ("virtio_blk", "ahci"), VIRTIO),
    ("/dev/sda2", ("virtio_blk",), None),  # nothing matches: the driver's default, said so
])
def test_the_disk_bus_follows_drivers_and_root_naming(
        root: str, disk: tuple[str, ...], layout: dx.DiskLayout | None) -> None:
    plan = plan_devices(NAME, found(root, disk=disk), "qemu", dx.HVM)
    assert plan.layout == layout
    assert plan.notes[0].startswith("Disks: ")


@pytest.mark.parametrize(("network", "model"), [
    (("virtio_net", "e1000"), "virtio"), (("e1000",), "e1000"), (("8139cp",), "rtl8139"),
    ((), "")])
def test_the_nic_model_follows_drivers(network: tuple[str, ...], model: str) -> None:
    assert plan_devices(NAME, found(network=network), "kvm", dx.HVM).nic_model == model


def test_xen_hvm_keeps_emulated_disks() -> None:
    plan = plan_devices(NAME, found(), "xen", dx.HVM)
    assert plan.layout is None and plan.nic_model == "virtio"


def test_pv_needs_a_pv_kernel_blkfront_and_a_root_it_can_find() -> None:
    with pytest.raises(ImportRefused, match=r"no Xen PV support .*Xen ELF notes.*as HVM"):
        plan_devices(NAME, found("UUID=1", disk=("xen_blkfront",), xen_pv=False), "xen",
                     dx.PV)
    with pytest.raises(ImportRefused, match="no xen-blkfront"):
        plan_devices(NAME, found("UUID=1", disk=("ahci",)), "xen", dx.PV)
    with pytest.raises(ImportRefused, match="names its root /dev/sda2"):
        plan_devices(NAME, found("/dev/sda2", disk=("xen_blkfront",)), "xen", dx.PV)
    plan = plan_devices(NAME, found("UUID=1", disk=("xen_blkfront",)), "xen", dx.PV)
    assert (plan.layout, plan.nic_model) == (XEN, "")


def test_an_uninspected_guest_gets_the_defaults() -> None:
    plan = plan_devices(NAME, None, "qemu", dx.HVM)
    assert (plan.layout, plan.nic_model) == (None, "")
    assert "not inspected" in plan.notes[0]


VMX = ('displayName = "src"\nmemsize = "256"\nnumvcpus = "1"\nguestOS = "debian12-64"\n'
       'scsi0.present = "TRUE"\nscsi0.virtualDev = "lsilogic"\nscsi0:0.present = "TRUE"\n'
       'scsi0:0.fileName = "disk0.vmdk"\n')


def _vm(area: Path, raw: Path, subformat: str = "monolithicSparse") -> None:
    vm = area / "vm"
    vm.mkdir()
    make_vmdk(vm, "disk0", subformat, raw)
    (vm / "vm.vmx").write_text(VMX)


@pytest.mark.django_db
@pytest.mark.parametrize("subformat", ["monolithicSparse", "twoGbMaxExtentSparse"])
def test_the_preview_shows_what_the_guest_is(operator_client: Client, area: Path,
                                             subformat: str) -> None:
    """Both layouts: a split VMDK's descriptor names its extents beside itself."""
    disk = ensure_boot_disk("src-device", "device")
    _vm(area, disk.path, subformat)
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
    assert answer.status_code == 200, answer.json()
    seen = answer.json()["inspection"]
    assert (seen["os_family"], seen["distribution"], seen["version"], seen["arch"]) == (
        "linux", "debian", "12", "x86_64")
    assert (seen["hostname"], seen["firmware"], seen["boot_loader"]["name"]) == (
        "src-device", "bios", "extlinux")
    assert (seen["root"]["fstab_spec"], seen["root"]["fstab_naming"]) == ("/dev/sda2", "device")
    assert seen["kernel"]["xen_pv"] is True
    assert {"ahci", "virtio_blk", "xen_blkfront"} <= set(seen["drivers"]["disk"])
    page = operator_client.post("/storage/v2v/", {"step": "inspect", "source": "vm/vm.vmx"})
    assert b"src-device" in page.content and b"/dev/sda2" in page.content


@pytest.mark.django_db
def test_a_damaged_partition_table_refuses_the_import(operator_client: Client, area: Path,
                                                      demo: object, tmp_path: Path) -> None:
    raw = damaged_copy(ensure_boot_disk("src-device", "device").path, tmp_path / "damaged.raw")
    _vm(area, raw)
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
    assert answer.status_code == 422
    assert "partition table is damaged" in answer.json()["detail"]
    volumes, jobs = Volume.objects.count(), Job.objects.count()
    pool = demo.pools.get(name="default")  # type: ignore[attr-defined]
    refused = post(operator_client, "/api/v1/imports/", {
        "source": "vm/vm.vmx", "host": demo.pk, "pool": pool.pk})  # type: ignore[attr-defined]
    assert refused.status_code == 422 and "partition table is damaged" in refused.json()["detail"]
    assert (Volume.objects.count(), Job.objects.count()) == (volumes, jobs)
    assert AuditRecord.objects.filter(action="guest.import", result="failed").exists()
