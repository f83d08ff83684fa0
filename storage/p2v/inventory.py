"""What the source has (read-only, standard tools only) and the guest proposed for it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.p2v import ssh
from storage.p2v.ssh import P2VError, Source

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
            model = value
        elif key == "vendor_id" and not vendor:
            vendor = value
        elif key == "flags" and not flags:
            flags = set(value.split())
    return Cpu(count=max(count, 1), model=model, vendor=vendor, lm="lm" in flags,
               pae="pae" in flags, vmx="vmx" in flags, svm="svm" in flags)


def parse_memory(text: str) -> int:
    for key, value in _key_values(text, ":"):
        if key == "MemTotal":
            return int(value.split()[0]) * 1024
    return 0


def parse_os(text: str) -> tuple[str, str]:
    values = {key: value.strip('"') for key, value in _key_values(text, "=")}
    return values.get("PRETTY_NAME", values.get("NAME", "unknown")), values.get("ID", "")


def _blkid(text: str) -> dict[str, dict[str, str]]:
    devices: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        values = dict(_key_values(block, "="))
        if "DEVNAME" in values:
            devices[values["DEVNAME"]] = values
    return devices


def _mountpoints(node: dict[str, Any]) -> list[str]:
    points = node.get("mountpoints") or ([node["mountpoint"]] if node.get("mountpoint") else [])
    return [point for point in points if point]


def _partx(text: str) -> dict[str, list[Partition]]:
    """Partitions read from the table itself (where the kernel did not register them)."""
    found: dict[str, list[Partition]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not all(value.isdigit() for value in fields[1:4]):
            continue
        device, number, _start, sectors = fields[0], fields[1], fields[2], int(fields[3])
        suffix = f"p{number}" if device[-1].isdigit() else number
        found.setdefault(device, []).append(Partition(
            path=f"{device}{suffix}", size=sectors * 512,
            fstype=fields[4] if len(fields) > 4 else "", label="", mountpoints=[]))
    return found


def parse_disks(lsblk: str, blkid: str, partx: str = "") -> list[Disk]:
    try:
        nodes = json.loads(lsblk)["blockdevices"] if lsblk else []
    except (ValueError, KeyError, TypeError) as exc:
        raise P2VError(f"lsblk on the source gave output that cannot be read: {exc}") from exc
    probed = _blkid(blkid)
    tables = _partx(partx)
    disks = []
    for node in nodes:
        if node.get("type") not in ("disk", "loop") or not int(node.get("size") or 0):
            continue
        path = node.get("path") or f"/dev/{node['name']}"
        parts = []
        for child in node.get("children") or []:
            child_path = child.get("path") or f"/dev/{child['name']}"
            extra = probed.get(child_path, {})
            parts.append(Partition(path=child_path, size=int(child.get("size") or 0),
                                   fstype=child.get("fstype") or extra.get("TYPE", ""),
                                   label=child.get("label") or extra.get("LABEL", ""),
                                   mountpoints=_mountpoints(child)))
        parts = parts or tables.get(path, [])
        extra = probed.get(path, {})
        disks.append(Disk(
            path=path, name=node["name"], type=node["type"], size=int(node["size"]),
            model=(node.get("model") or "").strip(), serial=(node.get("serial") or "").strip(),
            pttype=node.get("pttype") or extra.get("PTTYPE", ""),
            fstype=node.get("fstype") or ("" if parts else extra.get("TYPE", "")),
            removable=bool(node.get("rm")), readonly=bool(node.get("ro")),
            mountpoints=_mountpoints(node), partitions=parts,
        ))
    return disks


def parse_nics(text: str) -> list[Nic]:
    try:
        links = json.loads(text) if text else []
    except ValueError as exc:
        raise P2VError(f"'ip -j link' on the source gave output that cannot be read: {exc}") \
            from exc
    return [Nic(name=link.get("ifname", ""), mac=(link.get("address") or "").lower(),
                state=link.get("operstate", "UNKNOWN"), mtu=int(link.get("mtu") or 0))
            for link in links if link.get("link_type") == "ether" and link.get("address")]


def parse(text: str) -> Inventory:
    parts = sections(text)
    os_name, os_id = parse_os(parts.get("os-release", ""))
    return Inventory(
        hostname=parts.get("hostname", "").strip(), os_name=os_name, os_id=os_id,
        cpu=parse_cpu(parts.get("cpuinfo", "")), memory_bytes=parse_memory(
            parts.get("meminfo", "")),
        firmware=parts.get("firmware", "bios").strip() or "bios",
        disks=parse_disks(parts.get("lsblk", ""), parts.get("blkid", ""),
                          parts.get("partx", "")),
        nics=parse_nics(parts.get("iplink", "")), tools=parts.get("tools", "").split(),
        root=parts.get("uid", "").strip() == "0",
    )


def read_inventory(source: Source) -> Inventory:
    """Run the inventory script on the source (host key already confirmed)."""
    output = ssh.run(source, ["sh", "-s"], stdin=SCRIPT.encode(), timeout=60)
    return parse(output.decode(errors="replace"))


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
