"""What an import would create: the proposed guest, its disks and NICs, and warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MAX_VCPUS = 512
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_DISK_BYTES = 1 << 50  # 1 PiB: no source declares more for one disk
MAX_DIGITS = 20  # every number read from a source fits in 64 bits


class ImportRefused(Exception):
    """The source is unsafe, malformed or unsupported; `str()` says why, for humans."""


def whole_number(text: str, what: str, *, low: int = 0, high: int = MAX_DISK_BYTES) -> int:
    """A number read from a source file, bounded before any arithmetic uses it."""
    value = str(text).strip()
    digits = value[1:] if value[:1] in "+-" else value
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_DIGITS:
        raise ImportRefused(f"The source's {what} \"{value[:40]}\" is not a whole number.")
    number = int(value)
    if not low <= number <= high:
        raise ImportRefused(f"The source's {what} {number} is out of range ({low} to "
                            f"{high}).")
    return number


@dataclass
class ProposedDisk:
    """One disk or CD-ROM of the source, in boot order.

    `path` is the image file (inside the import area) for VMX/VMDK sources; `member` the
    tar member for OVA; `ref` the VDI reference for XVA. `device` is disk, cdrom, floppy
    or lun; only `disk` devices with an image are converted.
    """

    device: str = "disk"
    bus: str = "scsi"  # ide, scsi, sata, nvme, fdc, xen
    controller: int = 0
    unit: int = 0
    target: str = ""  # libvirt-style name (sda, hda, nvme0n1, fda)
    source: str = ""  # as the source names it (file name, device path)
    block: bool = False  # the source names a host device, not an image file
    transient: bool = False
    format: str = ""  # vmdk, raw, qcow2 (the image's declared format)
    virtual_size: int = 0
    path: str = ""  # resolved image path (inside the import area), when it is one
    member: str = ""
    ref: str = ""
    compression: str = ""  # gzip: the OVA holds the image gzipped (checked once unpacked)


@dataclass
class ProposedNic:
    mac: str = ""
    mac_type: str = "generated"  # generated or static
    model: str = ""
    network: str = ""
    connection: str = "bridged"
    check_mac: bool = True


@dataclass
class Proposal:
    source: str
    kind: str  # vmx, ova, ovf, xva, vmdk
    name: str = ""
    description: str = ""
    type: str = "hvm"  # hvm or pv
    os_family: str = ""  # linux, windows, other
    guest_os: str = ""
    firmware: str = "bios"  # bios or efi
    secure_boot: bool = False
    vcpus: int = 1
    cores_per_socket: int = 1
    memory_mib: int = 32
    current_memory_mib: int | None = None
    uuid: str = ""
    disks: list[ProposedDisk] = field(default_factory=list)
    nics: list[ProposedNic] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific facts (PV args…)
    # What the guest on the first disk is (conversions.inspection), when it was inspected.
    inspection: dict[str, Any] | None = None

    @property
    def images(self) -> list[ProposedDisk]:
        """The disks that become volumes (not CD-ROMs, floppies or host devices)."""
        return [d for d in self.disks if d.device == "disk" and not d.block]

    def check_limits(self) -> None:
        """Refuse absurd values (0 or 10^9 vCPUs, negative memory) before anything else."""
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise ImportRefused(f"The source asks for {self.vcpus} vCPUs: between 1 and "
                                f"{MAX_VCPUS} can be imported.")
        if not 1 <= self.memory_mib <= MAX_MEMORY_MIB:
            raise ImportRefused(f"The source asks for {self.memory_mib} MiB of memory: "
                                f"between 1 MiB and {MAX_MEMORY_MIB} MiB can be imported.")
        for disk in self.disks:
            if disk.virtual_size < 0:
                raise ImportRefused(f"Disk {disk.source or disk.ref} declares a negative size.")
            if disk.virtual_size > MAX_DISK_BYTES:
                raise ImportRefused(f"Disk {disk.source or disk.ref} declares "
                                    f"{disk.virtual_size} bytes: at most {MAX_DISK_BYTES} "
                                    "(1 PiB) can be imported.")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra", None)
        return data
