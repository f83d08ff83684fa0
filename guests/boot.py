"""Kernels and initrds for direct kernel boot: never a path from the request.

A guest's kernel or initrd is either a volume chosen by id (on the guest's host, in a pool
the app knows) or a file chosen by name from the host's boot files directory (a directory
an administrator set on the host, served as a libvirt dir pool, see storage.bootfiles). The
path that reaches the domain XML is the one libvirt reports for that volume, after these
checks: on the guest's host, a regular file directly in its pool's directory, no guest's
disk, and its first bytes look like a kernel (or an initrd).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from guests.boot_magic import looks_like_initrd, looks_like_kernel
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtObjectNotFound
from hosts.virt import bootfiles as virt
from storage.bootfiles import boot_pool
from storage.models import Pool, Volume

# A file name, not a path: no '/', no '..', nothing hidden.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+~-]{0,254}")
FILE_NAME_HELP = ("a file name from the host's boot files directory: letters, digits and "
                  ". _ + ~ - (no '/', no '..', not starting with '.')")
LOOKS_RIGHT = {"kernel": looks_like_kernel, "initrd": looks_like_initrd}
WHAT = {"kernel": "a kernel image (bzImage, ELF or compressed)",
        "initrd": "an initrd (cpio archive, plain or compressed)"}


class BootRefused(ValueError):
    """A kernel or initrd choice that cannot be used; `field` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class BootFiles:
    kernel: str = ""
    initrd: str = ""


def check_file_name(name: str) -> str:
    if not FILE_NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"'{name}' is not a boot file name: give {FILE_NAME_HELP}.")
    return name


def resolve(host: Host, data: dict[str, Any], *, disks: tuple[str, ...] = ()) -> BootFiles:
    """The kernel and initrd paths for `data`'s kernel_volume/kernel_file and
    initrd_volume/initrd_file; `disks` are the paths the new guest gets as disks."""
    kernel = _one(host, data, "kernel", disks)
    initrd = _one(host, data, "initrd", disks)
    if initrd and not kernel:
        raise BootRefused("initrd_file" if data.get("initrd_file") else "initrd_volume",
                          "An initrd needs a kernel: choose the kernel too.")
    return BootFiles(kernel=kernel, initrd=initrd)


def _one(host: Host, data: dict[str, Any], what: str, disks: tuple[str, ...]) -> str:
    volume_id, name = data.get(f"{what}_volume"), data.get(f"{what}_file") or ""
    if volume_id is not None and name:
        raise BootRefused(f"{what}_file", f"Give {what}_volume or {what}_file, not both.")
    if volume_id is not None:
        field = f"{what}_volume"
        pool, volume_name = _volume(host, volume_id, field)
    elif name:
        field = f"{what}_file"
        try:
            check_file_name(name)
        except ValueError as exc:
            raise BootRefused(field, str(exc)) from exc
        pool = boot_pool(host)
        if pool is None:
            raise BootRefused(field, f"Host '{host}' has no boot files directory: an "
                                     "administrator sets one on the host's page.")
        volume_name = name
    else:
        return ""
    return _checked(host, pool, volume_name, what, field, disks)


def _volume(host: Host, volume_id: int, field: str) -> tuple[Pool, str]:
    volume = Volume.objects.select_related("pool__host").filter(pk=volume_id).first()
    if volume is None:
        raise BootRefused(field, f"There is no volume with id {volume_id}.")
    if volume.pool.host_id != host.pk:
        raise BootRefused(field, f"Volume '{volume.name}' is on host '{volume.pool.host}', "
                                 f"not on the guest's host '{host}'.")
    return volume.pool, volume.name


def _checked(host: Host, pool: Pool, name: str, what: str, field: str,
             disks: tuple[str, ...]) -> str:
    label = f"'{name}' (pool '{pool.name}')"
    if not pool.active:
        raise BootRefused(field, f"Pool '{pool.name}' is not running: start it first.")
    try:
        facts = virt.volume_facts(host.virt_target, pool.name, name)
    except VirtObjectNotFound as exc:
        raise BootRefused(field, f"There is no file {label} on host '{host}'.") from exc
    except VirtError as exc:
        raise BootRefused(field, f"{label} cannot be read on host '{host}': {exc}") from exc
    if facts.kind != "file" or not virt.in_directory(facts):
        raise BootRefused(field, f"{label} is not a regular file in the pool's directory "
                                 f"(libvirt says: {facts.kind or 'unknown'}).")
    if facts.format not in ("raw", ""):
        raise BootRefused(field, f"{label} is a {facts.format} image, not {WHAT[what]}.")
    if facts.path in disks:
        raise BootRefused(field, f"{label} is also one of the new guest's disks.")
    users = disk_users(host, pool, facts.path)
    if users:
        raise BootRefused(field, f"{label} is a disk of guest '{users[0]}': a disk cannot "
                                 f"be a {what}.")
    try:
        head = virt.read_head(host.virt_target, facts.path)
    except VirtError as exc:
        raise BootRefused(field, f"{label} cannot be read on host '{host}': {exc}") from exc
    if head is not None and not LOOKS_RIGHT[what](head):
        raise BootRefused(field, f"{label} is not {WHAT[what]}.")
    return facts.path


def disk_users(host: Host, pool: Pool, path: str) -> list[Guest]:
    """Guests with a disk at `path` (any host's when the pool is shared storage)."""
    guests = Guest.objects.select_related("host").order_by("name")
    if not pool.shared:
        guests = guests.filter(host=host)
    return [guest for guest in guests
            if any(disk.get("source") == path for disk in (guest.devices or {}).get(
                "disks", []))]
