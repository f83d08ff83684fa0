"""Guest conversion inside the converted copy (never the source), as virt-v2v does for its
targets: where the target names the guest's disks differently (``/dev/sda2`` becomes
``/dev/xvda2`` under Xen PV), fstab and the boot loader configuration name them by UUID
from now on, and the kernel command lines print on the target's console (``hvc0``).

Works on a raw image on this machine, in user space (conversions.rewrite.writers); the
inspection of that image says what to edit. Returns what changed, in words for the job log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conversions.inspection.disk import Disk
from conversions.inspection.errors import InspectionError
from conversions.inspection.filesystems import PROBE_BYTES, open_fs, probe
from conversions.inspection.result import Inspection, PartitionInfo
from conversions.rewrite.errors import ConversionFailed
from conversions.rewrite.texts import (
    Renaming,
    rewrite_boot_config,
    rewrite_default_grub,
    rewrite_fstab,
)
from conversions.rewrite.writers import MAX_FILE, replace_file

__all__ = ["PYGRUB_READS", "ConversionFailed", "GuestTarget", "convert_guest", "planned_changes"]

# The configurations Xen's pygrub reads (inspection's names for them).
PYGRUB_READS = ("grub2", "grub-legacy", "extlinux", "syslinux")
DISK_PREFIXES = ("sd", "hd", "vd", "xvd")


@dataclass(frozen=True)
class GuestTarget:
    """How the converted guest meets its hardware: disk names and the console."""

    disk_prefix: str  # "xvd"
    console: str  # "hvc0"
    label: str  # "Xen PV", for the notes


XEN_PV = GuestTarget("xvd", "hvc0", "Xen PV")
Edit = Callable[[str], tuple[str, list[str]]]


def renaming_for(found: Inspection, target: GuestTarget) -> Renaming:
    return Renaming(
        old_prefixes=tuple(p for p in DISK_PREFIXES if p != target.disk_prefix),
        new_prefix=target.disk_prefix,
        first_disk={p.number: f"UUID={p.uuid}" for p in found.partitions
                    if p.uuid and p.filesystem},
        console=target.console)


def _partition(found: Inspection, number: int | None) -> PartitionInfo:
    part = next((p for p in found.partitions if p.number == number), None)
    if part is None:
        raise ConversionFailed(f"The inspection names partition {number}, which the disk "
                               "does not have.")
    return part


def _edit(path: str, part: PartitionInfo, file: str, edit: Edit, target: GuestTarget,
          notes: list[str], *, required: bool) -> None:
    """Read `file` from the partition, apply `edit` (text -> (text, changes)) and write
    it back when it changed."""
    label = f"partition {part.number}" if part.number else "the disk's file system"
    try:
        with Disk(path, "raw") as disk:
            fs = open_fs(disk, part.start, part.size,
                         probe(disk.read(part.start, PROBE_BYTES)), label)
            data = fs.read(file, MAX_FILE)
    except InspectionError as exc:
        raise ConversionFailed(f"Reading {file} from {label}: {exc}") from exc
    if data is None:
        if required:
            raise ConversionFailed(f"{label} has no {file} any more.")
        return
    text = data.decode("utf-8", "surrogateescape")
    new, changes = edit(text)
    if not changes:
        notes.append(f"{file}: nothing to change for {target.label}.")
        return
    replace_file(path, part.start, part.size, file, new.encode("utf-8", "surrogateescape"),
                 label)
    notes.append(f"{file} ({label}): {'; '.join(changes)}.")


def planned_changes(found: Inspection, target: GuestTarget) -> list[str]:
    """What `convert_guest` would change, from the inspection alone (for the preview): the
    root's name in fstab and on the default kernel line, and the console."""
    renaming = renaming_for(found, target)
    changes = []
    if (new := renaming.spec(found.root.fstab_spec)) != found.root.fstab_spec:
        changes.append(f"/etc/fstab: {found.root.fstab_spec} → {new}")
    if found.kernel is not None and found.boot_loader.path:
        _, edits = renaming.cmdline(found.kernel.cmdline)
        if edits:
            changes.append(f"{found.boot_loader.path}: {'; '.join(edits)}")
    return changes


def convert_guest(path: str, found: Inspection, target: GuestTarget) -> list[str]:
    """Convert the guest on the raw image `path` (inspected as `found`) for `target`;
    ConversionFailed says why it could not (the copy is then discarded by the caller)."""
    loader = found.boot_loader
    if loader.name not in PYGRUB_READS or loader.partition is None:
        raise ConversionFailed(f"No boot loader configuration to convert was found "
                               f"({loader.name or 'none'}).")
    renaming = renaming_for(found, target)
    notes: list[str] = []
    root = _partition(found, found.root.partition)
    _edit(path, root, "/etc/fstab", lambda t: rewrite_fstab(t, renaming), target, notes,
          required=False)
    _edit(path, _partition(found, loader.partition), loader.path,
          lambda t: rewrite_boot_config(loader.name, t, renaming), target, notes,
          required=True)
    if loader.name == "grub2":
        _edit(path, root, "/etc/default/grub", lambda t: rewrite_default_grub(t, renaming),
              target, notes, required=False)
    return notes
