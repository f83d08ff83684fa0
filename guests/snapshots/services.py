"""Guest snapshots: list, create, revert, delete (qcow2 domain snapshots and LVM volumes).

Quick changes happen now; the slow ones run as jobs (see guests/snapshots/jobs.py):
taking or reverting a running guest's snapshot (QEMU saves or loads its memory), and
every LVM revert (a copy back through libvirt streams).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from guests.errors import GuestError
from guests.lifecycle import refresh
from guests.models import Guest, LvmSnapshot
from guests.placement.exclusivity import conflicts, explain
from guests.snapshots.plan import EXTERNAL, INTERNAL, LVM, SKIP, Capability, capability
from hosts.virt import VirtError
from hosts.virt import snapshots as virt
from hosts.virt.volumes import delete_volume
from xenweb.audit.services import record
from xenweb.jobs.locks import hold
from xenweb.jobs.models import Job
from xenweb.jobs.services import start_job

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
NAME_RULE = "Snapshot names are 1 to 40 characters: letters, digits, and _ . + - (not first)."
RUNNING = ("running", "blocked", "paused")
SNAPSHOT_STATES = (*RUNNING, "shutoff", "crashed")


@dataclass(frozen=True)
class Snapshot:
    name: str
    description: str
    kind: str  # internal, external, lvm
    created: datetime
    guest_state: str  # the guest's state when it was taken
    with_memory: bool
    current: bool
    disks: tuple[str, ...]  # targets
    missing: tuple[str, ...] = ()  # LVM: snapshot volumes that no longer exist

    @property
    def manageable(self) -> bool:
        """Named within the app's rules (snapshots made elsewhere may not be addressable)."""
        return bool(NAME_RE.match(self.name))


def _domain_snapshots(guest: Guest) -> list[Snapshot]:
    if guest.host.hypervisor_type == "Xen":
        return []  # libxl has no domain snapshots (see guests.snapshots.plan)
    try:
        found = virt.list_snapshots(guest.host.virt_target, str(guest.uuid))
    except virt.SnapshotsUnsupported:
        return []
    except VirtError as exc:
        raise GuestError(str(exc)) from exc
    return [Snapshot(
        name=s.name, description=s.description, kind=s.kind,
        created=datetime.fromtimestamp(s.created, tz=UTC), guest_state=s.state,
        with_memory=s.memory != virt.NO, current=s.current,
        disks=tuple(d.target for d in s.disks if d.snapshot != virt.NO),
    ) for s in found]


def _lvm_snapshot(guest: Guest, row: LvmSnapshot) -> Snapshot:
    missing = tuple(v["path"] for v in row.volumes
                    if not virt.volume_exists(guest.host.virt_target, v["path"]))
    return Snapshot(name=row.name, description=row.description, kind=LVM,
                    created=row.created_at, guest_state=row.guest_state, with_memory=False,
                    current=False, disks=tuple(v["target"] for v in row.volumes),
                    missing=missing)


def list_snapshots(guest: Guest) -> list[Snapshot]:
    """Every snapshot of the guest, oldest first (raises GuestError if the host fails)."""
    try:
        lvm = [_lvm_snapshot(guest, row) for row in guest.lvm_snapshots.all()]
    except VirtError as exc:
        raise GuestError(str(exc)) from exc
    return sorted(_domain_snapshots(guest) + lvm, key=lambda s: (s.created, s.name))


def find(guest: Guest, name: str) -> Snapshot:
    found = next((s for s in list_snapshots(guest) if s.name == name), None)
    if found is None:
        raise GuestError(f"Guest '{guest}' has no snapshot named '{name}'.")
    return found


def _check_guest(guest: Guest, verb: str) -> None:
    from guests.services import busy_job

    if guest.is_privileged:
        raise GuestError("Domain-0 cannot be snapshotted.")
    running = busy_job(guest)
    if running is not None:
        raise GuestError(f"Guest '{guest}' is busy with job #{running.pk} ({running.title}); "
                         "wait for it to finish.")
    if guest.state not in SNAPSHOT_STATES:
        raise GuestError(f"Guest '{guest}' is {guest.get_state_display()}: its snapshots "
                         f"cannot be {verb} now.")


def _refused(action: str, guest: Guest, exc: Exception, user: Any, request: Any,
             **detail: Any) -> GuestError:
    record(f"guest.snapshot.{action}", user=user, request=request, target=guest,
           result="refused" if isinstance(exc, GuestError) else "failed", message=str(exc),
           **detail)
    return exc if isinstance(exc, GuestError) else GuestError(str(exc))


def _job(guest: Guest, action: str, title: str, params: dict[str, Any], user: Any,
         request: Any) -> Job:
    return start_job(f"guests.tasks.snapshot_{action}", kind=f"guest.snapshot.{action}", owner=user,
                     title=title, target=guest, params=params, request=request,
                     in_process=guest.host.in_process_only)


# --- create -------------------------------------------------------------------------------


def create_snapshot(guest: Guest, name: str, description: str = "", *, user: Any,
                    request: Any = None) -> Snapshot | Job:
    """Take a snapshot now, or (running guest with memory) as a job."""
    try:
        if not NAME_RE.match(name):
            raise GuestError(NAME_RULE)
        _check_guest(guest, "taken")
        plan = capability(guest)
        if not plan.supported:
            raise GuestError(plan.reason)
        if any(s.name == name for s in list_snapshots(guest)):
            raise GuestError(f"Guest '{guest}' has a snapshot named '{name}' already.")
    except GuestError as exc:
        raise _refused("create", guest, exc, user, request, name=name) from exc
    params = {"name": name, "description": description}
    if plan.kind == INTERNAL and plan.with_memory:
        return _job(guest, "create", f"Snapshot {guest} as '{name}'", params, user, request)
    try:
        with hold(guest, kind="guest.snapshot.create", title=f"Snapshot {guest} as '{name}'",
                  owner=user):
            snapshot = take(guest, plan, name, description)
    except (GuestError, VirtError) as exc:
        raise _refused("create", guest, exc, user, request, name=name) from exc
    record("guest.snapshot.create", user=user, request=request, target=guest, name=name,
           kind=snapshot.kind)
    return snapshot


def domain_request(plan: Capability, name: str, description: str) -> virt.SnapshotRequest:
    """The libvirt snapshot request for an internal or external plan."""
    if plan.kind == INTERNAL:
        disks = tuple(virt.SnapshotDisk(d.target, virt.NO if d.how == SKIP else virt.INTERNAL)
                      for d in plan.disks if d.target)
        return virt.SnapshotRequest(name=name, description=description, disks=disks,
                                    memory=virt.INTERNAL if plan.with_memory else virt.NO)
    # External disk-only: a qcow2 overlay per disk, named by libvirt after the snapshot.
    disks = tuple(virt.SnapshotDisk(d.target, virt.NO) if d.how == SKIP
                  else virt.SnapshotDisk(d.target, virt.EXTERNAL, driver="qcow2")
                  for d in plan.disks if d.target)
    return virt.SnapshotRequest(name=name, description=description, disks=disks,
                                disk_only=True)


def take(guest: Guest, plan: Capability, name: str, description: str) -> Snapshot:
    """The snapshot itself, by the plan's kind (raises VirtError or GuestError)."""
    if plan.kind == LVM:
        return _take_lvm(guest, plan, name, description)
    virt.create_snapshot(guest.host.virt_target, str(guest.uuid),
                         domain_request(plan, name, description))
    refresh(guest)
    return find(guest, name)


def lvm_volume_name(origin: str, name: str) -> str:
    return f"{origin.rstrip('/').rsplit('/', 1)[-1]}.snap.{name}"


def _take_lvm(guest: Guest, plan: Capability, name: str, description: str) -> Snapshot:
    made: list[dict[str, Any]] = []
    try:
        for disk in plan.included:
            info = virt.create_volume_snapshot(guest.host.virt_target, disk.source,
                                               lvm_volume_name(disk.source, name))
            made.append({"target": disk.target, "origin": disk.source, "path": info.path,
                         "size": info.capacity})
    except VirtError:
        for volume in made:  # all disks or none
            try:
                delete_volume(guest.host.virt_target, volume["path"])
            except VirtError:
                pass
        raise
    row = LvmSnapshot.objects.create(guest=guest, name=name, description=description,
                                     volumes=made, guest_state=guest.state)
    return _lvm_snapshot(guest, row)


# --- revert -------------------------------------------------------------------------------


def revert_snapshot(guest: Guest, name: str, *, user: Any, request: Any = None) -> Guest | Job:
    """Return the guest to a snapshot: now (shut-off guest, qcow2) or as a job."""
    try:
        _check_guest(guest, "reverted")
        snapshot = find(guest, name)
        if snapshot.kind == LVM:
            if guest.state != "shutoff":
                raise GuestError(f"Guest '{guest}' is {guest.get_state_display()}: shut it down "
                                 "before reverting an LVM snapshot (its volumes are rewritten).")
            if snapshot.missing:
                raise GuestError(f"Snapshot '{name}' is incomplete: "
                                 f"{', '.join(snapshot.missing)} no longer exist(s).")
        elif snapshot.with_memory and guest.state not in RUNNING:
            found = conflicts(guest)  # the revert starts the guest
            if found:
                raise GuestError(f"Guest '{guest}' cannot be reverted to '{name}', which "
                                 f"starts it: {explain(found)}")
    except GuestError as exc:
        raise _refused("revert", guest, exc, user, request, name=name) from exc
    if snapshot.kind == LVM or guest.state in RUNNING or snapshot.with_memory:
        return _job(guest, "revert", f"Revert {guest} to '{name}'", {"name": name}, user,
                    request)
    try:
        with hold(guest, kind="guest.snapshot.revert", title=f"Revert {guest} to '{name}'",
                  owner=user):
            virt.revert_snapshot(guest.host.virt_target, str(guest.uuid), name)
    except (GuestError, VirtError) as exc:
        raise _refused("revert", guest, exc, user, request, name=name) from exc
    record("guest.snapshot.revert", user=user, request=request, target=guest, name=name,
           kind=snapshot.kind)
    return refresh(guest)


# --- delete -------------------------------------------------------------------------------


def delete_snapshot(guest: Guest, name: str, *, user: Any, request: Any = None) -> None:
    try:
        _check_guest(guest, "deleted")
        snapshot = find(guest, name)
        with hold(guest, kind="guest.snapshot.delete",
                  title=f"Delete snapshot '{name}' of {guest}", owner=user):
            if snapshot.kind == LVM:
                row = guest.lvm_snapshots.get(name=name)
                for volume in row.volumes:
                    if volume["path"] not in snapshot.missing:
                        delete_volume(guest.host.virt_target, volume["path"])
                row.delete()
            else:
                virt.delete_snapshot(guest.host.virt_target, str(guest.uuid), name)
    except (GuestError, VirtError) as exc:
        raise _refused("delete", guest, exc, user, request, name=name) from exc
    record("guest.snapshot.delete", user=user, request=request, target=guest, name=name,
           kind=snapshot.kind)
    if snapshot.kind == EXTERNAL:
        refresh(guest)  # the overlays were merged back: the disks' sources changed
