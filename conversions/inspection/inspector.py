"""Inspect a disk image before a V2V/P2V import: the guest's OS, firmware, boot loader,
root device, kernel (Xen PV support, read from the image) and initramfs drivers.

Nothing is mounted: the partition table is parsed here, file systems are read by bounded
user-space readers (filesystems.py) and only a few named files are read.
"""

from __future__ import annotations

import os
import posixpath
import re
import struct
from dataclasses import dataclass

from conversions.inspection import configs
from conversions.inspection.bootcode import mbr_boot_code
from conversions.inspection.configs import BootEntry
from conversions.inspection.disk import Disk
from conversions.inspection.drivers import Drivers, drivers, parse_config
from conversions.inspection.errors import DamagedImage, InspectionError, UnreadableFile
from conversions.inspection.filesystems import PROBE_BYTES, Entry, FileSystem, open_fs, probe
from conversions.inspection.initramfs import MAX_INITRAMFS, read_initramfs
from conversions.inspection.kernel import MACHINES, MAX_KERNEL_IMAGE, inspect_kernel
from conversions.inspection.partitions import (
    BIOS_BOOT,
    ESP,
    EXTENDED_TYPES,
    Partition,
    read_table,
)
from conversions.inspection.result import (
    BootLoader,
    Inspection,
    KernelInfo,
    PartitionInfo,
    RootInfo,
)

MAX_TEXT = 1024**2
MAX_KERNEL_CONFIG = 4 * 1024**2
MAX_BLS_ENTRIES = 64
CONFIGS = (  # (path under a prefix, kind)
    ("grub/grub.cfg", "grub2"), ("grub2/grub.cfg", "grub2"), ("grub/menu.lst", "grub-legacy"),
    ("grub/grub.conf", "grub-legacy"), ("extlinux/extlinux.conf", "extlinux"),
    ("extlinux.conf", "extlinux"), ("syslinux/syslinux.cfg", "syslinux"),
    ("syslinux.cfg", "syslinux"),
)
SHELLS = ("/bin/sh", "/usr/bin/sh", "/bin/busybox", "/bin/bash", "/usr/bin/bash")


def inspect_image(path: str | os.PathLike[str], fmt: str = "raw") -> Inspection:
    """Inspect the disk image at `path` (of qemu-img format `fmt`); InspectionError says
    why when the image cannot be inspected."""
    with Disk(path, fmt) as disk:
        return _Inspector(disk).run()


@dataclass(frozen=True)
class _Found:
    number: int
    path: str


class _Inspector:
    def __init__(self, disk: Disk) -> None:
        self.disk = disk
        self.warnings: list[str] = []
        self.fs: dict[int, FileSystem] = {}
        self.kinds: dict[int, str] = {}
        self._dirs: dict[tuple[int, str], list[Entry] | None] = {}

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def run(self) -> Inspection:
        table = read_table(self.disk.read, self.disk.size)
        parts = list(table.partitions)
        mbr_code = mbr_boot_code(self.disk.read(0, 512)) if table.scheme != "none" else ""
        if table.scheme == "none":
            parts = [Partition(0, 0, self.disk.size, "", "whole disk")]
        elif not parts:
            raise InspectionError("The partition table holds no partition.")
        infos = tuple(self._probe(part) for part in parts)
        if table.scheme == "none" and not infos[0].filesystem:
            raise InspectionError("The disk has neither a partition table nor a file system "
                                  "inspection recognises.")
        root = self._find_root()
        if root is None:
            why = "; ".join(self.warnings) or "no partition holds a readable file system"
            raise InspectionError(f"No Linux root file system was found ({why}).")
        fstab = self._fstab(root)
        root_entry = next((e for e in fstab if e.mountpoint == "/"), None)
        boot_entry = next((e for e in fstab if e.mountpoint == "/boot"), None)
        boot_part = self._match(boot_entry.spec, infos, table.mbr_id) if boot_entry else None
        if boot_entry and boot_part is None:
            self.warn(f"fstab mounts /boot from {boot_entry.spec}, which matches no file "
                      "system on this disk.")
        if root_entry:
            self._check_root_spec(root_entry.spec, root, infos, table.mbr_id)
        else:
            self.warn("fstab has no entry for the root file system.")
        loader, entries = self._boot_config(root, boot_part)
        entry = entries[0] if entries else None
        kernel, drivers_found, kernel_arch = self._kernel(root, boot_part, loader, entry)
        os_info = self._os_release(root)
        arch, arch_evidence = kernel_arch or self._shell_arch(root)
        firmware = self._firmware(table.scheme, parts, mbr_code)
        cmdline_root = entry.root if entry else ""
        return Inspection(
            os_family="linux", distribution=os_info.get("ID", ""),
            version=os_info.get("VERSION_ID", ""), pretty_name=os_info.get("PRETTY_NAME", ""),
            arch=arch, arch_evidence=arch_evidence, hostname=self._hostname(root),
            firmware=firmware, partition_table=table.scheme, partitions=infos,
            boot_loader=BootLoader(self._loader_name(loader),
                                   self._where(loader) if loader else "", mbr_code,
                                   loader.number if loader else None,
                                   loader.path if loader else ""),
            root=RootInfo(root, self.kinds[root], root_entry.spec if root_entry else "",
                          configs.naming(root_entry.spec) if root_entry else "",
                          cmdline_root, configs.naming(cmdline_root) if cmdline_root else "",
                          boot_part if boot_part != root else None),
            kernel=kernel, drivers=drivers_found, warnings=tuple(self.warnings))

    # partitions and file systems

    def _label(self, number: int) -> str:
        return f"partition {number}" if number else "the disk's file system"

    def _probe(self, part: Partition) -> PartitionInfo:
        label = self._label(part.number)
        if part.type in {f"0x{t:02x}" for t in EXTENDED_TYPES}:
            return PartitionInfo(part.number, part.start, part.size, part.type, part.type_name,
                                 part.bootable, "", "", "", False, part.guid)
        found = probe(self.disk.read(part.start, min(PROBE_BYTES, part.size)))
        if found.size > part.size:  # Linux refuses to mount it too
            where = "its partition" if part.number else "the disk"
            raise DamagedImage(f"{label}: the {found.kind} file system spans {found.size} "
                               f"bytes but {where} holds {part.size}: the image is truncated "
                               "or the partition table is damaged.")
        if found.readable:
            self.fs[part.number] = open_fs(self.disk, part.start, part.size, found, label)
            self.kinds[part.number] = found.kind
        elif found.kind and found.kind != "swap":
            self.warn(f"{label}: file system {found.kind} is not readable here.")
        return PartitionInfo(part.number, part.start, part.size, part.type, part.type_name,
                             part.bootable, found.kind, found.uuid, found.label, found.readable,
                             part.guid)

    def _list(self, number: int, directory: str) -> list[Entry] | None:
        key = (number, directory)
        if key not in self._dirs:
            self._dirs[key] = self.fs[number].listdir(directory)
        return self._dirs[key]

    def _has(self, number: int, path: str) -> str | None:
        """`path` as the file system spells it, when it exists (FAT ignores case)."""
        directory, name = posixpath.split(path)
        entries = self._list(number, directory or "/")
        if entries is None:
            return None
        fold = self.kinds[number] == "vfat"
        for entry in entries:
            if entry.name == name or (fold and entry.name.lower() == name.lower()):
                return posixpath.join(directory, entry.name)
        return None

    def _read(self, number: int, path: str, cap: int = MAX_TEXT) -> bytes | None:
        real = self._has(number, path)
        return None if real is None else self.fs[number].read(real, cap)

    def _text(self, number: int, path: str) -> str | None:
        try:
            data = self._read(number, path)
        except UnreadableFile as exc:
            self.warn(f"{exc}")
            return None
        return None if data is None else data.decode("utf-8", "replace")

    def _where(self, found: _Found) -> str:
        return f"{self._label(found.number)}:{found.path}"

    def _find_root(self) -> int | None:
        for number in sorted(self.fs, key=lambda n: self.kinds[n] == "vfat"):
            if self._has(number, "/etc/fstab") or self._has(number, "/etc/os-release"):
                return number
        return None

    # configuration files

    def _fstab(self, root: int) -> list[configs.FstabEntry]:
        text = self._text(root, "/etc/fstab")
        if text is None:
            self.warn("The root file system has no /etc/fstab.")
            return []
        return configs.parse_fstab(text)

    def _os_release(self, root: int) -> dict[str, str]:
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            text = self._text(root, path)
            if text is not None:
                return configs.parse_os_release(text)
        debian = self._text(root, "/etc/debian_version")
        if debian is not None:
            version = debian.strip().splitlines()[0] if debian.strip() else ""
            return {"ID": "debian", "VERSION_ID": version, "PRETTY_NAME": f"Debian {version}"}
        for path, distro in (("/etc/redhat-release", "rhel"), ("/etc/SuSE-release", "sles")):
            text = self._text(root, path)
            if text is not None:
                first = text.strip().splitlines()[0] if text.strip() else ""
                version = re.search(r"release\s+([\d.]+)", first) or \
                    re.search(r"([\d.]+)", first)
                name = first.split()[0].lower() if first else distro
                return {"ID": name if name in ("centos", "fedora") else distro,
                        "VERSION_ID": version.group(1) if version else "",
                        "PRETTY_NAME": first}
        self.warn("No /etc/os-release or release file says which distribution this is.")
        return {}

    def _hostname(self, root: int) -> str:
        text = self._text(root, "/etc/hostname")
        if text and text.strip():
            return text.strip().splitlines()[0].strip()
        network = self._text(root, "/etc/sysconfig/network") or ""
        return configs.cmdline_value(network.replace("\n", " ").replace('"', ""), "HOSTNAME")

    def _match(self, spec: str, infos: tuple[PartitionInfo, ...], mbr_id: str) -> int | None:
        kind, value = configs.naming(spec), configs.spec_value(spec)
        for info in infos:
            if kind == "uuid" and info.uuid and info.uuid.lower() == value.lower():
                return info.number
            if kind == "label" and info.label and info.label == value:
                return info.number
            if kind == "partuuid" and value.lower() in (info.guid.lower(),
                                                        f"{mbr_id}-{info.number:02x}"):
                return info.number
        if kind == "device":
            number = re.search(r"(?:[a-z]|p)(\d+)$", spec)
            if number and any(i.number == int(number.group(1)) for i in infos):
                return int(number.group(1))
        return None

    def _check_root_spec(self, spec: str, root: int, infos: tuple[PartitionInfo, ...],
                         mbr_id: str) -> None:
        kind = configs.naming(spec)
        if kind == "device" and not spec.startswith("/dev/xvd"):
            self.warn(f"fstab names the root file system by device ({spec}): under Xen the "
                      "disk is named xvda; the conversion must rename it or use its UUID.")
        if kind == "device":
            return
        if kind in ("uuid", "label"):
            match = self._match(spec, infos, mbr_id)
            if match is None:
                self.warn(f"fstab's root {spec} matches no file system on this disk.")
            elif match != root:
                self.warn(f"fstab's root {spec} is {self._label(match)}, not "
                          f"{self._label(root)} where /etc/fstab was found.")

    # boot loader

    def _boot_config(self, root: int, boot: int | None) -> tuple[_Found | None,
                                                                 list[BootEntry]]:
        order = [n for n in (boot, root) if n is not None and n in self.fs]
        order += sorted(n for n in self.fs if n not in order)
        for number in order:
            prefixes = ["/boot"] if number == root and boot != root else ["", "/boot"]
            for prefix in prefixes:
                for relative, kind in CONFIGS:
                    path = f"{prefix}/{relative}"
                    real = self._has(number, path)
                    if real is None:
                        continue
                    text = self._text(number, real) or ""
                    entries = self._parse_config(kind, text, real)
                    if kind == "grub2" and not any(e.kernel for e in entries):
                        entries = self._bls(number, prefix) or entries
                    if not any(e.kernel for e in entries):
                        self.warn(f"{self._label(number)}:{real} names no kernel.")
                    return _Found(number, real), [e for e in entries if e.kernel]
        self.warn("No boot loader configuration was found (GRUB, SYSLINUX, EXTLINUX).")
        return None, []

    def _loader_name(self, found: _Found | None) -> str:
        if found is None:
            return ""
        name = posixpath.basename(found.path).lower()
        if name == "grub.cfg":
            return "grub2"
        if name in ("menu.lst", "grub.conf"):
            return "grub-legacy"
        return "extlinux" if name.startswith("extlinux") else "syslinux"

    def _parse_config(self, kind: str, text: str, path: str) -> list[BootEntry]:
        if kind == "grub2":
            return configs.parse_grub2(text)
        if kind == "grub-legacy":
            return configs.parse_menu_lst(text)
        return configs.parse_syslinux(text, posixpath.dirname(path))

    def _bls(self, number: int, prefix: str) -> list[BootEntry]:
        directory = f"{prefix}/loader/entries"
        entries = self._list(number, directory) or []
        names = sorted((e.name for e in entries if e.name.endswith(".conf")), reverse=True)
        found = []
        for name in names[:MAX_BLS_ENTRIES]:
            text = self._text(number, f"{directory}/{name}")
            if text:
                found.append(configs.parse_bls(text))
        return found

    # kernel and initramfs

    def _locate(self, path: str, near: list[int]) -> _Found | None:
        candidates = [path]
        if path.startswith("/boot/"):
            candidates.append(path.removeprefix("/boot"))
        else:
            candidates.append(f"/boot{path}")
        for number in near:
            for candidate in candidates:
                real = self._has(number, candidate)
                if real is not None:
                    return _Found(number, real)
        return None

    def _newest_kernel(self, near: list[int]) -> _Found | None:
        for number in near:
            for directory in ("/boot", "/"):
                entries = self._list(number, directory) or []
                names = [e.name for e in entries if re.match(r"(vmlinuz|bzImage)-", e.name)]
                if names:
                    names.sort(key=_version_key, reverse=True)
                    return _Found(number, posixpath.join(directory, names[0]))
        return None

    def _kernel(self, root: int, boot: int | None, loader: _Found | None,
                entry: BootEntry | None) -> tuple[KernelInfo | None, Drivers,
                                                  tuple[str, str] | None]:
        near = [n for n in (loader.number if loader else None, boot, root)
                if n is not None and n in self.fs]
        near = list(dict.fromkeys(near))
        found = self._locate(entry.kernel, near) if entry and entry.kernel else None
        if entry and entry.kernel and found is None:
            self.warn(f"The boot entry's kernel {entry.kernel} was not found.")
        if found is None:
            found = self._newest_kernel(near)
            if found is not None:
                self.warn(f"No boot entry names a kernel that exists: "
                          f"{self._where(found)} was read instead.")
        if found is None:
            self.warn("No kernel image was found.")
            return None, drivers(None, None), None
        evidence: list[str] = []
        try:
            data = self.fs[found.number].read(found.path, MAX_KERNEL_IMAGE) or b""
            facts = inspect_kernel(data)
        except DamagedImage:
            raise  # the file system refuses the image, not just this file
        except InspectionError as exc:
            self.warn(f"The kernel image could not be read: {exc}")
            facts = None
        basename = posixpath.basename(found.path)
        version = (facts.version if facts else "") or \
            (basename.split("-", 1)[1] if "-" in basename else "")
        pv = pvh = None
        if facts is not None:
            pv, pvh = facts.xen_pv, facts.xen_pvh
            evidence.append(facts.evidence)
        config = self._kernel_config(found, version)
        if config is not None:
            from_config = _pv_from_config(config)
            evidence.append(f"kernel config: {from_config[1]}")
            if pv is None:
                pv = from_config[0]
            if pvh is None and "CONFIG_PVH" in config:
                pvh = config.get("CONFIG_PVH") == "y"
        if pv is False:
            self.warn("The kernel cannot run as a Xen PV guest: boot it as HVM"
                      + (" or PVH." if pvh else "."))
        elif pv is None:
            self.warn("Whether the kernel can run as a Xen PV guest is unknown.")
        modules, initrd_where = self._initramfs(entry, near, found, version)
        found_drivers = drivers(modules, config)
        if not {"xen_blkfront"} & set(found_drivers.disk) and (modules or config):
            self.warn("xen-blkfront is neither in the initramfs nor built in: as a Xen PV "
                      "or PVH guest the kernel may not find its root disk.")
        arch = (facts.arch, "kernel image ELF header") if facts and facts.arch else None
        info = KernelInfo(self._where(found), initrd_where, version,
                          facts.arch if facts else "", facts.compression if facts else "",
                          pv, pvh, tuple(evidence), entry.cmdline if entry else "")
        return info, found_drivers, arch

    def _kernel_config(self, kernel: _Found, version: str) -> dict[str, str] | None:
        if not version:
            return None
        path = posixpath.join(posixpath.dirname(kernel.path), f"config-{version}")
        try:
            data = self._read(kernel.number, path, MAX_KERNEL_CONFIG)
        except DamagedImage:
            raise
        except InspectionError as exc:
            self.warn(f"The kernel configuration could not be read: {exc}")
            return None
        return None if data is None else parse_config(data.decode("utf-8", "replace"))

    def _initramfs(self, entry: BootEntry | None, near: list[int], kernel: _Found,
                   version: str) -> tuple[tuple[str, ...] | None, str]:
        found = self._locate(entry.initrd, near) if entry and entry.initrd else None
        if found is None and version:
            directory = posixpath.dirname(kernel.path)
            for name in (f"initrd.img-{version}", f"initramfs-{version}.img",
                         f"initrd-{version}.img", f"initrd-{version}"):
                real = self._has(kernel.number, posixpath.join(directory, name))
                if real is not None:
                    found = _Found(kernel.number, real)
                    break
        if found is None:
            self.warn("No initramfs was found: the drivers come from the kernel config only.")
            return None, ""
        try:
            data = self.fs[found.number].read(found.path, MAX_INITRAMFS) or b""
            return read_initramfs(data).modules, self._where(found)
        except DamagedImage:
            raise
        except InspectionError as exc:
            self.warn(f"The initramfs {self._where(found)} could not be read: {exc}")
            return None, self._where(found)

    def _shell_arch(self, root: int) -> tuple[str, str]:
        for path in SHELLS:
            try:
                real = self._has(root, path)
                head = self.fs[root].head(real, 64) if real else None
            except DamagedImage:
                raise
            except InspectionError:
                continue
            if head and head[:4] == b"\x7fELF" and len(head) >= 20:
                endian = "<" if head[5] == 1 else ">"
                machine = struct.unpack_from(f"{endian}H", head, 18)[0]
                return MACHINES.get(machine, f"machine {machine}"), f"ELF header of {path}"
        return "", ""

    def _firmware(self, scheme: str, parts: list[Partition], mbr_code: str) -> str:
        esp = any(p.type in (ESP, "0xef") for p in parts)
        bios = mbr_code not in ("", "empty", "unknown") or any(p.type == BIOS_BOOT
                                                               for p in parts)
        if scheme == "none":
            self.warn("The disk has no partition table: it boots only with a kernel given "
                      "from outside (direct kernel boot or pygrub).")
            return "unknown"
        if esp and bios:
            return "bios+uefi"
        if esp:
            return "uefi"
        if bios:
            return "bios"
        if mbr_code == "empty":
            self.warn("The MBR holds no boot code and there is no EFI System Partition.")
        return "unknown"


def _pv_from_config(config: dict[str, str]) -> tuple[bool, str]:
    if "CONFIG_XEN_PV" in config:
        value = config["CONFIG_XEN_PV"]
        return value == "y", f"CONFIG_XEN_PV={value}"
    if config.get("CONFIG_XEN") == "y" and not any(k.startswith("CONFIG_XEN_PVH")
                                                   for k in config):
        return True, "CONFIG_XEN=y (a kernel older than 4.14, where that meant PV)"
    return False, "CONFIG_XEN_PV is not set"


def _version_key(name: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", name)]
