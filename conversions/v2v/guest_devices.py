"""What the source guest is and how it must see its disks and NICs on the target.

The source's first disk is inspected (conversions.inspection: user-space readers, nothing is
mounted) before anything is copied where the disk is a file of its own (VMX, OVF, VMDK), else
on the converted copy before the guest is defined (OVA, XVA; P2V's copy of the first source
disk, conversions.p2v.job: ``adjust_to_copy``). From what its kernel and
initramfs hold and how it names its root, the import chooses the disk bus and the NIC model
the guest has drivers for, as virt-v2v does:

- a root named by device (``/dev/sda2``) keeps its names: SATA (``sd``) or IDE on QEMU/KVM;
- a root named by UUID or label may move to virtio when the guest has virtio_blk;
- NICs: virtio, else e1000, else rtl8139, as its drivers allow; netfront on Xen PV;
- a PV guest needs a kernel with Xen PV support, xen-blkfront and a boot loader
  configuration pygrub reads; a guest without them is refused before anything is copied,
  with the reason. Its copy is converted (conversions.rewrite): fstab and the boot loader
  name the disks by UUID where ``sd``/``hd`` become ``xvd``, and the console is hvc0.
- the guest type, where the request names none: on a host that runs Xen PV guests, PV when
  the guest can be one, else HVM, or the host's HVM-unavailable message with the reason PV
  was not possible either.

A damaged partition table or file system refuses the import; an image inspection cannot
read (Windows, a blank disk, xfs...) is imported with today's defaults and a warning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from conversions.inspection.errors import DamagedImage, InspectionError
from conversions.inspection.inspector import inspect_image
from conversions.inspection.result import Inspection
from conversions.rewrite.convert import PYGRUB_READS, XEN_PV, GuestTarget, planned_changes
from conversions.v2v import inspection_cache
from conversions.v2v.proposal import ImportRefused, Proposal
from conversions.v2v.sources import import_root
from guests.provisioning import Provisioning
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.models import Host
from hosts.virt import domain_xml as dx
from hosts.virt.capabilities import HVM_UNAVAILABLE

SATA = dx.DiskLayout("sd", "sata", "sata")
IDE = dx.DiskLayout("hd", "ide", "ide")
VIRTIO = dx.DiskLayout("vd", "virtio", "ide")
XEN = dx.DiskLayout("xvd", "xen", "xen")
# Device names as a Linux guest sees them, per bus it is given.
SEEN_AS = {"virtio": "vd", "sata": "sd", "ide": "sd", "xen": "xvd"}
NIC_MODELS = (("virtio_net", "virtio"), ("e1000", "e1000"), ("e1000e", "e1000e"),
              ("8139cp", "rtl8139"), ("8139too", "rtl8139"))
NOT_HERE = ("The guest was not inspected (its disk is not on this machine): the disks and NICs "
            "get the target's defaults.")


@dataclass(frozen=True)
class DevicePlan:
    layout: dx.DiskLayout | None  # None: the driver's default (hosts.virt.domain_xml)
    nic_model: str  # "": the driver's default
    notes: tuple[str, ...]
    rewrite: GuestTarget | None = None  # the copy is converted for this target


def inspect_disk(path: str, fmt: str, label: str, warnings: list[str]) -> Inspection | None:
    """The inspection of one disk image; None where it says nothing, with the reason added
    to `warnings`. ImportRefused for a damaged or hostile image."""
    try:
        return inspect_image(path, fmt)
    except DamagedImage as exc:
        raise ImportRefused(f"Inspecting {label}: {exc} Nothing was imported.") from exc
    except InspectionError as exc:
        warnings.append(f"Inspection: {label} was not inspected: {exc} Its disks and NICs "
                        "get the target's defaults.")
        return None


def inspect_source(proposal: Proposal) -> Inspection | None:
    """The first disk of a source whose disks are files of their own (VMX, OVF, VMDK);
    None for OVA and XVA (inspected after conversion) and where inspection says nothing
    (why is in the proposal's warnings). Inspected once for the preview, the start and the
    job while the files stay the same (inspection_cache)."""
    images = proposal.images
    if not images or not images[0].path or images[0].member or proposal.kind == "xva":
        return None
    disk = images[0]
    path, fmt = import_root() / disk.path, disk.format or "raw"
    return inspection_cache.remembered(
        path, fmt, lambda: inspect_disk(str(path), fmt, disk.path, proposal.warnings))


def _root_prefix(found: Inspection) -> str:
    """The device-name prefix the guest's root is named with ("sd", "hd", "vd", "xvd"),
    or "" when it is named by UUID, label or not at all."""
    for spec, naming in ((found.root.fstab_spec, found.root.fstab_naming),
                         (found.root.cmdline_root, found.root.cmdline_naming)):
        if naming == "device" and spec.startswith("/dev/"):
            name = spec[len("/dev/"):]
            for prefix in ("xvd", "sd", "hd", "vd"):
                if name.startswith(prefix):
                    return prefix
    return ""


def _nic_model(found: Inspection, notes: list[str]) -> str:
    for driver, model in NIC_MODELS:
        if driver in found.drivers.network:
            notes.append(f"NICs: {model} (the guest has {driver}).")
            return model
    notes.append("NICs: the driver's default (no NIC driver found in the guest).")
    return ""


def _hvm_layout(found: Inspection, domain_type: str, notes: list[str]) -> dx.DiskLayout | None:
    disk = set(found.drivers.disk)
    prefix = _root_prefix(found)
    if domain_type == "xen":
        notes.append("Disks: IDE (emulated; the guest has "
                     f"{'ata_piix' if 'ata_piix' in disk else 'no ata_piix listed'}).")
        return None
    choices = [(VIRTIO, "virtio_blk"), (SATA, "ahci"), (IDE, "ata_piix")]
    for layout, driver in choices:
        if driver in disk and prefix in ("", SEEN_AS[layout.bus]):
            why = f"the root is named {found.root.fstab_spec or found.root.cmdline_root}" \
                if prefix else "the root is named by UUID or label"
            notes.append(f"Disks: {layout.bus} (the guest has {driver}; {why}).")
            return layout
    notes.append("Disks: the driver's default (no disk driver of the guest matches how it "
                 "names its root).")
    return None


def pv_obstacle(found: Inspection) -> str:
    """Why the inspected guest cannot run as a Xen PV guest booted by pygrub ("": it can)."""
    kernel = found.kernel
    if kernel is None:
        return "no kernel was found (inspection)"
    if kernel.xen_pv is not True:
        what = "has no Xen PV support" if kernel.xen_pv is False else \
            "is not known to support Xen PV"
        return f"its kernel {what} ({', '.join(kernel.evidence) or 'inspection'})"
    if "xen_blkfront" not in found.drivers.disk:
        return "it has no xen-blkfront driver for its disks"
    if found.boot_loader.name not in PYGRUB_READS:
        return (f"pygrub cannot read its boot loader configuration "
                f"({found.boot_loader.name or 'none was found'})")
    return ""


def _runs(host: Host, os_type: str) -> bool:
    try:
        domain_type_for(host, os_type)
    except CapabilityError:
        return False
    return True


def choose_type(host: Host, name: str, source_type: str, found: Inspection | None,
                requested: str) -> tuple[str, str]:
    """The guest's type and why: the one asked for; else, on a host that runs Xen PV
    guests, PV where the inspected guest can be one, HVM where it cannot (ImportRefused
    with the host's HVM-unavailable message and the reason where the host has no HVM)."""
    if requested:
        return dx.GUEST_TYPES.get(requested, ""), ""
    default = dx.GUEST_TYPES.get(source_type, dx.HVM)
    offered = {kind for kind in (dx.PV, dx.HVM) if _runs(host, kind)}
    if dx.PV not in offered or found is None:
        return default, ""
    obstacle = pv_obstacle(found)
    if not obstacle:
        return dx.PV, ("Type: Xen PV, booted by pygrub (chosen: the host runs PV guests and "
                       "the guest's kernel supports it).")
    if dx.HVM not in offered:
        raise ImportRefused(f"{HVM_UNAVAILABLE} '{name}' cannot run as a Xen PV "
                            f"guest either: {obstacle}.")
    return dx.HVM, f"Type: HVM (not PV: {obstacle})."


def plan_devices(name: str, found: Inspection | None, domain_type: str,
                 os_type: str) -> DevicePlan:
    """The disk layout and NIC model for the target; ImportRefused for a guest that cannot
    run as asked (before anything is copied where the source was inspected). `name` is the
    guest's, for the messages."""
    if found is None:
        return DevicePlan(None, "", ("The guest was not inspected: the disks and NICs get "
                                     "the target's defaults.",))
    notes: list[str] = []
    if os_type == dx.PV:
        obstacle = pv_obstacle(found)
        if obstacle:
            raise ImportRefused(f"'{name}' cannot run as a Xen PV guest: {obstacle}. "
                                "Import it as HVM.")
        notes.append("Disks: xen (xen-blkfront); NICs: netfront.")
        notes.append(f"Boot: pygrub reads its {found.boot_loader.name} configuration.")
        return DevicePlan(XEN, "", tuple(notes), XEN_PV)
    layout = _hvm_layout(found, domain_type, notes)
    return DevicePlan(layout, _nic_model(found, notes), tuple(notes))


# The kinds of target the preview describes: (label, libvirt domain type, guest type).
PREVIEW_TARGETS = (("QEMU/KVM", "kvm", dx.HVM), ("Xen HVM", "xen", dx.HVM),
                   ("Xen PV", "xen", dx.PV))


def what_changes(name: str, found: Inspection) -> list[dict[str, object]]:
    """What an import would make of the inspected guest on each kind of target (the
    preview's "conversion"): its devices, the conversion of its copy, or why it cannot."""
    targets: list[dict[str, object]] = []
    for label, domain_type, os_type in PREVIEW_TARGETS:
        try:
            plan = plan_devices(name, found, domain_type, os_type)
        except ImportRefused as exc:
            targets.append({"target": label, "possible": False, "notes": [str(exc)]})
            continue
        notes = list(plan.notes)
        if plan.rewrite is not None:
            notes += [f"In the copy: {change}."
                      for change in planned_changes(found, plan.rewrite)]
        targets.append({"target": label, "possible": True, "notes": notes})
    return targets


def adjust_to_copy(work: Provisioning, name: str, path: str | None, fmt: str,
                   label: str) -> tuple[Inspection | None, DevicePlan]:
    """A conversion's copy of the first disk (`path`, of format `fmt`; None where this
    machine does not hold the volume's file) inspected, and the guest's disk bus and NIC
    model set to what it finds (`Provisioning.adjust`); the plan's notes are for the job's
    log and result. ImportRefused for a damaged image or a guest that cannot run as asked."""
    if path is None:
        return None, DevicePlan(None, "", (NOT_HERE,))
    why_not: list[str] = []
    found = inspect_disk(path, fmt, label, why_not)
    spec = work.plan.spec
    devices = plan_devices(name, found, spec.domain_type, spec.os_type)
    work.adjust(disk_layout=devices.layout, nic_model=devices.nic_model)
    if why_not:
        devices = dataclasses.replace(devices, notes=tuple(why_not))
    return found, devices
