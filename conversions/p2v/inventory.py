"""What the source has (read-only, standard tools only) and the guest proposed for it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from conversions.p2v import ssh
from conversions.p2v.ssh import P2VError, Source

# One constant script for the source's sh: each section starts with a '##name' line.
# It reads only; a tool that is missing just leaves its section empty.
SCRIPT = r"""
export LC_ALL=C PATH="$PATH:/sbin:/usr/sbin"
echo '##hostname'; hostname 2>/dev/null || cat /proc/sys/kernel/hostname
echo '##os-release'; cat /etc/os-release 2>/dev/null
echo '##cpuinfo'; cat /proc/cpuinfo
echo '##meminfo'; cat /proc/meminfo
echo '##firmware'; if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi
echo '##lsblk'; lsblk -J -b -O 2>/dev/null
echo '##blkid'; blkid -o export 2>/dev/null
echo '##partx'
for dev in $(lsblk -dnpo NAME 2>/dev/null); do
  partx -gbo NR,START,SECTORS "$dev" 2>/dev/null | while read -r nr start sectors; do
    fs=$(blkid -p -O $((start * 512)) -o value -s TYPE "$dev" 2>/dev/null)
    echo "$dev $nr $start $sectors $fs"
  done
done
echo '##iplink'; ip -j link 2>/dev/null
echo '##tools'
for tool in python3 zstd lz4 gzip; do command -v "$tool" >/dev/null 2>&1 && echo "$tool"; done
echo '##uid'; id -u
"""

GIB = 1024**3
SIZE_MAX = 2**60  # bytes: 1 EiB, far above any disk, far below what arithmetic minds
MEMORY_MAX = 2**46  # bytes: 64 TiB
CPUS_MAX = 16384
ENTRIES_MAX = 4096  # block devices, partitions of one disk, network links
TEXT_MAX = 1024  # characters of one field
DIGITS_MAX = 20
_MAC_DIGITS = set("0123456789abcdef")
TOOLS = ("python3", "zstd", "lz4", "gzip")


@dataclass
class Cpu:
    count: int
    model: str
    vendor: str
    lm: bool  # 64-bit
    pae: bool
    vmx: bool
    svm: bool


@dataclass
class Partition:
    path: str
    size: int
    fstype: str
    label: str
    mountpoints: list[str]


@dataclass
class Disk:
    path: str
    name: str
    type: str  # disk, loop…
    size: int
    model: str
    serial: str
    pttype: str
    fstype: str  # a filesystem on the whole disk
    removable: bool
    readonly: bool
    mountpoints: list[str]
    partitions: list[Partition] = field(default_factory=list)

    @property
    def in_use(self) -> bool:
        return bool(self.mountpoints) or any(part.mountpoints for part in self.partitions)


@dataclass
class Nic:
    name: str
    mac: str
    state: str  # UP, DOWN, UNKNOWN
    mtu: int


@dataclass
class Inventory:
    hostname: str
    os_name: str
    os_id: str
    cpu: Cpu
    memory_bytes: int
    firmware: str  # bios or uefi
    disks: list[Disk]
    nics: list[Nic]
    tools: list[str]
    root: bool

    def disk(self, path: str) -> Disk | None:
        return next((disk for disk in self.disks if disk.path == path), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InventoryError(P2VError):
    """The source's answer does not have the inventory's shape; the message says where."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"The source's inventory cannot be read ({where}): {what}.")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InventoryError(where, f"expected an object, got {_shown(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InventoryError(where, f"expected a list, got {_shown(value)}")
    if len(value) > ENTRIES_MAX:
        raise InventoryError(where, f"more than {ENTRIES_MAX} entries")
    return value


def _text(node: dict[str, Any], key: str, where: str, default: str = "") -> str:
    value = node.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise InventoryError(where, f"'{key}' is not text: {_shown(value)}")
    if len(value) > TEXT_MAX:
        raise InventoryError(where, f"'{key}' is longer than {TEXT_MAX} characters")
    return value


def _whole(text: str, where: str, what: str, maximum: int) -> int:
    """A decimal number from the source's text (ASCII digits only), 0..maximum."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > DIGITS_MAX:
        raise InventoryError(where, f"{what} is not a whole number: {_shown(text)}")
    number = int(text)
    if number > maximum:
        raise InventoryError(where, f"{what} {number} is larger than {maximum}")
    return number


def _number(node: dict[str, Any], key: str, where: str, maximum: int) -> int:
    """A JSON number or a decimal string (older lsblk writes every value as a string)."""
    value = node.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InventoryError(where, f"'{key}' is not a whole number: {_shown(value)}")
    if isinstance(value, int):
        if not 0 <= value <= maximum:
            raise InventoryError(where, f"'{key}' {value} is not between 0 and {maximum}")
        return value
    return _whole(value, where, f"'{key}'", maximum)


def _flag(node: dict[str, Any], key: str, where: str) -> bool:
    value = node.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1"):
        return value in (1, "1")
    raise InventoryError(where, f"'{key}' is not true or false: {_shown(value)}")


def _mountpoints(node: dict[str, Any], where: str) -> list[str]:
    if "mountpoints" in node:
        points = _list(node["mountpoints"], f"{where}, mountpoints")
    else:
        points = [node.get("mountpoint")]
    found = []
    for point in points:
        if point is None or point == "":
            continue
        if not isinstance(point, str) or len(point) > TEXT_MAX:
            raise InventoryError(where, f"a mount point is not a path: {_shown(point)}")
        found.append(point)
    return found


def _device_path(node: dict[str, Any], where: str) -> str:
    path = _text(node, "path", where)
    if not path:
        name = _text(node, "name", where)
        if not name:
            raise InventoryError(where, "a block device has neither 'path' nor 'name'")
        path = f"/dev/{name}"
    if not path.startswith("/dev/") or ".." in path.split("/") or any(
            char.isspace() or not char.isprintable() for char in path):
        raise InventoryError(where, f"not a device path: {_shown(path)}")
    return path


def sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("##") and line[2:].strip() and " " not in line.strip():
            current = line[2:].strip()
            found[current] = []
        elif current is not None:
            found[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def _key_values(text: str, sep: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            pairs.append((key.strip(), value.strip()))
    return pairs


def parse_cpu(text: str) -> Cpu:
    count, model, vendor, flags = 0, "", "", set()
    for key, value in _key_values(text, ":"):
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value[:TEXT_MAX]
        elif key == "vendor_id" and not vendor:
            vendor = value[:TEXT_MAX]
        elif key == "flags" and not flags:
            flags = set(value.split())
    if count > CPUS_MAX:
        raise InventoryError("cpuinfo", f"more than {CPUS_MAX} processors")
    return Cpu(count=max(count, 1), model=model, vendor=vendor, lm="lm" in flags,
               pae="pae" in flags, vmx="vmx" in flags, svm="svm" in flags)


def parse_memory(text: str) -> int:
    for key, value in _key_values(text, ":"):
        if key == "MemTotal":
            number, _, unit = value.partition(" ")
            if unit.strip() not in ("kB", ""):
                raise InventoryError("meminfo", f"MemTotal is not in kB: {_shown(value)}")
            return _whole(number, "meminfo", "MemTotal", MEMORY_MAX // 1024) * 1024
    return 0


def parse_os(text: str) -> tuple[str, str]:
    values = {key: value.strip('"')[:TEXT_MAX] for key, value in _key_values(text, "=")}
    return values.get("PRETTY_NAME", values.get("NAME", "unknown")), values.get("ID", "")


def _blkid(text: str) -> dict[str, dict[str, str]]:
    devices: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        values = {key: value[:TEXT_MAX] for key, value in _key_values(block, "=")}
        if "DEVNAME" in values:
            devices[values["DEVNAME"]] = values
    return devices


def _partx(text: str) -> dict[str, list[Partition]]:
    """Partitions read from the table itself (where the kernel did not register them)."""
    found: dict[str, list[Partition]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not all(value.isascii() and value.isdigit()
                                      for value in fields[1:4]):
            continue
        device, number = fields[0], fields[1]
        sectors = _whole(fields[3], "partx", "a partition's sector count", SIZE_MAX // 512)
        if not device.startswith("/dev/") or len(device) > TEXT_MAX or \
                len(number) > DIGITS_MAX:
            raise InventoryError("partx", f"not a device path: {_shown(device)}")
        if len(found.setdefault(device, [])) >= ENTRIES_MAX:
            raise InventoryError("partx", f"more than {ENTRIES_MAX} partitions on {device}")
        suffix = f"p{number}" if device[-1].isdigit() else number
        found[device].append(Partition(
            path=f"{device}{suffix}", size=sectors * 512,
            fstype=fields[4][:TEXT_MAX] if len(fields) > 4 else "", label="",
            mountpoints=[]))
    return found


def _load_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InventoryError(where, "the JSON is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and numbers with too many digits
        raise InventoryError(where, f"not valid JSON: {exc}") from None


def _partition(child: Any, where: str, probed: dict[str, dict[str, str]]) -> Partition:
    node = _object(child, where)
    path = _device_path(node, where)
    extra = probed.get(path, {})
    return Partition(path=path, size=_number(node, "size", where, SIZE_MAX),
                     fstype=_text(node, "fstype", where) or extra.get("TYPE", ""),
                     label=_text(node, "label", where) or extra.get("LABEL", ""),
                     mountpoints=_mountpoints(node, where))


def parse_disks(lsblk: str, blkid: str, partx: str = "") -> list[Disk]:
    if not lsblk:
        return []
    top = _object(_load_json(lsblk, "lsblk"), "lsblk")
    if "blockdevices" not in top:
        raise InventoryError("lsblk", "no 'blockdevices' list")
    nodes = _list(top["blockdevices"], "lsblk, blockdevices")
    probed = _blkid(blkid)
    tables = _partx(partx)
    disks = []
    for index, value in enumerate(nodes):
        where = f"lsblk, block device {index + 1}"
        node = _object(value, where)
        kind = _text(node, "type", where)
        size = _number(node, "size", where, SIZE_MAX)
        if kind not in ("disk", "loop") or not size:
            continue
        path = _device_path(node, where)
        parts = [_partition(child, f"{where}, partition {number + 1}", probed)
                 for number, child in enumerate(_list(node.get("children"),
                                                      f"{where}, children"))]
        parts = parts or tables.get(path, [])
        extra = probed.get(path, {})
        disks.append(Disk(
            path=path, name=_text(node, "name", where) or path.rsplit("/", 1)[-1], type=kind,
            size=size, model=_text(node, "model", where).strip(),
            serial=_text(node, "serial", where).strip(),
            pttype=_text(node, "pttype", where) or extra.get("PTTYPE", ""),
            fstype=_text(node, "fstype", where) or ("" if parts else extra.get("TYPE", "")),
            removable=_flag(node, "rm", where), readonly=_flag(node, "ro", where),
            mountpoints=_mountpoints(node, where), partitions=parts,
        ))
    paths = [disk.path for disk in disks]
    if len(set(paths)) != len(paths):
        raise InventoryError("lsblk", "a device path is listed twice")
    return disks


def _mac(value: str, where: str) -> str:
    mac = value.lower()
    octets = mac.split(":")
    if len(octets) != 6 or any(len(octet) != 2 or not set(octet) <= _MAC_DIGITS
                               for octet in octets):
        raise InventoryError(where, f"not a MAC address: {_shown(value)}")
    return mac


def parse_nics(text: str) -> list[Nic]:
    if not text:
        return []
    links = _list(_load_json(text, "ip link"), "ip link")
    nics = []
    for index, value in enumerate(links):
        where = f"ip link, link {index + 1}"
        link = _object(value, where)
        address = _text(link, "address", where)
        if _text(link, "link_type", where) != "ether" or not address:
            continue
        nics.append(Nic(name=_text(link, "ifname", where), mac=_mac(address, where),
                        state=_text(link, "operstate", where, "UNKNOWN"),
                        mtu=_number(link, "mtu", where, 1 << 20)))
    return nics


def parse_firmware(text: str) -> str:
    firmware = text.strip() or "bios"
    if firmware not in ("bios", "uefi"):
        raise InventoryError("firmware", f"neither bios nor uefi: {_shown(firmware)}")
    return firmware


def parse_hostname(text: str) -> str:
    hostname = text.strip()
    if len(hostname) > 255 or any(not char.isprintable() for char in hostname):
        raise InventoryError("hostname", f"not a host name: {_shown(hostname)}")
    return hostname


def _parse(parts: dict[str, str]) -> Inventory:
    os_name, os_id = parse_os(parts.get("os-release", ""))
    return Inventory(
        hostname=parse_hostname(parts.get("hostname", "")), os_name=os_name, os_id=os_id,
        cpu=parse_cpu(parts.get("cpuinfo", "")),
        memory_bytes=parse_memory(parts.get("meminfo", "")),
        firmware=parse_firmware(parts.get("firmware", "")),
        disks=parse_disks(parts.get("lsblk", ""), parts.get("blkid", ""),
                          parts.get("partx", "")),
        nics=parse_nics(parts.get("iplink", "")),
        tools=[tool for tool in parts.get("tools", "").split() if tool in TOOLS],
        root=parts.get("uid", "").strip() == "0",
    )


def parse(text: str) -> Inventory:
    """The inventory in the script's output; ``InventoryError`` (a P2VError, so a 400 or
    a job error) names the section that does not have the expected shape."""
    parts = sections(text)
    if "uid" not in parts:
        raise InventoryError("output", "the script's answer is incomplete (no '##uid' "
                             "section): not a Linux shell's answer, or cut short")
    try:
        return _parse(parts)
    except P2VError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            RecursionError) as exc:  # a shape the checks above did not foresee
        raise InventoryError("output", f"unexpected content ({exc.__class__.__name__}: "
                             f"{_shown(str(exc))})") from None


def parse_output(raw: bytes) -> Inventory:
    """The inventory in the source's raw answer (bytes that are not UTF-8 are replaced,
    and the shape is then checked as for any other answer)."""
    return parse(raw.decode(errors="replace"))


def read_inventory(source: Source) -> Inventory:
    """Run the inventory script on the source (host key already confirmed)."""
    return parse_output(ssh.run(source, ["sh", "-s"], stdin=SCRIPT.encode(), timeout=60))


def warnings(inventory: Inventory) -> list[str]:
    notes = []
    if "python3" not in inventory.tools:
        notes.append("The source has no python3: its disks cannot be streamed (boot it from a "
                     "live medium that has python3, e.g. a Debian or Ubuntu live image).")
    if not inventory.root:
        notes.append("The SSH user is not root: the disks are probably not readable.")
    busy = [disk.path for disk in inventory.disks if disk.in_use]
    if busy:
        notes.append(f"{', '.join(busy)} {'is' if len(busy) == 1 else 'are'} mounted: a running "
                     "system changes while it is copied. Boot the source from a live medium, "
                     "or stop its services and remount read-only, for a consistent copy.")
    if not (inventory.cpu.lm or inventory.cpu.pae):
        notes.append("The source CPU has neither 64-bit (lm) nor PAE: a 32-bit non-PAE "
                     "kernel does not boot as a Xen guest.")
    return notes


def propose(inventory: Inventory) -> dict[str, Any]:
    """The guest the copy would become; the request may change any of it."""
    disks = [disk.path for disk in inventory.disks
             if disk.type == "disk" and not disk.removable]
    memory_mib = max(256, inventory.memory_bytes // (1024 * 1024))
    return {
        "name": (inventory.hostname.split(".")[0] or "p2v-guest")[:64],
        "type": "hvm",
        "firmware": inventory.firmware,
        "vcpus": min(inventory.cpu.count, 64),
        "memory_mib": memory_mib,
        "disks": disks,
        "format": "raw",
        "nics": [{"source": nic.name, "mac": nic.mac, "network": "default"}
                 for nic in inventory.nics],
        "keep_macs": True,
        "warnings": warnings(inventory),
        "checks": [
            "Disks appear on a new bus (IDE on Xen HVM, virtio on KVM): check that the "
            "initramfs has the drivers and that /etc/fstab uses UUIDs or labels.",
            "Network interfaces may get new names: check the network configuration.",
            "Retire or disconnect the physical server before starting the guest if the "
            "MAC addresses were kept.",
        ],
    }
