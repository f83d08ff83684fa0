"""How an imported guest sees its disks and NICs, from the inspection of its first disk
(conversions.v2v.guest_devices), and the inspection in the import preview and job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.test import Client

from conversions.inspection.drivers import Drivers
from conversions.inspection.inspector import inspect_image
from conversions.inspection.result import BootLoader, Inspection, KernelInfo, RootInfo
from conversions.rewrite.convert import XEN_PV
from conversions.v2v.guest_devices import IDE, SATA, VIRTIO, XEN, choose_type, plan_devices
from conversions.v2v.proposal import ImportRefused
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, domains
from hosts.virt import domain_xml as dx
from hosts.virt.capabilities import HVM_UNAVAILABLE
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
          xen_pv: bool | None = True, loader: str = "syslinux") -> Inspection:
    naming = "device" if root.startswith("/dev/") else "uuid"
    kernel = KernelInfo(path="partition 1:/vmlinuz", initrd="", version="6.1", arch="x86_64",
                        compression="xz", xen_pv=xen_pv, xen_pvh=xen_pv,
                        evidence=("kernel image: Xen ELF notes",), cmdline="")
    return Inspection(
        os_family="linux", distribution="debian", version="12", pretty_name="Debian 12",
        arch="x86_64", arch_evidence="kernel", hostname="web", firmware="bios",
        partition_table="mbr", partitions=(),
        boot_loader=BootLoader(loader, "", "", 1, "/syslinux.cfg"),
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


@pytest.mark.parametrize(("guest", "why"), [
    (found("UUID=1", disk=("xen_blkfront",), xen_pv=False),
     r"its kernel has no Xen PV support \(kernel image: Xen ELF notes\)\. Import it as HVM"),
    (found("UUID=1", disk=("xen_blkfront",), xen_pv=None),
     "its kernel is not known to support Xen PV"),
    (found("UUID=1", disk=("ahci",)), "it has no xen-blkfront driver"),
    (found("UUID=1", disk=("xen_blkfront",), loader=""),
     r"pygrub cannot read its boot loader configuration \(none was found\)"),
    (found("UUID=1", disk=("xen_blkfront",), loader="bls"),
     r"pygrub cannot read its boot loader configuration \(bls\)"),
])
def test_pv_needs_a_pv_kernel_blkfront_and_a_config_pygrub_reads(guest: Inspection,
                                                                 why: str) -> None:
    with pytest.raises(ImportRefused, match=f"'web' cannot run as a Xen PV guest: {why}"):
        plan_devices(NAME, guest, "xen", dx.PV)


@pytest.mark.parametrize("root", ["UUID=1", "/dev/sda2", "/dev/xvda2"])
def test_a_pv_guest_is_converted_for_xen(root: str) -> None:
    """Any root naming: the copy's fstab and boot loader are converted (names to UUIDs where
    sd becomes xvd, the console on hvc0)."""
    plan = plan_devices(NAME, found(root, disk=("xen_blkfront",)), "xen", dx.PV)
    assert (plan.layout, plan.nic_model, plan.rewrite) == (XEN, "", XEN_PV)
    assert "pygrub reads its syslinux configuration" in plan.notes[-1]


def _host(*types: str) -> Host:
    guests = [{"os_type": t, "arch": "x86_64", "domain_types": ["xen"]} for t in types]
    return Host(name="xen1", uri="xen:///system", capabilities={"guests": guests})


PV_READY = found("/dev/sda2", disk=("xen_blkfront", "ahci"))


@pytest.mark.parametrize(("host", "guest", "requested", "chosen", "why"), [
    (_host("xen", "hvm"), PV_READY, "", dx.PV, "Type: Xen PV, booted by pygrub"),
    (_host("xen"), PV_READY, "", dx.PV, "Type: Xen PV"),
    (_host("xen", "hvm"), found(disk=("ahci",)), "", dx.HVM,
     "Type: HVM (not PV: it has no xen-blkfront driver for its disks)."),
    (_host("hvm"), PV_READY, "", dx.HVM, ""),  # a QEMU/KVM host: the source's type
    (_host("xen", "hvm"), None, "", dx.HVM, ""),  # not inspected: the source's type
    (_host("xen", "hvm"), PV_READY, "hvm", dx.HVM, ""),  # asked for
    (_host("xen"), found(disk=("ahci",)), "pv", dx.PV, ""),  # plan_devices refuses it
])
def test_the_guest_type_where_none_is_asked_for(host: Host, guest: Inspection | None,
                                                requested: str, chosen: str,
                                                why: str) -> None:
    os_type, note = choose_type(host, NAME, "hvm", guest, requested)
    assert os_type == chosen and note.startswith(why) and bool(note) == bool(why)


def test_a_xen_host_without_hvm_refuses_a_guest_that_cannot_be_pv() -> None:
    with pytest.raises(ImportRefused) as refused:
        choose_type(_host("xen"), NAME, "hvm", found(disk=("ahci",)), "")
    assert str(refused.value) == (
        f"{HVM_UNAVAILABLE} 'web' cannot run as a Xen PV guest either: it has no "
        "xen-blkfront driver for its disks.")


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
    conversion = {plan["target"]: plan for plan in seen["conversion"]}
    assert conversion["QEMU/KVM"]["possible"] and \
        conversion["QEMU/KVM"]["notes"][0].startswith("Disks: sata")
    uuid = seen["partitions"][1]["uuid"]
    assert conversion["Xen PV"]["possible"] and conversion["Xen PV"]["notes"][-2:] == [
        f"In the copy: /etc/fstab: /dev/sda2 → UUID={uuid}.",
        f"In the copy: /boot/extlinux/extlinux.conf: root=/dev/sda2 → root=UUID={uuid}; "
        "console=hvc0 added."]
    page = operator_client.post("/storage/v2v/", {"step": "inspect", "source": "vm/vm.vmx"})
    assert b"src-device" in page.content and b"/dev/sda2" in page.content
    assert b"console=hvc0 added" in page.content and b"Xen PV" in page.content


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


def _import_on_demo(client: Client, demo: Host, captured: dict[str, bytes],
                    monkeypatch: pytest.MonkeyPatch, **extra: object) -> Job:
    """Run the import job on the demo host. libvirt's test driver cannot take a volume's
    bytes (virStorageVolUpload is not implemented), so the upload of the converted copy is
    captured here instead: the one stand-in, for what cannot run on that driver."""
    from conversions.v2v import import_job
    from xenweb.jobs.runner import run_job

    def capture(host: Host, volume_path: str, scratch: Path) -> None:
        captured[volume_path] = scratch.read_bytes()

    monkeypatch.setattr(import_job, "_upload_file", capture)
    pool = demo.pools.get(name="default")  # type: ignore[attr-defined]
    started = post(client, "/api/v1/imports/", {"source": "vm/vm.vmx", "host": demo.pk,
                                                "pool": pool.pk, **extra})
    assert started.status_code == 202, started.json()
    run_job(started.json()["id"], import_job.run_import, task_id="t", worker="w")
    return Job.objects.get(pk=started.json()["id"])


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_pv_import_converts_the_copy_and_never_the_source(
        operator_client: Client, area: Path, demo: Host, tmp_path: Path, fmt: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo host runs PV guests (its driver offers "xen"): the bootable source with its
    root named /dev/sda2 becomes PV on its own, and its copy names the root by UUID and
    prints on hvc0. qcow2 volumes are written from the converted raw copy."""
    disk = ensure_boot_disk("src-device", "device")
    _vm(area, disk.path)
    source = (area / "vm" / "disk0.vmdk").read_bytes()
    captured: dict[str, bytes] = {}
    job = _import_on_demo(operator_client, demo, captured, monkeypatch, format=fmt)
    assert job.state == "succeeded", job.error
    assert job.result["type"] == dx.PV
    notes = job.result["devices"]
    assert notes[0].startswith("Type: Xen PV, booted by pygrub")
    assert any(n.startswith("Conversion: /etc/fstab (partition 2): /dev/sda2 → UUID=")
               for n in notes)
    assert any("console=hvc0 added" in n for n in notes)
    logged = [line for _, line in job.log]
    assert all(note in logged for note in notes)  # each step in the job's log as well
    assert (area / "vm" / "disk0.vmdk").read_bytes() == source
    (data,) = captured.values()
    copy = tmp_path / f"copy.{fmt}"
    copy.write_bytes(data)
    converted = inspect_image(copy, fmt)
    assert converted.root.fstab_naming == converted.root.cmdline_naming == "uuid"
    assert converted.kernel is not None and "console=hvc0" in converted.kernel.cmdline
    defined = domains.get_domain(VirtTarget(demo.uri), str(
        Guest.objects.get(pk=job.result["guest"]).uuid)).xml
    assert [(d.target, d.bus) for d in defined.disks] == [("xvda", "xen")]
    assert defined.os_type == dx.PV


@pytest.mark.django_db
def test_asking_for_hvm_on_a_host_without_it_is_refused_before_the_job(
        operator_client: Client, area: Path, demo: Host) -> None:
    """On a host with the capabilities of the lab's Xen dom0s (_pv_only) the refusal is
    Xen's own message, and nothing is queued or made."""
    _vm(area, ensure_boot_disk("src-device", "device").path)
    _pv_only(demo)
    volumes, jobs = Volume.objects.count(), Job.objects.count()
    pool = demo.pools.get(name="default")  # type: ignore[attr-defined]
    refused = post(operator_client, "/api/v1/imports/", {
        "source": "vm/vm.vmx", "host": demo.pk, "pool": pool.pk, "type": "hvm"})
    assert refused.status_code == 422, refused.json()
    assert refused.json()["detail"] == HVM_UNAVAILABLE
    assert (Volume.objects.count(), Job.objects.count()) == (volumes, jobs)


@pytest.mark.django_db
def test_a_source_is_inspected_once_while_its_files_stay_the_same(
        operator_client: Client, area: Path, demo: Host, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Preview, start and job share one inspection (the cache's Redis); a disk replaced in
    between (a new file: new inode and change time) is inspected again."""
    from conversions.v2v import guest_devices

    calls: list[str] = []
    real = guest_devices.inspect_image

    def counted(path: str, fmt: str = "raw") -> Inspection:
        calls.append(str(path))
        return real(path, fmt)

    monkeypatch.setattr(guest_devices, "inspect_image", counted)
    _vm(area, ensure_boot_disk("src-device", "device").path)
    for _ in range(2):
        answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
        assert answer.status_code == 200 and answer.json()["inspection"]["hostname"]
    job = _import_on_demo(operator_client, demo, {}, monkeypatch, format="raw")
    assert job.state == "succeeded", job.error
    # the preview twice, the start, the job: the source once; the copy is not reinspected
    assert [Path(c).name for c in calls] == ["disk0.vmdk"]
    vmdk = area / "vm" / "disk0.vmdk"
    replaced = tmp_path / "replaced.vmdk"
    shutil.copy(vmdk, replaced)
    replaced.replace(vmdk)
    answer = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
    assert answer.status_code == 200
    assert [Path(c).name for c in calls] == ["disk0.vmdk"] * 2


def _no_pv_source(area: Path, tmp_path: Path) -> None:
    """A VMware VM whose disk (MBR + SYSLINUX, FAT /boot, ext4 root) holds a kernel without
    Xen's ELF notes: it cannot run as a Xen PV guest."""
    import gzip

    from tests.conversions.inspection.diskmaker import bzimage, elf, syslinux_disk

    kernel = bzimage(gzip.compress(elf([(b"GNU", 3, b"\0" * 20)])))
    _vm(area, syslinux_disk(tmp_path, kernel))


def _pv_only(demo: Host) -> None:
    """The demo host with the capabilities of the lab's Xen dom0s (PV only, no VT-x), as
    cached on its row."""
    demo.capabilities = {**demo.capabilities, "guests": [
        g for g in demo.capabilities["guests"] if g["os_type"] == "xen"]}
    demo.save(update_fields=["capabilities"])


@pytest.mark.django_db
@pytest.mark.parametrize(("pv_only", "asked", "reason"), [
    (False, "pv", "'web' cannot run as a Xen PV guest: its kernel has no Xen PV support "
                  "(kernel image: no Xen ELF notes). Import it as HVM."),
    (True, "", f"{HVM_UNAVAILABLE} 'web' cannot run as a Xen PV guest either: its kernel has "
               "no Xen PV support (kernel image: no Xen ELF notes)."),
])
def test_a_kernel_that_cannot_run_on_the_target_is_refused_before_copying(
        operator_client: Client, area: Path, demo: Host, tmp_path: Path, pv_only: bool,
        asked: str, reason: str) -> None:
    _no_pv_source(area, tmp_path)
    if pv_only:
        _pv_only(demo)
    volumes, jobs = Volume.objects.count(), Job.objects.count()
    pool = demo.pools.get(name="default")  # type: ignore[attr-defined]
    refused = post(operator_client, "/api/v1/imports/", {
        "source": "vm/vm.vmx", "host": demo.pk, "pool": pool.pk, "name": "web",
        **({"type": asked} if asked else {})})
    assert refused.status_code == 422, refused.json()
    assert refused.json()["detail"] == reason
    assert (Volume.objects.count(), Job.objects.count()) == (volumes, jobs)
