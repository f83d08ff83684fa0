"""Creating a guest from the API or the wizard: a checked spec, volumes, the definition.

Everything that can be refused is refused before anything is created; volumes made for
the guest are removed again if the definition fails. The request's rules are in
guests.create_request.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError

from guests import boot
from guests.conflicts import conflicts_on
from guests.create_request import CreateGuestSerializer
from guests.errors import GuestError
from guests.models import Guest
from guests.placement import choose_host
from guests.services import create_guest, random_mac
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import domain_xml as dx
from hosts.virt.pools import create_volume, delete_volume_by_path
from storage.access import is_boot_pool, why_not_a_disk
from storage.content import why_unusable
from storage.iso_library import library_image
from storage.models import Pool, Volume
from storage.selectors import saved_memory_in
from xenweb.audit.services import record

TYPES = dx.GUEST_TYPES
GIB = 1024**3


def disk_targets(domain_type: str, os_type: str) -> tuple[str, str, str]:
    """(disk prefix, disk bus, cdrom bus) for the driver and guest type."""
    if os_type != dx.HVM:  # PV and PVH exist only on Xen (or the demo pretending to be)
        return ("xvd", "xen", "xen")
    if domain_type == "xen":  # emulated disks: no PV drivers assumed in an HVM guest
        return ("hd", "ide", "ide")
    return ("vd", "virtio", "ide")


def _cdrom(volume_id: int, host: Host, bus: str, prefix: str, letters: Any,
           disks: list[dx.DiskSpec]) -> dx.DiskSpec:
    """The ISO library image as a read-only CD-ROM (hdc on IDE, else the next free name)."""
    try:
        image = library_image(volume_id, host)
    except ValueError as exc:
        raise GuestError(str(exc)) from exc
    taken = {disk.target for disk in disks}
    wanted = (["hdc"] if bus == "ide" else []) + [f"{prefix}{letter}" for letter in letters]
    target = next((name for name in wanted if name not in taken), None)
    if target is None:
        raise GuestError("No device name is left for the CD-ROM: give fewer disks.")
    return dx.DiskSpec(source=image.path, target=target, bus=bus, device="cdrom",
                       format="raw", readonly=True)


def plan(data: dict[str, Any]) -> tuple[Host, dx.DomainSpec, list[dict[str, Any]]]:
    """Check everything and return the host, the spec and the volumes still to create."""
    os_type = TYPES[data["type"]]
    if data.get("host") is not None:
        host = Host.objects.filter(pk=data["host"]).first()
        if host is None:
            raise GuestError(f"There is no host with id {data['host']}.")
        if host.state == Host.State.MAINTENANCE:
            raise GuestError(f"Host '{host}' is in maintenance: no new guests are placed there.")
        conflicts = conflicts_on(host, data.get("labels", ()), name=data["name"])
        if conflicts:
            raise GuestError(" ".join(conflicts))
    else:
        host = choose_host(os_type, data["memory_mib"], labels=data.get("labels", ()),
                           name=data["name"])
    try:
        domain_type = domain_type_for(host, os_type)
    except CapabilityError as exc:
        raise GuestError(str(exc)) from exc
    if Guest.objects.filter(host=host, name=data["name"]).exists():
        raise GuestError(f"Host '{host}' has a guest named '{data['name']}' already.")
    prefix, bus, cdrom_bus = disk_targets(domain_type, os_type)
    disks, to_create = [], []
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for number, request in enumerate(data["disks"]):
        target = f"{prefix}{next(letters)}" if "iso" not in request else "hdc"
        if "pool" in request:
            pool = Pool.objects.filter(pk=request["pool"], host=host).first()
            if pool is None:
                raise GuestError(f"Pool {request['pool']} is not on host '{host}'.")
            if is_boot_pool(pool):
                raise GuestError(f"Pool '{pool.name}' serves the boot files directory of "
                                 f"host '{host}': it holds no disks.")
            to_create.append({"pool": pool.name, "name": f"{data['name']}-disk{number}.img"
                              if request["format"] == "raw" else
                              f"{data['name']}-disk{number}.qcow2",
                              "capacity": int(request["size_gib"] * GIB),
                              "format": request["format"], "target": target})
            continue
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
        disks.append(dx.DiskSpec(
            source=volume.path, target=target, bus=cdrom_bus if iso else bus,
            device="cdrom" if iso else "disk", format="raw" if iso else volume.format or "raw",
        ))
    if data.get("cdrom") is not None:
        disks.append(_cdrom(data["cdrom"], host, cdrom_bus, prefix, letters, disks))
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
    return host, spec, to_create


def create(data: dict[str, Any], *, user: Any, request: Any = None) -> Guest:
    try:
        host, spec, to_create = plan(data)
    except boot.BootRefused as exc:  # an attempt at a host file is worth a trace
        record("guest.create", user=user, request=request, target_type="guests.guest",
               target_label=str(data.get("name", "")), result="refused", message=str(exc),
               field=exc.field)
        raise
    made: list[str] = []
    try:
        disks = list(spec.disks)
        for volume in to_create:
            info = create_volume(host.uri, volume["pool"], volume["name"], volume["capacity"],
                                 volume["format"], allow_insecure=host.is_lab)
            made.append(info.path)
            _prefix, bus, _cd = disk_targets(spec.domain_type, spec.os_type)
            disks.append(dx.DiskSpec(source=info.path, target=volume["target"], bus=bus,
                                     format=volume["format"]))
        spec = dx.DomainSpec(**{**spec.__dict__, "disks": tuple(sorted(
            disks, key=lambda d: d.target))})
        guest = create_guest(spec, host=host, user=user, request=request)
        if data.get("labels"):
            guest.labels = data["labels"]
            guest.save(update_fields=["labels"])
        return guest
    except (VirtError, GuestError) as exc:
        for path in made:  # nothing half-made stays behind
            try:
                delete_volume_by_path(host.uri, path, allow_insecure=host.is_lab)
            except VirtError:
                pass
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
