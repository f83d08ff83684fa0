"""Guest lifecycle actions: what each state allows, Domain-0's protection, and the calls.

Quick actions return the refreshed guest; slow ones (clean shutdown with a timeout,
save to file, restore) run as jobs (see guests/tasks.py).
"""

from __future__ import annotations

import time
from typing import Any

from guests.errors import GuestError
from guests.inventory import cached_fields
from guests.models import Guest
from guests.placement.exclusivity import conflicts, explain
from hosts.virt import VirtError, VirtObjectNotFound, VirtOperationError
from hosts.virt import domains as virt
from xenweb.audit.services import record

RUNNING = ("running", "blocked")
ALLOWED: dict[str, tuple[str, ...]] = {
    "start": ("shutoff", "crashed"),
    "shutdown": RUNNING,
    "reboot": RUNNING,
    "destroy": (*RUNNING, "paused", "shutdown", "crashed", "pmsuspended"),
    "pause": RUNNING,
    "resume": ("paused",),
    "save": (*RUNNING, "paused"),
    "managedsave": (*RUNNING, "paused"),
    "restore": ("shutoff",),
    "autostart": tuple(Guest.State.values),
    "delete": ("shutoff", "crashed"),
}
ACTIONS = tuple(ALLOWED)
SLOW_ACTIONS = ("shutdown", "save", "managedsave", "restore")
DOM0_FORBIDDEN = ("start", "shutdown", "reboot", "destroy", "pause", "save", "managedsave",
                  "restore", "delete")
DOM0_MESSAGE = (
    "Domain-0 is the privileged management domain: it cannot be {verb} through xenweb. "
    "Its memory can be ballooned."
)
VERBS = {"start": "started", "shutdown": "shut down", "reboot": "rebooted",
         "destroy": "forced off", "pause": "paused", "save": "saved",
         "managedsave": "saved", "restore": "restored",
         "delete": "deleted", "resume": "resumed", "autostart": "changed"}
STATE_HINTS = {
    "shutdown": {"paused": "resume it first, or force it off"},
    "start": {"paused": "it is paused: resume it", "running": "it is running already"},
    "delete": {"running": "shut it down first", "paused": "force it off first"},
}


# QEMU's image locking, in words: a disk is open for writing by another QEMU process.
IMAGE_LOCKED = (
    " (QEMU refused to open a disk image: another running guest has the image open for "
    "writing. Stop that guest, or mark the disk shareable in both guests.)"
)


def check_allowed(guest: Guest, action: str) -> None:
    if action not in ALLOWED:
        raise GuestError(f"Unknown action '{action}'. Actions: {', '.join(ACTIONS)}.")
    if guest.is_privileged and action in DOM0_FORBIDDEN:
        raise GuestError(DOM0_MESSAGE.format(verb=VERBS[action]))
    if guest.state not in ALLOWED[action]:
        hint = STATE_HINTS.get(action, {}).get(guest.state, "")
        allowed = " or ".join(ALLOWED[action])
        raise GuestError(
            f"Guest '{guest}' is {guest.get_state_display()}: it cannot be {VERBS[action]} "
            f"now ({hint or f'needs to be {allowed}'})."
        )
    if action in ("start", "restore"):
        found = conflicts(guest)
        if found:
            raise GuestError(f"Guest '{guest}' cannot be {VERBS[action]}: {explain(found)}")
        check_disk_content(guest, VERBS[action])


def check_disk_content(guest: Guest, verb: str) -> None:
    """No guest opens a volume whose content is being written or was not checked."""
    from storage.content import unusable, why_unusable

    paths = [disk.get("source", "") for disk in guest.devices.get("disks", [])]
    for volume in unusable(guest.host_id, paths):
        raise GuestError(f"Guest '{guest}' cannot be {verb}: {why_unusable(volume)}")


def check_placement(guest: Guest) -> None:
    """Conflict sets: refuse to start a guest next to one it must never share a host with."""
    from guests.placement.conflicts import placement_conflicts

    problems = placement_conflicts(guest, guest.host)
    if problems:
        raise GuestError(f"'{guest}' cannot start on {guest.host}: " + " ".join(problems))


REREAD_ATTEMPTS = 5


def refresh(guest: Guest) -> Guest:
    """Re-read the guest from libvirt into its row.

    Right after a state change libxl may fail to report a domain that is still being
    set up ("An error occurred, but the cause is unknown"): such reads are tried again.
    """
    for attempt in range(1, REREAD_ATTEMPTS + 1):
        try:
            info = virt.get_domain(guest.host.virt_target, str(guest.uuid))
            break
        except VirtObjectNotFound:
            raise
        except VirtOperationError:
            if attempt == REREAD_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    for key, value in cached_fields(info).items():
        setattr(guest, key, value)
    guest.save()
    return guest


def _call(guest: Guest, action: str, **params: Any) -> None:
    host, uuid = guest.host.virt_target, str(guest.uuid)
    if action == "autostart":
        virt.set_autostart(host, uuid, bool(params.get("enabled", True)))
        return
    calls = {
        "start": virt.start, "reboot": virt.reboot, "destroy": virt.destroy,
        "pause": virt.pause, "resume": virt.resume, "shutdown": virt.shutdown,
    }
    calls[action](host, uuid)


def act(guest: Guest, action: str, *, user: Any, request: Any = None, **params: Any) -> Guest:
    """Perform a quick action now; refused actions and libvirt failures raise GuestError."""
    try:
        check_allowed(guest, action)
        if action == "start":
            check_placement(guest)
        _call(guest, action, **params)
    except (GuestError, VirtError) as exc:
        message = str(exc) + (IMAGE_LOCKED if '"write" lock' in str(exc) else "")
        record(f"guest.{action}", user=user, request=request, target=guest,
               result="refused" if isinstance(exc, GuestError) else "failed", message=message)
        raise GuestError(message) from exc
    record(f"guest.{action}", user=user, request=request, target=guest, **params)
    try:
        return refresh(guest)
    except VirtError as exc:
        raise GuestError(f"'{guest}' was {VERBS.get(action, action)}, but reading its state "
                         f"back failed: {exc}") from exc
