"""Guest writes: actions (quick ones now, slow ones as jobs), deletion, creation
(its steps: guests.provisioning runs them)."""

from __future__ import annotations

import secrets
from typing import Any

from django.db import transaction

from guests import save_images
from guests.errors import GuestError, GuestGone
from guests.lifecycle import SLOW_ACTIONS, act, check_allowed
from guests.models import Guest
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import domain_xml as dx
from hosts.virt import domains as virt
from hosts.virt.pools import delete_volume_by_path
from xenweb.audit.services import record
from xenweb.jobs.locks import active_job, hold
from xenweb.jobs.models import Job
from xenweb.jobs.services import start_job

XEN_OUI = "00:16:3e"
# The actions that run as jobs, and their tasks (guests/tasks.py registers them by these names).
SLOW_ACTION_TASKS = {"shutdown": "guests.tasks.shutdown", "save": "guests.tasks.save",
                     "restore": "guests.tasks.restore",
                     "managedsave": "guests.tasks.managed_save"}


def random_mac() -> str:
    """A locally unique MAC in Xen's OUI, as xl would generate (first byte < 0x80)."""
    tail = [secrets.randbelow(0x80), secrets.randbelow(256), secrets.randbelow(256)]
    return XEN_OUI + "".join(f":{byte:02x}" for byte in tail)


def busy_job(guest: Guest) -> Job | None:
    return active_job(guest)


def request_action(
    guest: Guest, action: str, *, user: Any, request: Any = None, **params: Any
) -> Guest | Job:
    """Run a lifecycle action: quick ones return the guest, slow ones a queued job."""
    running = busy_job(guest)
    if running is not None:
        raise GuestError(f"Guest '{guest}' is busy with job #{running.pk} ({running.title}); "
                         "wait for it to finish.")
    if action in SLOW_ACTIONS:
        check_allowed(guest, action)
        try:
            if action == "save":
                save_images.check_save_request(guest, params.get("pool"))
            elif action == "restore":
                save_images.check_restore_request(guest, params.get("volume"))
        except save_images.SaveImageRefused as exc:
            record(f"guest.{action}", user=user, request=request, target=guest,
                   result="refused", message=str(exc), **params)
            raise
        return start_job(SLOW_ACTION_TASKS[action], kind=f"guest.{action}", owner=user,
                         title=f"{action.capitalize()} {guest}", target=guest,
                         params=params, request=request,
                         in_process=guest.host.in_process_only)
    with hold(guest, kind=f"guest.{action}", title=f"{action.capitalize()} {guest}",
              owner=user):
        return act(guest, action, user=user, request=request, **params)


def delete_guest(
    guest: Guest, *, confirm_name: str, delete_volumes: bool, user: Any, request: Any = None
) -> list[str]:
    """Undefine the guest (typed confirmation of its name); optionally delete its disks.

    Returns the volume paths deleted (with its LVM snapshot volumes and its save image).
    CD-ROMs and shareable disks are never deleted.
    """
    if confirm_name != guest.name:
        raise GuestError(f"Type the guest's name '{guest.name}' to confirm the deletion.")
    check_allowed(guest, "delete")
    with hold(guest, kind="guest.delete", title=f"Delete {guest}", owner=user):
        return _delete_guest(guest, delete_volumes=delete_volumes, user=user, request=request)


def _delete_guest(guest: Guest, *, delete_volumes: bool, user: Any, request: Any) -> list[str]:
    host = guest.host.virt_target
    try:
        info = virt.get_domain(host, str(guest.uuid))
        virt.undefine(host, str(guest.uuid))
    except VirtError as exc:
        record("guest.delete", user=user, request=request, target=guest, result="failed",
               message=str(exc))
        raise GuestError(str(exc)) from exc
    deleted, kept = [], []
    if delete_volumes:
        # LVM snapshot volumes first: their origins cannot go while they exist.
        paths = [v["path"] for row in guest.lvm_snapshots.all() for v in row.volumes]
        saved = guest.saved_volume
        if saved is not None and saved.pool.host_id == guest.host_id:
            paths.append(saved.path)  # its own save image goes with it
        for path in paths:
            try:
                delete_volume_by_path(host, path)
                deleted.append(path)
            except VirtError as exc:
                kept.append(f"{path}: {exc}")
        for disk in info.xml.disks:
            if disk.device != "disk" or disk.shareable or not disk.source:
                continue
            try:
                delete_volume_by_path(host, disk.source)
                deleted.append(disk.source)
            except VirtError as exc:
                kept.append(f"{disk.source}: {exc}")
    record("guest.delete", user=user, request=request, target=guest,
           volumes_deleted=deleted, volumes_kept=kept)
    guest.delete()
    if kept:
        raise GuestError("The guest was deleted, but some volumes could not be: "
                         + "; ".join(kept))
    return deleted


def set_memory(guest: Guest, memory_mib: int, *, user: Any, request: Any = None) -> Guest:
    """Balloon the guest's memory (live where it runs, and in its definition)."""
    maximum = guest.max_memory_mib or guest.memory_mib
    if not 64 <= memory_mib <= maximum:
        raise GuestError(f"Memory must be between 64 MiB and the maximum of {maximum} MiB.")
    try:
        virt.set_memory(guest.host.virt_target, str(guest.uuid), memory_mib,
                        live=guest.state in ("running", "blocked", "paused"))
    except VirtError as exc:
        record("guest.memory", user=user, request=request, target=guest, result="failed",
               message=str(exc), memory_mib=memory_mib)
        if isinstance(exc, VirtObjectNotFound):
            raise GuestGone(f"The guest {guest.name} no longer exists on {guest.host.name}: "
                            f"{exc}") from exc
        raise GuestError(str(exc)) from exc
    record("guest.memory", user=user, request=request, target=guest, memory_mib=memory_mib)
    from guests.lifecycle import refresh

    return refresh(guest)


def define_guest(spec: dx.DomainSpec, *, host: Any, user: Any,
                 request: Any = None) -> virt.DomainInfo:
    """Define the domain on the host (the spec is validated first); a refusal is audited.
    The Guest row comes with `store_guest` (guests.provisioning does both)."""
    try:
        return virt.define_domain(host.virt_target, spec)
    except (VirtError, dx.SpecError) as exc:
        record("guest.create", user=user, request=request, target_type="guests.guest",
               target_label=spec.name, result="failed", message=str(exc))
        raise GuestError(str(exc)) from exc


@transaction.atomic
def store_guest(info: virt.DomainInfo, *, host: Any, labels: list[str] | tuple[str, ...] = (),
                user: Any, request: Any = None) -> Guest:
    """Cache a guest just defined, with its placement labels, and audit its creation."""
    from guests.inventory import cached_fields

    guest = Guest.objects.create(host=host, uuid=info.uuid, labels=list(labels),
                                 **cached_fields(info))
    record("guest.create", user=user, request=request, target=guest, host=host.name)
    return guest
