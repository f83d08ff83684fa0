"""A request to create a guest: its rules as plain checks, and the API's serializers on them.

The API and the wizard validate through CreateGuestSerializer; code that builds a request
itself (P2V) calls `checked_request`: the same rules and defaults, without DRF. The
serializer's declared limits are the constants below, its own checks the functions below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from guests import boot
from guests.errors import GuestError
from guests.placement.conflicts import clean_labels
from hosts.virt import domain_xml as dx

MAX_VCPUS = 512
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 16, 16 * 1024 * 1024
MIN_DISK_GIB, MAX_DISK_GIB = 0.01, 65536
DISK_FORMATS = ("raw", "qcow2")
BOOT_DEVICES = ("hd", "cdrom", "network")
BOOTLOADERS = ("", "pygrub")
FIRMWARES = ("bios", "efi")
BRIDGE_RE = r"^[A-Za-z0-9_.-]{1,15}$"
NETWORK_RE = r"^[A-Za-z0-9_.-]{1,64}$"
MAC_RE = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
MAX_LABELS, MAX_LABEL_LENGTH = 32, 64

PATH_REFUSED = ("Host paths are not accepted: choose {what}_file (a file of the host's boot "
                "files directory) or {what}_volume (a volume id on the guest's host).")


class RequestRefused(GuestError):
    """A field of the request breaks a rule; `field` names it (`disks[0].pool`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# --- the rules (the serializer calls these too) ------------------------------------------

def check_name(name: str) -> str:
    if not dx.NAME_RE.match(name):
        raise RequestRefused("name", "Guest names are 1 to 64 characters: letters, digits, "
                                     "and _ . + - (not first).")
    return name


def check_labels(labels: list[str]) -> list[str]:
    try:
        return clean_labels(labels)
    except ValueError as exc:
        raise RequestRefused("labels", str(exc)) from exc


def check_no_host_path(what: str, value: str) -> str:
    """`kernel` and `initrd` exist only to refuse a host path with the reason."""
    if value:
        raise RequestRefused(what, PATH_REFUSED.format(what=what))
    return value


def check_boot_file(field: str, value: str) -> str:
    if value:
        try:
            boot.check_file_name(value)
        except ValueError as exc:
            raise RequestRefused(field, str(exc)) from exc
    return value


def check_disk_kind(disk: Mapping[str, Any], field: str = "disks") -> None:
    kinds = [key for key in ("volume", "iso", "pool") if key in disk]
    if len(kinds) != 1:
        raise RequestRefused(field, "Give exactly one of volume, iso or pool (+ size_gib).")
    if "pool" in disk and "size_gib" not in disk:
        raise RequestRefused(field, "A new volume needs size_gib.")


def check_nic_source(nic: Mapping[str, Any], field: str = "nics") -> None:
    if ("bridge" in nic) == ("network" in nic):
        raise RequestRefused(field, "Give a bridge or a network.")


# --- the plain check of a whole request --------------------------------------------------

_ABSENT = object()


def _given(data: Mapping[str, Any], name: str, field: str, *, default: Any,
           nullable: bool = False) -> tuple[bool, Any]:
    """(whether `name` was given, its value or the default); a missing required field or a
    null where none is allowed is refused."""
    if name not in data:
        if default is _ABSENT:
            raise RequestRefused(field, "This field is required.")
        return False, default
    value = data[name]
    if value is None and not nullable:
        raise RequestRefused(field, "This field may not be null.")
    return True, value


def _integer(data: Mapping[str, Any], name: str, *, low: int | None = None,
             high: int | None = None, default: Any = _ABSENT, nullable: bool = False,
             field: str = "") -> Any:
    field = field or name
    given, value = _given(data, name, field, default=default, nullable=nullable)
    if not given or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestRefused(field, "A valid integer is required.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RequestRefused(field, f"Give a whole number from {low} to {high}."
                             if high is not None else f"Give a whole number of {low} or more.")
    return value


def _text(data: Mapping[str, Any], name: str, *, max_length: int | None = None,
          default: Any = _ABSENT, blank: bool = False, trim: bool = True, pattern: str = "",
          field: str = "") -> Any:
    field = field or name
    given, value = _given(data, name, field, default=default)
    if not given:
        return value
    if not isinstance(value, str):
        raise RequestRefused(field, "Not a valid string.")
    value = value.strip() if trim else value
    if not value and not blank:
        raise RequestRefused(field, "This field may not be blank.")
    if max_length is not None and len(value) > max_length:
        raise RequestRefused(field, f"Ensure this field has no more than {max_length} "
                                    "characters.")
    if pattern and not re.match(pattern, value):
        raise RequestRefused(field, f"'{value}' does not match {pattern}.")
    return value


def _choice(data: Mapping[str, Any], name: str, choices: tuple[str, ...] | list[str],
            default: Any = _ABSENT, field: str = "") -> Any:
    field = field or name
    given, value = _given(data, name, field, default=default)
    if given and value not in choices:
        raise RequestRefused(field, f"'{value}' is not a valid choice: "
                                    f"{', '.join(map(repr, choices))}.")
    return value


def _boolean(data: Mapping[str, Any], name: str, default: bool) -> bool:
    given, value = _given(data, name, name, default=default)
    if given and not isinstance(value, bool):
        raise RequestRefused(name, "Must be a valid boolean.")
    return value


def _items(data: Mapping[str, Any], name: str, default: list[Any],
           max_length: int | None = None) -> list[Any]:
    given, value = _given(data, name, name, default=default)
    if not given:
        return list(value)
    if not isinstance(value, list | tuple):
        raise RequestRefused(name, "Expected a list of items.")
    if max_length is not None and len(value) > max_length:
        raise RequestRefused(name, f"Ensure this field has no more than {max_length} "
                                   "elements.")
    return list(value)


def _disk(disk: Any, field: str) -> dict[str, Any]:
    if not isinstance(disk, Mapping):
        raise RequestRefused(field, "Invalid data: expected a dictionary.")
    checked: dict[str, Any] = {}
    for key in ("volume", "iso", "pool"):
        if key in disk:
            checked[key] = _integer(disk, key, field=f"{field}.{key}")
    if "size_gib" in disk:
        size = disk["size_gib"]
        if isinstance(size, bool) or not isinstance(size, int | float) or \
                not MIN_DISK_GIB <= size <= MAX_DISK_GIB:
            raise RequestRefused(f"{field}.size_gib", f"Give a size from {MIN_DISK_GIB} to "
                                                      f"{MAX_DISK_GIB} GiB.")
        checked["size_gib"] = float(size)
    checked["format"] = _choice(disk, "format", DISK_FORMATS, "raw", field=f"{field}.format")
    check_disk_kind(checked, field)
    return checked


def _nic(nic: Any, field: str) -> dict[str, Any]:
    if not isinstance(nic, Mapping):
        raise RequestRefused(field, "Invalid data: expected a dictionary.")
    checked = {key: _text(nic, key, pattern=pattern, field=f"{field}.{key}")
               for key, pattern in (("bridge", BRIDGE_RE), ("network", NETWORK_RE),
                                    ("mac", MAC_RE)) if key in nic}
    check_nic_source(checked, field)
    return checked


def checked_request(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` checked by CreateGuestSerializer's rules, with its defaults, as its
    `validated_data` would be; RequestRefused names the first field that is wrong."""
    checked: dict[str, Any] = {
        "name": check_name(_text(data, "name", max_length=64)),
        "type": _choice(data, "type", sorted(dx.GUEST_TYPES), "hvm"),
        "vcpus": _integer(data, "vcpus", low=1, high=MAX_VCPUS, default=1),
        "memory_mib": _integer(data, "memory_mib", low=MIN_MEMORY_MIB, high=MAX_MEMORY_MIB),
        "cmdline": _text(data, "cmdline", max_length=2048, default="", blank=True),
        "bootloader": _choice(data, "bootloader", BOOTLOADERS, ""),
        "firmware": _choice(data, "firmware", FIRMWARES, "bios"),
        "boot": [_choice({"boot": device}, "boot", BOOT_DEVICES, field=f"boot[{index}]")
                 for index, device in enumerate(_items(data, "boot", ["hd"], 3))],
        "disks": [_disk(disk, f"disks[{index}]")
                  for index, disk in enumerate(_items(data, "disks", []))],
        "cdrom": _integer(data, "cdrom", default=None, nullable=True),
        "nics": [_nic(nic, f"nics[{index}]")
                 for index, nic in enumerate(_items(data, "nics", []))],
        "vnc": _boolean(data, "vnc", False),
        "description": _text(data, "description", max_length=1000, default=""),
        "labels": check_labels([
            _text({"labels": label}, "labels", max_length=MAX_LABEL_LENGTH,
                  field=f"labels[{index}]")
            for index, label in enumerate(_items(data, "labels", [], MAX_LABELS))]),
    }
    for what in ("kernel", "initrd"):
        checked[f"{what}_volume"] = _integer(data, f"{what}_volume", default=None,
                                             nullable=True)
        checked[f"{what}_file"] = check_boot_file(f"{what}_file", _text(
            data, f"{what}_file", max_length=255, default="", blank=True, trim=False))
        if what in data:  # only to refuse a host path with the reason
            checked[what] = check_no_host_path(what, _text(data, what, blank=True))
    # Optional without a default: absent stays absent.
    for name, low, high in (("host", None, None), ("max_vcpus", 1, MAX_VCPUS),
                            ("max_memory_mib", MIN_MEMORY_MIB, MAX_MEMORY_MIB)):
        if name in data:
            checked[name] = _integer(data, name, low=low, high=high)
    return checked


# --- the API's serializers ---------------------------------------------------------------

def _refused(exc: RequestRefused) -> ValidationError:
    return ValidationError(str(exc))


class DiskRequest(serializers.Serializer):
    volume = serializers.IntegerField(required=False, help_text="an existing volume's id")
    iso = serializers.IntegerField(required=False, help_text="an ISO volume, as a CD-ROM")
    pool = serializers.IntegerField(required=False, help_text="new volume in this pool")
    size_gib = serializers.FloatField(required=False, min_value=MIN_DISK_GIB,
                                      max_value=MAX_DISK_GIB)
    format = serializers.ChoiceField(choices=list(DISK_FORMATS), default="raw")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            check_disk_kind(data)
        except RequestRefused as exc:
            raise _refused(exc) from exc
        return data


class NicRequest(serializers.Serializer):
    bridge = serializers.RegexField(BRIDGE_RE, required=False)
    network = serializers.RegexField(NETWORK_RE, required=False)
    mac = serializers.RegexField(MAC_RE, required=False)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        try:
            check_nic_source(data)
        except RequestRefused as exc:
            raise _refused(exc) from exc
        return data


class CreateGuestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    host = serializers.IntegerField(required=False, help_text="omit for automatic placement")
    type = serializers.ChoiceField(choices=sorted(dx.GUEST_TYPES), default="hvm")
    vcpus = serializers.IntegerField(min_value=1, max_value=MAX_VCPUS, default=1)
    max_vcpus = serializers.IntegerField(min_value=1, max_value=MAX_VCPUS, required=False)
    memory_mib = serializers.IntegerField(min_value=MIN_MEMORY_MIB, max_value=MAX_MEMORY_MIB)
    max_memory_mib = serializers.IntegerField(min_value=MIN_MEMORY_MIB,
                                              max_value=MAX_MEMORY_MIB, required=False)
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
    bootloader = serializers.ChoiceField(choices=list(BOOTLOADERS), default="")
    firmware = serializers.ChoiceField(choices=list(FIRMWARES), default="bios",
                                       help_text="HVM guests: BIOS or UEFI (OVMF on the host)")
    boot = serializers.ListField(child=serializers.ChoiceField(choices=list(BOOT_DEVICES)),
                                 default=["hd"], max_length=3)
    disks = DiskRequest(many=True, required=False, default=list)
    cdrom = serializers.IntegerField(
        required=False, allow_null=True, default=None,
        help_text="an ISO image (volume id) from an ISO library pool of the guest's host, "
                  "attached read-only as a CD-ROM; put 'cdrom' first in boot to install from it")
    nics = NicRequest(many=True, required=False, default=list)
    vnc = serializers.BooleanField(default=False)
    description = serializers.CharField(max_length=1000, required=False, default="")
    labels = serializers.ListField(
        child=serializers.CharField(max_length=MAX_LABEL_LENGTH), required=False,
        default=list, max_length=MAX_LABELS, help_text="placement labels (see conflict sets)")

    def _checked(self, check: Any, *args: Any) -> Any:
        try:
            return check(*args)
        except RequestRefused as exc:
            raise _refused(exc) from exc

    def validate_labels(self, labels: list[str]) -> list[str]:
        return self._checked(check_labels, labels)

    def validate_kernel(self, value: str) -> str:
        return self._checked(check_no_host_path, "kernel", value)

    def validate_initrd(self, value: str) -> str:
        return self._checked(check_no_host_path, "initrd", value)

    def validate_kernel_file(self, value: str) -> str:
        return self._checked(check_boot_file, "kernel_file", value)

    def validate_initrd_file(self, value: str) -> str:
        return self._checked(check_boot_file, "initrd_file", value)

    def validate_name(self, name: str) -> str:
        return self._checked(check_name, name)
