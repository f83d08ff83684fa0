"""Creating a guest from the API or the wizard: a checked request, volumes, the definition.

Everything that can be refused is refused before anything is created; the volumes are made
and the guest defined by guests.provisioning, which removes them again if the definition
fails. The request's rules are in guests.create_request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rest_framework.exceptions import ValidationError

from guests import boot
from guests.create_choices import bound_problems
from guests.create_request import CreateGuestSerializer
from guests.errors import GuestError
from guests.models import Guest
from guests.placement.automatic import choose_host
from guests.placement.conflicts import conflicts_on
from guests.provisioning import GuestPlan, NewVolume, provision
from guests.services import random_mac
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.guest_networks import NicRefused, check_nics
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import domain_xml as dx
from storage.access import is_boot_pool, why_not_a_disk
from storage.attachments import saved_memory_in
from storage.content import why_unusable
from storage.errors import StorageError
from storage.iso_library import library_image
from storage.models import Pool, Volume
from xenweb.audit.services import record

GIB = 1024**3


def _cdrom(volume_id: int, host: Host, bus: str, names: Iterator[str],
           disks: list[dx.DiskSpec]) -> dx.DiskSpec:
    """The ISO library image as a read-only CD-ROM (hdc on IDE, else the next free name)."""
    try:
        image = library_image(volume_id, host)
    except ValueError as exc:
        raise GuestError(str(exc)) from exc
    taken = {disk.target for disk in disks}
    wanted = (["hdc"] if bus == "ide" else []) + list(names)
    target = next((name for name in wanted if name not in taken), None)
    if target is None:
        raise GuestError("No device name is left for the CD-ROM: give fewer disks.")
    return dx.DiskSpec(source=image.path, target=target, bus=bus, device="cdrom",
                       format="raw", readonly=True)


def _new_volume(data: dict[str, Any], host: Host, number: int, request: dict[str, Any],
                target: str) -> NewVolume:
    pool = Pool.objects.filter(pk=request["pool"], host=host).first()
    if pool is None:
        raise GuestError(f"Pool {request['pool']} is not on host '{host}'.")
    if is_boot_pool(pool):
        raise GuestError(f"Pool '{pool.name}' serves the boot files directory of "
                         f"host '{host}': it holds no disks.")
    suffix = "img" if request["format"] == "raw" else "qcow2"
    return NewVolume(pool=pool, name=f"{data['name']}-disk{number}.{suffix}",
                     capacity=int(request["size_gib"] * GIB), format=request["format"],
                     target=target)


def _existing_disk(host: Host, request: dict[str, Any], target: str,
                   layout: dx.DiskLayout) -> dx.DiskSpec:
    volume = Volume.objects.filter(pk=request.get("volume") or request.get("iso"),
                                   pool__host=host).first()
    if volume is None:
        raise GuestError(f"Volume {request.get('volume') or request.get('iso')} is not on "
                         f"host '{host}'.")
    saved = saved_memory_in(volume)
    if saved is not None:
        raise GuestError(f"Volume '{volume}' holds the saved memory of guest '{saved}': it "
                         "cannot be a disk.")
    reason = why_unusable(volume) or why_not_a_disk(volume)
    if reason:
        raise GuestError(f"{reason} It cannot be a disk of a new guest.")
    iso = "iso" in request
    return dx.DiskSpec(
        source=volume.path, target=target, bus=layout.cdrom_bus if iso else layout.bus,
        device="cdrom" if iso else "disk", format="raw" if iso else volume.format or "raw",
    )


def _host(data: dict[str, Any], os_type: str) -> Host:
    if data.get("host") is None:
        return choose_host(os_type, data["memory_mib"], labels=data.get("labels", ()),
                           name=data["name"])
    host = Host.objects.filter(pk=data["host"]).first()
    if host is None:
        raise GuestError(f"There is no host with id {data['host']}.")
    if host.state == Host.State.MAINTENANCE:
        raise GuestError(f"Host '{host}' is in maintenance: no new guests are placed there.")
    conflicts = conflicts_on(host, data.get("labels", ()), name=data["name"])
    if conflicts:
        raise GuestError(" ".join(conflicts))
    return host


def plan(data: dict[str, Any]) -> tuple[GuestPlan, list[NewVolume]]:
    """Check a validated request (guests.create_request) and everything it names; return
    the guest (with the disks that exist) and the volumes still to create."""
    os_type = dx.GUEST_TYPES[data["type"]]
    host = _host(data, os_type)
    problems = bound_problems(host, data)
    if problems:
        raise GuestError(" ".join(problems))
    try:
        domain_type = domain_type_for(host, os_type)
    except CapabilityError as exc:
        raise GuestError(str(exc)) from exc
    if Guest.objects.filter(host=host, name=data["name"]).exists():
        raise GuestError(f"Host '{host}' has a guest named '{data['name']}' already.")
    layout = dx.disk_layout(domain_type, os_type)
    disks: list[dx.DiskSpec] = []
    to_create: list[NewVolume] = []
    names = iter(layout.names())
    for number, request in enumerate(data["disks"]):
        target = "hdc" if "iso" in request else next(names, "")
        if not target:
            raise GuestError("No device name is left for a disk: give fewer disks.")
        if "pool" in request:
            to_create.append(_new_volume(data, host, number, request, target))
        else:
            disks.append(_existing_disk(host, request, target, layout))
    if data.get("cdrom") is not None:
        disks.append(_cdrom(data["cdrom"], host, layout.cdrom_bus, names, disks))
    try:
        check_nics(host, data["nics"])
    except NicRefused as exc:
        raise GuestError(str(exc)) from exc
    files = boot.resolve(host, data, disks=tuple(disk.source for disk in disks))
    nics = tuple(dx.NicSpec(mac=(nic.get("mac") or random_mac()).lower(),
                            bridge=nic.get("bridge", ""), network=nic.get("network", ""))
                 for nic in data["nics"])
    spec = dx.DomainSpec(
        name=data["name"], domain_type=domain_type, os_type=os_type,
        memory_mib=data["memory_mib"], max_memory_mib=data.get("max_memory_mib"),
        vcpus=data["vcpus"], max_vcpus=data.get("max_vcpus"), kernel=files.kernel,
        initrd=files.initrd, cmdline=data["cmdline"],
        bootloader="pygrub" if data["bootloader"] == "pygrub" else "",
        firmware=data.get("firmware", "bios"),
        boot=tuple(data["boot"]), disks=tuple(disks), nics=nics, vnc=data["vnc"],
        description=data["description"],
    )
    try:
        dx.validate(spec)
    except dx.SpecError as exc:
        raise GuestError(str(exc)) from exc
    return GuestPlan(host=host, spec=spec, labels=tuple(data.get("labels") or ())), to_create


def create(data: dict[str, Any], *, user: Any, request: Any = None) -> Guest:
    try:
        guest, volumes = plan(data)
    except boot.BootRefused as exc:  # an attempt at a host file is worth a trace
        record("guest.create", user=user, request=request, target_type="guests.guest",
               target_label=str(data.get("name", "")), result="refused", message=str(exc),
               field=exc.field)
        raise
    try:
        return provision(guest, volumes, user=user, request=request)
    except (VirtError, GuestError, StorageError) as exc:
        raise GuestError(str(exc)) from exc


def create_from_request(request: Any) -> Guest:
    data = CreateGuestSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    try:
        return create(data.validated_data, user=request.user, request=request)
    except boot.BootRefused as exc:
        raise ValidationError({exc.field: [str(exc)]}) from exc
    except GuestError as exc:
        raise ValidationError({"detail": str(exc)}) from exc
