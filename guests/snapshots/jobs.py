"""Slow snapshot actions as job bodies: taking or reverting a running guest's snapshot
(QEMU saves or loads the guest's memory) and reverting LVM snapshots (copy back)."""

from __future__ import annotations

from typing import Any

from guests.errors import GuestError
from guests.lifecycle import refresh
from guests.slow_actions import _guest
from guests.snapshots.plan import LVM, capability
from guests.snapshots.services import SNAPSHOT_STATES, find, take
from hosts.virt import VirtError
from hosts.virt import snapshots as virt
from xenweb.audit.services import record
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter


def create_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = _guest(job)
    name, description = job.params["name"], job.params.get("description", "")
    reporter.configure(cancellable=False)  # libvirt cannot abort a snapshot midway
    reporter.update(0, total=1, message=f"Taking snapshot '{name}' of '{guest}' (with its "
                    "memory)", force=True)
    try:
        if guest.state not in SNAPSHOT_STATES:
            raise GuestError(f"Guest '{guest}' is {guest.get_state_display()} now.")
        plan = capability(guest)
        if not plan.supported:
            raise GuestError(plan.reason)
        snapshot = take(guest, plan, name, description)
    except (GuestError, VirtError) as exc:
        record("guest.snapshot.create", user=job.owner, target=guest, result="failed",
               message=str(exc), name=name)
        raise JobError(str(exc)) from exc
    record("guest.snapshot.create", user=job.owner, target=guest, name=name, kind=snapshot.kind,
           job=job.pk)
    return {"guest": guest.pk, "name": name, "kind": snapshot.kind}


def _copy_back(guest: Any, volumes: list[dict[str, Any]], reporter: ProgressReporter) -> \
        dict[str, int]:
    total = sum(int(v.get("size") or 0) for v in volumes) or None
    base, written = 0, 0
    for volume in volumes:
        size = int(volume["size"])

        def progress(phase: str, done: int, _total: int, base: int = base, size: int = size,
                     target: str = volume["target"]) -> None:
            if phase == "compare":
                reporter.update(base + done, total=total,
                                message=f"Comparing {target} with its snapshot", unit="bytes")
            else:
                reporter.update(base + size, message=f"Writing back {done} changed bytes "
                                f"of {target}")

        result = virt.copy_back(guest.host.virt_target, volume["path"], volume["origin"], size,
                                progress=progress)
        reporter.log(f"{volume['target']}: {result.written} of {result.compared} bytes "
                     f"written back in {result.ranges} range(s)")
        base += size
        written += result.written
    return {"compared": base, "written": written}


def revert_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = _guest(job)
    name = job.params["name"]
    reporter.configure(cancellable=False)  # a half-done revert would leave a torn disk
    reporter.update(0, total=1, message=f"Reverting '{guest}' to snapshot '{name}'", force=True)
    result: dict[str, Any] = {}
    try:
        snapshot = find(guest, name)
        if snapshot.kind == LVM:
            refresh(guest)
            if guest.state != "shutoff":
                raise GuestError(f"Guest '{guest}' is {guest.get_state_display()}: shut it "
                                 "down before reverting an LVM snapshot.")
            result = _copy_back(guest, guest.lvm_snapshots.get(name=name).volumes, reporter)
        else:
            virt.revert_snapshot(guest.host.virt_target, str(guest.uuid), name)
    except (GuestError, VirtError) as exc:
        record("guest.snapshot.revert", user=job.owner, target=guest, result="failed",
               message=str(exc), name=name)
        raise JobError(str(exc)) from exc
    record("guest.snapshot.revert", user=job.owner, target=guest, name=name,
           kind=snapshot.kind, job=job.pk, **result)
    return {"guest": guest.pk, "name": name, "state": refresh(guest).state, **result}
