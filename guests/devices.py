"""Changing a guest's hardware: vCPUs, disks and NICs (hot where the hypervisor can)."""

from __future__ import annotations

from typing import Any, NoReturn

from guests.errors import GuestError, GuestGone
from guests.lifecycle import refresh
from guests.models import Guest
from guests.placement.exclusivity import disk_conflicts, explain
from guests.services import random_mac
from hosts.guest_networks import NicRefused, check_nics
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import devices as virt_devices
from hosts.virt import domain_xml as dx
from storage.access import why_not_a_disk
from storage.attachments import saved_memory_in
from storage.content import why_unusable
from storage.models import Volume
from xenweb.audit.services import record


def _run(guest: Guest, what: str, call: Any, *, user: Any, request: Any, **detail: Any) -> str:
    try:
        applied = call()
    except (VirtError, dx.SpecError) as exc:
        _failed(guest, what, exc, user=user, request=request, **detail)
    record(f"guest.{what}", user=user, request=request, target=guest, applied=applied, **detail)
    refresh(guest)
    return applied


def _failed(guest: Guest, what: str, exc: Exception, *, user: Any, request: Any,
            **detail: Any) -> NoReturn:
    """Audit the failure and raise it as the guest error the API answers with."""
    record(f"guest.{what}", user=user, request=request, target=guest, result="failed",
           message=str(exc), **detail)
    if isinstance(exc, VirtObjectNotFound):
        raise GuestGone(f"The guest {guest.name} no longer exists on {guest.host.name}: "
                        f"{exc}") from exc
    raise GuestError(str(exc)) from exc


def set_vcpus(guest: Guest, count: int, *, user: Any, request: Any = None) -> str:
    try:
        maximum = max(guest.vcpus, _max_vcpus(guest))
    except VirtError as exc:  # the guest's definition is unreadable, or gone
        _failed(guest, "vcpus", exc, user=user, request=request, vcpus=count)
    if not 1 <= count <= maximum:
        raise GuestError(f"vCPUs must be between 1 and the guest's maximum of {maximum}.")
    return _run(guest, "vcpus", lambda: virt_devices.set_vcpus(
        guest.host.virt_target, str(guest.uuid), count),
        user=user, request=request, vcpus=count)


def _max_vcpus(guest: Guest) -> int:
    from hosts.virt.domains import get_domain

    return get_domain(guest.host.virt_target, str(guest.uuid)).xml.max_vcpus


def _next_target(guest: Guest) -> tuple[str, str]:
    used = {disk["target"] for disk in guest.devices.get("disks", [])}
    layout = dx.disk_layout("xen" if guest.host.hypervisor_type == "Xen" else "",
                            guest.os_type)
    for name in layout.names():
        if name not in used:
            return name, layout.bus
    raise GuestError(f"Guest '{guest}' has no free disk slot.")


def attach_volume(guest: Guest, volume: Volume, *, shareable: bool = False,
                  readonly: bool = False, user: Any, request: Any = None) -> str:
    """Attach the volume as the guest's next disk. `shareable` marks it for use by several
    running guests at once (cluster filesystems); otherwise a running guest that has it
    attached writable refuses the attachment (see guests.placement.exclusivity)."""
    if volume.pool.host_id != guest.host_id:
        raise GuestError(f"Volume '{volume}' is on another host than '{guest}'.")
    saved = saved_memory_in(volume)
    if saved is not None:
        # libxl reads a save image again after the app checked it: no guest may write
        # into one (see guests.save_images).
        raise GuestError(f"Volume '{volume}' holds the saved memory of guest '{saved}': it "
                         "cannot be attached as a disk.")
    if any(disk["source"] == volume.path for disk in guest.devices.get("disks", [])):
        raise GuestError(f"Volume '{volume}' is attached to '{guest}' already.")
    reason = why_unusable(volume) or why_not_a_disk(volume)
    if reason:
        raise GuestError(f"{reason} It cannot be attached.")
    target, bus = _next_target(guest)
    disk = {"source": volume.path, "target": target, "device": "disk", "readonly": readonly,
            "shareable": shareable}
    found = disk_conflicts([disk], guest.host, exclude=guest)
    if found:
        message = f"Volume '{volume}' cannot be attached to '{guest}': {explain(found)}"
        record("guest.attach_disk", user=user, request=request, target=guest, result="refused",
               message=message, volume=volume.path, disk=target)
        raise GuestError(message)
    spec = dx.DiskSpec(source=volume.path, target=target, bus=bus,
                       format=volume.format or "raw", shareable=shareable, readonly=readonly)
    return _run(guest, "attach_disk", lambda: virt_devices.attach(
        guest.host.virt_target, str(guest.uuid), spec),
        user=user, request=request, volume=volume.path, disk=target, shareable=shareable,
        readonly=readonly)


def detach_disk(guest: Guest, target: str, *, user: Any, request: Any = None) -> str:
    return _run(guest, "detach_disk", lambda: virt_devices.detach_disk(
        guest.host.virt_target, str(guest.uuid), target),
        user=user, request=request, disk=target)


def attach_nic(guest: Guest, *, bridge: str = "", network: str = "", mac: str = "",
               user: Any, request: Any = None) -> str:
    spec = dx.NicSpec(mac=(mac or random_mac()).lower(), bridge=bridge, network=network)
    if bool(bridge) == bool(network):
        raise GuestError("Give a bridge or a network for the new interface.")
    try:
        check_nics(guest.host, [{"bridge": bridge, "network": network}])
    except NicRefused as exc:
        raise GuestError(str(exc)) from exc
    return _run(guest, "attach_nic", lambda: virt_devices.attach(
        guest.host.virt_target, str(guest.uuid), spec),
        user=user, request=request, mac=spec.mac)


def detach_nic(guest: Guest, mac: str, *, user: Any, request: Any = None) -> str:
    return _run(guest, "detach_nic", lambda: virt_devices.detach_nic(
        guest.host.virt_target, str(guest.uuid), mac),
        user=user, request=request, mac=mac)
