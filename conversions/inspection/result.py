"""What an inspection found, as frozen dataclasses with `as_dict()` for the API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from conversions.inspection.drivers import Drivers


@dataclass(frozen=True)
class PartitionInfo:
    number: int  # 0: a file system on the whole disk
    start: int
    size: int
    type: str
    type_name: str
    bootable: bool
    filesystem: str  # "ext4", "vfat", "xfs", ... or ""
    uuid: str
    label: str
    readable: bool
    guid: str  # GPT: the partition's unique GUID (PARTUUID)


@dataclass(frozen=True)
class RootInfo:
    partition: int
    filesystem: str
    fstab_spec: str  # what fstab names "/" by: "UUID=...", "/dev/sda2"
    fstab_naming: str  # "uuid", "label", "partuuid", "device", "lvm", ... ("" without fstab)
    cmdline_root: str  # root= on the boot entry's kernel command line
    cmdline_naming: str
    boot_partition: int | None  # the partition holding /boot when it is separate


@dataclass(frozen=True)
class BootLoader:
    name: str  # "grub2", "grub-legacy", "syslinux", "extlinux", "bls", "" (none found)
    config: str  # "partition 1:/syslinux.cfg"
    mbr_code: str  # see bootcode.mbr_boot_code; "" on a disk without an MBR
    partition: int | None = None  # where the config is (0: the disk's file system)
    path: str = ""  # the config's path in that file system


@dataclass(frozen=True)
class KernelInfo:
    path: str  # "partition 2:/boot/vmlinuz-6.1.0-13-amd64"
    initrd: str
    version: str
    arch: str
    compression: str
    xen_pv: bool | None  # None: unknown (see evidence)
    xen_pvh: bool | None
    evidence: tuple[str, ...]  # what was read to decide, in the order it was used
    cmdline: str


@dataclass(frozen=True)
class Inspection:
    os_family: str  # "linux" or "unknown"
    distribution: str  # os-release ID: "debian", "rhel", "ubuntu"...
    version: str
    pretty_name: str
    arch: str
    arch_evidence: str
    hostname: str
    firmware: str  # "bios", "uefi", "bios+uefi", "unknown"
    partition_table: str  # "mbr", "gpt", "none"
    partitions: tuple[PartitionInfo, ...]
    boot_loader: BootLoader
    root: RootInfo
    kernel: KernelInfo | None
    drivers: Drivers
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["drivers"] = self.drivers.as_dict()
        return data
