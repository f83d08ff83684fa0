"""Which kind of snapshot a guest's disks allow, decided from cached facts only.

Per writable disk (CD-ROMs, read-only and shareable disks are never part of a snapshot):

- in a logical (LVM) pool: an LVM snapshot volume (any hypervisor, Xen included);
- qcow2 in a file pool (dir, fs, netfs) or outside any pool: a libvirt internal snapshot
  (with the memory too when the guest runs);
- raw in a file pool: only an external disk-only snapshot (a qcow2 overlay), offered where
  the host's libvirt can also revert it (9.9.0 and later);
- block storage of other pools (iscsi, disk, scsi, mpath, …): no snapshots.

A Xen host has no domain snapshots at all (libvirt's libxl driver implements none of the
snapshot calls), so there only all-LVM guests can be snapshotted.
"""

from __future__ import annotations

from dataclasses import dataclass

from guests.models import Guest
from storage.models import Volume

INTERNAL, EXTERNAL, LVM, SKIP = "internal", "external", "lvm", "skip"
FILE_POOLS = ("dir", "fs", "netfs", "gluster", "vstorage")
EXTERNAL_REVERT_SINCE = (9, 9, 0)  # libvirt release that reverts external snapshots (QEMU)
XEN_NO_SNAPSHOTS = (
    "Xen hosts have no domain snapshots: libvirt's Xen driver (libxl) implements none of "
    "the snapshot calls"
)


@dataclass(frozen=True)
class DiskPlan:
    target: str
    source: str
    format: str
    pool: str  # pool name ('' when the disk is in no known pool)
    pool_type: str
    how: str  # internal, external, lvm, skip, or '' (cannot)
    note: str = ""

    @property
    def label(self) -> str:
        where = f"{self.pool_type} pool '{self.pool}'" if self.pool else "no storage pool"
        return f"disk {self.target} ({self.format or 'unknown format'} in {where})"


@dataclass(frozen=True)
class Capability:
    kind: str | None  # internal, external, lvm; None: the guest cannot be snapshotted
    disks: tuple[DiskPlan, ...]
    reason: str = ""  # why not, when kind is None
    with_memory: bool = False  # internal snapshot of a running guest holds its memory

    @property
    def supported(self) -> bool:
        return self.kind is not None

    @property
    def included(self) -> tuple[DiskPlan, ...]:
        return tuple(d for d in self.disks if d.how != SKIP)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:3])
    except ValueError:
        return ()


def _disk_plan(disk: dict, volume: Volume | None) -> DiskPlan:
    pool = volume.pool if volume is not None else None
    pool_name, pool_type = (pool.name, pool.pool_type) if pool is not None else ("", "")
    fmt = disk.get("format") or (volume.format if volume is not None else "")
    base = {"target": disk.get("target", ""), "source": disk.get("source", ""), "format": fmt,
            "pool": pool_name, "pool_type": pool_type}
    if disk.get("device", "disk") != "disk" or disk.get("readonly"):
        return DiskPlan(**base, how=SKIP, note="read-only: not part of snapshots")
    if disk.get("shareable"):
        return DiskPlan(**base, how=SKIP, note="shareable: not part of snapshots")
    if not base["source"]:
        return DiskPlan(**base, how=SKIP, note="no source")
    if pool_type == "logical":
        return DiskPlan(**base, how=LVM)
    if pool_type and pool_type not in FILE_POOLS:
        return DiskPlan(**base, how="", note=f"{pool_type} pools hold plain block devices, "
                                             "which have no snapshots")
    if fmt == "qcow2":
        return DiskPlan(**base, how=INTERNAL)
    return DiskPlan(**base, how=EXTERNAL,
                    note=f"{fmt or 'raw'} images have no internal snapshots")


def disk_plans(guest: Guest) -> tuple[DiskPlan, ...]:
    disks = guest.devices.get("disks", []) if guest.devices else []
    sources = [d.get("source") for d in disks if d.get("source")]
    volumes = {v.path: v for v in Volume.objects.select_related("pool").filter(
        pool__host_id=guest.host_id, path__in=sources)}
    return tuple(_disk_plan(d, volumes.get(d.get("source", ""))) for d in disks)


def capability(guest: Guest) -> Capability:
    """What snapshot the guest allows now, or why none (naming the disk and its storage)."""
    disks = disk_plans(guest)
    writable = [d for d in disks if d.how != SKIP]
    if guest.is_privileged:
        return Capability(None, disks, "Domain-0 cannot be snapshotted.")
    if not writable:
        return Capability(None, disks, f"Guest '{guest}' has no writable disk to snapshot.")
    cannot = next((d for d in writable if d.how == ""), None)
    if cannot is not None:
        return Capability(None, disks, f"No snapshots for {cannot.label}: {cannot.note}.")
    kinds = {d.how for d in writable}
    if kinds == {LVM}:
        return Capability(LVM, disks)
    if guest.host.hypervisor_type == "Xen":
        other = next(d for d in writable if d.how != LVM)
        return Capability(None, disks, f"{XEN_NO_SNAPSHOTS}, so {other.label} cannot be "
                                       "snapshotted on this Xen host; only disks in LVM "
                                       "pools can (as LVM snapshot volumes).")
    if LVM in kinds:
        lvm = next(d for d in writable if d.how == LVM)
        other = next(d for d in writable if d.how != LVM)
        return Capability(None, disks, f"Guest '{guest}' mixes {lvm.label} with {other.label}: "
                                       "one snapshot cannot span LVM volumes and image files.")
    running = guest.state in ("running", "blocked", "paused")
    if kinds == {INTERNAL}:
        return Capability(INTERNAL, disks, with_memory=running)
    raw = next(d for d in writable if d.how == EXTERNAL)
    version = _version(guest.host.libvirt_version)
    if version and version >= EXTERNAL_REVERT_SINCE:
        return Capability(EXTERNAL, disks)
    needed = ".".join(map(str, EXTERNAL_REVERT_SINCE))
    return Capability(None, disks, (
        f"No snapshots for {raw.label}: {raw.note}, and libvirt "
        f"{guest.host.libvirt_version or '(unknown version)'} on {guest.host} cannot revert "
        f"external ones (that needs libvirt {needed}). Convert the disk to qcow2 to snapshot it."))
