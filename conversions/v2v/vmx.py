"""Parsing a VMware `.vmx` into a Proposal (pure Python, no VMware or libvirt ESX driver).

A `.vmx` is `key = "value"` lines; keys are case-insensitive; values escape bytes as
`|XX` (hex). Devices follow libvirt's VMX reading: a controller (`scsi0`, `sata0`,
`nvme0`) must be present for its units; client devices (the remote console's drive) are
not part of the VM; disks come per controller and unit (SCSI, IDE, SATA, NVMe, floppy),
which is also VMware's BIOS boot order.
"""

from __future__ import annotations

import re

from conversions.v2v.proposal import ImportRefused, Proposal, ProposedDisk, ProposedNic

MAX_VMX_BYTES = 1024 * 1024
LINE = re.compile(r'^\s*([A-Za-z0-9_.:\-]+)\s*=\s*"?(.*?)"?\s*$')
ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")

DISK_TYPES = {"scsi-harddisk": ("disk", False), "disk": ("disk", False),
              "ata-harddisk": ("disk", False), "nvme-harddisk": ("disk", False),
              "cdrom-image": ("cdrom", False), "atapi-cdrom": ("cdrom", True),
              "cdrom-raw": ("cdrom", True), "scsi-passthru": ("lun", True),
              "rawdisk": ("disk", True)}
WINDOWS = ("win", "longhorn")
LINUX = ("linux", "rhel", "centos", "debian", "ubuntu", "sles", "suse", "fedora", "oracle",
         "mandrake", "mandriva", "redhat", "turbolinux", "asianux", "coreos", "photon",
         "amazonlinux", "almalinux", "rocky", "vmware-photon")
NIC_MODELS = {"vlance", "vmxnet", "vmxnet2", "vmxnet3", "e1000", "e1000e"}


def unescape(value: str) -> str:
    return ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def read_vmx(text: str) -> dict[str, str]:
    """The key/value pairs, keys lower-cased; the last of duplicate keys wins."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match:
            values[match.group(1).lower()] = unescape(match.group(2))
    return values


def _true(values: dict[str, str], key: str, default: bool = False) -> bool:
    value = values.get(key)
    if value is None:
        return default
    return value.strip().lower() in ("true", "yes", "1")


def _int(values: dict[str, str], key: str, default: int) -> int:
    value = values.get(key, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImportRefused(f"The VMX value {key} = \"{value}\" is not a number.") from exc


def os_family(guest_os: str) -> str:
    name = guest_os.lower()
    if name.startswith(WINDOWS):
        return "windows"
    if any(word in name for word in LINUX):
        return "linux"
    if "freebsd" in name or "solaris" in name or "netware" in name or "darwin" in name:
        return "other"
    return "other" if name else ""


def _letters(index: int) -> str:
    """0 → a, 25 → z, 26 → aa (libvirt's disk naming)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def _target(bus: str, controller: int, unit: int) -> str:
    if bus == "scsi":  # unit 7 is the controller itself
        return "sd" + _letters(controller * 15 + (unit if unit < 7 else unit - 1))
    if bus == "ide":
        return "hd" + _letters(controller * 2 + unit)
    if bus == "sata":
        return "sd" + _letters(controller * 30 + unit)
    if bus == "nvme":
        return f"nvme{controller}n{unit + 1}"
    return "fd" + _letters(unit)


def _disk(values: dict[str, str], prefix: str, bus: str, controller: int,
          unit: int) -> ProposedDisk | None:
    if not _true(values, f"{prefix}.present"):
        return None
    if _true(values, f"{prefix}.clientdevice"):
        return None  # the drive of whoever had the console open: not the VM's
    kind = values.get(f"{prefix}.devicetype", "").lower()
    source = values.get(f"{prefix}.filename", "")
    if not kind:
        kind = "cdrom-image" if source.lower().endswith(".iso") else "disk"
    if kind not in DISK_TYPES:
        return None
    device, block = DISK_TYPES[kind]
    if kind == "cdrom-raw" and bus == "scsi":
        device = "lun"  # a host CD drive passed through as a SCSI LUN (as libvirt reads it)
    if _true(values, f"{prefix}.autodetect") or source.lower() == "auto detect":
        source = ""  # whichever host drive VMware finds: nothing to import
    mode = values.get(f"{prefix}.mode", "").lower()
    return ProposedDisk(device=device, bus=bus, controller=controller, unit=unit,
                        target=_target(bus, controller, unit), source=source, block=block,
                        transient=mode == "independent-nonpersistent",
                        format="vmdk" if device == "disk" and not block else "raw")


def _disks(values: dict[str, str]) -> list[ProposedDisk]:
    disks: list[ProposedDisk] = []
    layouts = (("scsi", 4, 16), ("ide", 2, 2), ("sata", 4, 30), ("nvme", 4, 15))
    for bus, controllers, units in layouts:
        for controller in range(controllers):
            if bus != "ide" and not _true(values, f"{bus}{controller}.present"):
                continue
            for unit in range(units):
                if bus == "scsi" and unit == 7:
                    continue
                disk = _disk(values, f"{bus}{controller}:{unit}", bus, controller, unit)
                if disk is not None:
                    disks.append(disk)
    for unit in range(2):
        prefix = f"floppy{unit}"
        if not _true(values, f"{prefix}.present") or _true(values, f"{prefix}.clientdevice"):
            continue
        file_type = values.get(f"{prefix}.filetype", "").lower()
        source = values.get(f"{prefix}.filename", "")
        if file_type not in ("file", "device") or not source:
            continue
        disks.append(ProposedDisk(device="floppy", bus="fdc", unit=unit, target=_target(
            "fdc", 0, unit), source=source, block=file_type == "device", format="raw"))
    return disks


def _nics(values: dict[str, str]) -> list[ProposedNic]:
    nics: list[ProposedNic] = []
    for index in range(10):
        prefix = f"ethernet{index}"
        if not _true(values, f"{prefix}.present"):
            continue
        address_type = values.get(f"{prefix}.addresstype", "generated").lower()
        if address_type == "static":
            mac, mac_type = values.get(f"{prefix}.address", ""), "static"
        elif address_type in ("generated", "vpx"):
            mac, mac_type = values.get(f"{prefix}.generatedaddress", ""), "generated"
        else:
            raise ImportRefused(f"{prefix}.addressType \"{address_type}\" is unknown.")
        mac = mac.strip().lower()
        if mac and not MAC.match(mac):
            raise ImportRefused(f"{prefix} has the invalid MAC address \"{mac}\".")
        model = values.get(f"{prefix}.virtualdev", "").lower()
        if model == "vmxnet" and values.get(f"{prefix}.features") == "15":
            model = "vmxnet2"
        if model and model not in NIC_MODELS:
            raise ImportRefused(f"{prefix}.virtualDev \"{model}\" is unknown.")
        nics.append(ProposedNic(
            mac=mac, mac_type=mac_type, model=model,
            network=values.get(f"{prefix}.networkname", ""),
            connection=values.get(f"{prefix}.connectiontype", "bridged").lower(),
            check_mac=_true(values, f"{prefix}.checkmacaddress", True)))
    return nics


def _uuid(raw: str) -> str:
    digits = re.sub(r"[^0-9a-fA-F]", "", raw).lower()
    if len(digits) != 32:
        return ""
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def parse_vmx(text: str, *, source: str = "") -> Proposal:
    """The proposed guest a `.vmx` describes (disk paths as written; not yet resolved)."""
    if len(text) > MAX_VMX_BYTES:
        raise ImportRefused("The .vmx file is larger than 1 MiB: not a VMware configuration.")
    values = read_vmx(text)
    if not values:
        raise ImportRefused("The file holds no VMX settings (key = \"value\" lines).")
    memory = _int(values, "memsize", 32)
    vcpus = _int(values, "numvcpus", 1)
    cores = _int(values, "cpuid.corespersocket", 1)
    guest_os = values.get("guestos", "")
    proposal = Proposal(
        source=source, kind="vmx", name=values.get("displayname", ""),
        description=values.get("annotation", ""), guest_os=guest_os,
        os_family=os_family(guest_os),
        firmware="efi" if values.get("firmware", "").lower() == "efi" else "bios",
        secure_boot=_true(values, "uefi.secureboot.enabled"),
        vcpus=vcpus, cores_per_socket=cores if cores > 0 else 1, memory_mib=memory,
        uuid=_uuid(values.get("uuid.bios", "")),
        disks=_disks(values), nics=_nics(values),
    )
    if "sched.mem.max" in values:
        proposal.current_memory_mib = min(memory, _int(values, "sched.mem.max", memory))
    if vcpus > 0 and proposal.cores_per_socket and vcpus % proposal.cores_per_socket:
        proposal.cores_per_socket = 1
    proposal.check_limits()
    proposal.type = "hvm"
    _warn(proposal, values)
    return proposal


def _warn(proposal: Proposal, values: dict[str, str]) -> None:
    if "tools.syncTime".lower() in values or proposal.os_family:
        proposal.warnings.append(
            "The guest has VMware Tools and no Xen PV drivers: boot it as HVM with emulated "
            "disks first, install the Xen PV drivers, then switch disks to PV.")
    if proposal.firmware == "efi":
        proposal.warnings.append("The guest boots with UEFI: it is defined with UEFI "
                                 "firmware, which the host provides as OVMF (package ovmf).")
    for disk in proposal.disks:
        if disk.block:
            proposal.warnings.append(
                f"{disk.target} uses the host device {disk.source}: it is left out.")
        elif disk.device in ("cdrom", "floppy"):
            proposal.warnings.append(
                f"The {disk.device} {disk.target} ({disk.source}) is not imported: attach an "
                "ISO from an ISO library after the import.")
        elif disk.transient:
            proposal.warnings.append(
                f"{disk.target} is independent-nonpersistent in VMware; it is imported as an "
                "ordinary disk.")
    for nic in proposal.nics:
        if not nic.mac:
            proposal.warnings.append("A NIC has no MAC address yet: a new one is generated.")
