"""Creating a guest from the API or the wizard: a checked spec, volumes, the definition.

Everything that can be refused is refused before anything is created; volumes made for
the guest are removed again if the definition fails.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from guests import boot
from guests.conflicts import clean_labels, conflicts_on
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

TYPES = {"pv": dx.PV, "hvm": dx.HVM, "pvh": dx.PVH, "xen": dx.PV, "xenpvh": dx.PVH}
GIB = 1024**3


PATH_REFUSED = ("Host paths are not accepted: choose {what}_file (a file of the host's boot "
                "files directory) or {what}_volume (a volume id on the guest's host).")


def _file_name(value: str) -> str:
    if value:
        try:
            boot.check_file_name(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
    return value


class DiskRequest(serializers.Serializer):
    volume = serializers.IntegerField(required=False, help_text="an existing volume's id")
    iso = serializers.IntegerField(required=False, help_text="an ISO volume, as a CD-ROM")
    pool = serializers.IntegerField(required=False, help_text="new volume in this pool")
    size_gib = serializers.FloatField(required=False, min_value=0.01, max_value=65536)
    format = serializers.ChoiceField(choices=["raw", "qcow2"], default="raw")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        kinds = [key for key in ("volume", "iso", "pool") if key in data]
        if len(kinds) != 1:
            raise ValidationError("Give exactly one of volume, iso or pool (+ size_gib).")
        if "pool" in data and "size_gib" not in data:
            raise ValidationError("A new volume needs size_gib.")
        return data


class NicRequest(serializers.Serializer):
    bridge = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,15}$", required=False)
    network = serializers.RegexField(r"^[A-Za-z0-9_.-]{1,64}$", required=False)
    mac = serializers.RegexField(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("bridge" in data) == ("network" in data):
            raise ValidationError("Give a bridge or a network.")
        return data


class CreateGuestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    host = serializers.IntegerField(required=False, help_text="omit for automatic placement")
    type = serializers.ChoiceField(choices=sorted(TYPES), default="hvm")
    vcpus = serializers.IntegerField(min_value=1, max_value=512, default=1)
    max_vcpus = serializers.IntegerField(min_value=1, max_value=512, required=False)
    memory_mib = serializers.IntegerField(min_value=16, max_value=16 * 1024 * 1024)
    max_memory_mib = serializers.IntegerField(min_value=16, max_value=16 * 1024 * 1024,
                                              required=False)
    kernel_volume = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="direct kernel boot: the kernel, a volume (id) on the guest's host")
    kernel_file = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True, trim_whitespace=False,
        help_text=f"direct kernel boot: the kernel, {boot.FILE_NAME_HELP}")
    initrd_volume = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="the initrd, a volume (id) on the guest's host")
    initrd_file = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True, trim_whitespace=False,
        help_text=f"the initrd, {boot.FILE_NAME_HELP}")
    # Host paths are refused (a clear 400 rather than a silently ignored field).
    kernel = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                   help_text="not accepted: use kernel_file or kernel_volume")
    initrd = serializers.CharField(required=False, allow_blank=True, write_only=True,
                                   help_text="not accepted: use initrd_file or initrd_volume")
    cmdline = serializers.CharField(max_length=2048, required=False, default="",
                                    allow_blank=True)
    bootloader = serializers.ChoiceField(choices=["", "pygrub"], default="")
    firmware = serializers.ChoiceField(choices=["bios", "efi"], default="bios",
                                       help_text="HVM guests: BIOS or UEFI (OVMF on the host)")
    boot = serializers.ListField(child=serializers.ChoiceField(choices=["hd", "cdrom",
                                                                       "network"]),
                                 default=["hd"], max_length=3)
    disks = DiskRequest(many=True, required=False, default=list)
    cdrom = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="an ISO image (volume id) from an ISO library pool of the guest's host, "
                  "attached read-only as a CD-ROM; put 'cdrom' first in boot to install from it")
    nics = NicRequest(many=True, required=False, default=list)
    vnc = serializers.BooleanField(default=False)
    description = serializers.CharField(max_length=1000, required=False, default="")
    labels = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                   default=list, max_length=32,
                                   help_text="placement labels (see conflict sets)")

    def validate_labels(self, labels: list[str]) -> list[str]:
        try:
            return clean_labels(labels)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc

    def validate_kernel(self, value: str) -> str:
        if value:
            raise ValidationError(PATH_REFUSED.format(what="kernel"))
        return value

    def validate_initrd(self, value: str) -> str:
        if value:
            raise ValidationError(PATH_REFUSED.format(what="initrd"))
        return value

    def validate_kernel_file(self, value: str) -> str:
        return _file_name(value)

    def validate_initrd_file(self, value: str) -> str:
        return _file_name(value)

    def validate_name(self, name: str) -> str:
        if not dx.NAME_RE.match(name):
            raise ValidationError("Guest names are 1 to 64 characters: letters, digits, and "
                                  "_ . + - (not first).")
        return name


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
                                 volume["format"], allow_insecure=host.allow_insecure_transport)
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
                delete_volume_by_path(host.uri, path, allow_insecure=host.allow_insecure_transport)
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
