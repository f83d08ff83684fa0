"""Storage pool XML: one dataclass per pool type we create, built and parsed with ElementTree.

Pure functions (no libvirt): the specs are checked here so that bad input gets a clear
sentence before anything reaches a host.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from defusedxml import ElementTree as SafeET

__all__ = [
    "BUILDABLE_TYPES",
    "CREATABLE_TYPES",
    "DirPoolSpec",
    "FsPoolSpec",
    "IscsiPoolSpec",
    "LogicalPoolSpec",
    "NetfsPoolSpec",
    "PoolSource",
    "PoolSpec",
    "PoolSpecError",
    "build_pool_xml",
    "parse_pool_source",
]

POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?)$")
# iSCSI names compare case-insensitively (RFC 3720 normalises them to lower case).
IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:\S+)?|eui\.[0-9a-f]{16}|"
                    r"naa\.[0-9a-f]{16,32})$", re.IGNORECASE)
VG_NAME_RE = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")
FS_FORMATS = ("auto", "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "gfs2", "ocfs2")
NETFS_FORMATS = ("nfs", "auto", "glusterfs", "cifs")


class PoolSpecError(ValueError):
    """A pool definition that cannot work; the message says what to change."""


def _absolute(path: str, what: str) -> str:
    if not path or not path.startswith("/") or "\x00" in path or "/../" in f"{path}/":
        raise PoolSpecError(f"The {what} must be an absolute path like /srv/pool "
                            f"(got '{path}').")
    return path


def _host(name: str, what: str) -> str:
    if not name or not HOST_RE.match(name):
        raise PoolSpecError(f"The {what} must be a host name or IP address "
                            f"(got '{name}').")
    return name


def _name(name: str) -> None:
    if not POOL_NAME_RE.match(name or ""):
        raise PoolSpecError(f"'{name}' is not a valid pool name: 1 to 64 letters, digits, "
                            "'.', '_', '+' or '-', starting with a letter or digit.")


@dataclass(frozen=True)
class DirPoolSpec:
    """A directory on the host (or on a cluster filesystem it mounts)."""

    name: str
    target_path: str
    pool_type: str = field(default="dir", init=False)

    def validate(self) -> None:
        _name(self.name)
        _absolute(self.target_path, "target directory")


@dataclass(frozen=True)
class FsPoolSpec:
    """A block device with a filesystem, mounted on the target path."""

    name: str
    device: str
    target_path: str
    format: str = "auto"
    pool_type: str = field(default="fs", init=False)

    def validate(self) -> None:
        _name(self.name)
        _absolute(self.device, "source device")
        _absolute(self.target_path, "mount point (target path)")
        if self.format not in FS_FORMATS:
            raise PoolSpecError(f"Unknown filesystem '{self.format}': use one of "
                                f"{', '.join(FS_FORMATS)}.")


@dataclass(frozen=True)
class NetfsPoolSpec:
    """An NFS (or GlusterFS/CIFS) export mounted on the target path."""

    name: str
    source_host: str
    source_dir: str
    target_path: str
    format: str = "nfs"
    pool_type: str = field(default="netfs", init=False)

    def validate(self) -> None:
        _name(self.name)
        _host(self.source_host, "NFS server")
        if self.format == "cifs":
            if not self.source_dir or "/" in self.source_dir.strip("/"):
                raise PoolSpecError("A CIFS share is given by its name, like 'vmstore'.")
        else:
            _absolute(self.source_dir, "exported directory")
        _absolute(self.target_path, "mount point (target path)")
        if self.format not in NETFS_FORMATS:
            raise PoolSpecError(f"Unknown network filesystem '{self.format}': use one of "
                                f"{', '.join(NETFS_FORMATS)}.")


@dataclass(frozen=True)
class LogicalPoolSpec:
    """An LVM volume group; with devices it can be built (vgcreate) on them."""

    name: str
    vg_name: str
    devices: tuple[str, ...] = ()
    pool_type: str = field(default="logical", init=False)

    @property
    def target_path(self) -> str:
        return f"/dev/{self.vg_name}"

    def validate(self) -> None:
        _name(self.name)
        if not VG_NAME_RE.match(self.vg_name or "") or self.vg_name in (".", ".."):
            raise PoolSpecError(f"'{self.vg_name}' is not a valid volume group name: letters, "
                                "digits, '+', '_', '.' and '-'.")
        for device in self.devices:
            _absolute(device, "physical volume (device)")
        if len(set(self.devices)) != len(self.devices):
            raise PoolSpecError("A device is listed twice.")


@dataclass(frozen=True)
class IscsiPoolSpec:
    """The LUNs of one iSCSI target, seen as block devices under /dev/disk/by-path."""

    name: str
    source_host: str
    target_iqn: str
    port: int = 3260
    initiator_iqn: str = ""
    target_path: str = "/dev/disk/by-path"
    pool_type: str = field(default="iscsi", init=False)

    def validate(self) -> None:
        _name(self.name)
        _host(self.source_host, "iSCSI portal")
        if not 1 <= self.port <= 65535:
            raise PoolSpecError(f"The iSCSI port must be between 1 and 65535 (got {self.port}).")
        if not IQN_RE.match(self.target_iqn or ""):
            raise PoolSpecError(f"'{self.target_iqn}' is not an iSCSI target name like "
                                "iqn.2024-01.org.example:storage.")
        if self.initiator_iqn and not IQN_RE.match(self.initiator_iqn):
            raise PoolSpecError(f"'{self.initiator_iqn}' is not an initiator name like "
                                "iqn.2024-01.org.example:host1.")
        _absolute(self.target_path, "target path")


PoolSpec = DirPoolSpec | FsPoolSpec | NetfsPoolSpec | LogicalPoolSpec | IscsiPoolSpec
CREATABLE_TYPES = ("dir", "fs", "netfs", "logical", "iscsi")
# What `build` does per type: mkdir, mkfs (never over an existing filesystem), vgcreate.
BUILDABLE_TYPES = ("dir", "fs", "netfs", "logical")


def build_pool_xml(spec: PoolSpec) -> str:
    spec.validate()
    root = ET.Element("pool", type=spec.pool_type)
    ET.SubElement(root, "name").text = spec.name
    source = ET.SubElement(root, "source")
    if isinstance(spec, FsPoolSpec):
        ET.SubElement(source, "device", path=spec.device)
        ET.SubElement(source, "format", type=spec.format)
    elif isinstance(spec, NetfsPoolSpec):
        ET.SubElement(source, "host", name=spec.source_host)
        ET.SubElement(source, "dir", path=spec.source_dir)
        ET.SubElement(source, "format", type=spec.format)
    elif isinstance(spec, LogicalPoolSpec):
        for device in spec.devices:
            ET.SubElement(source, "device", path=device)
        ET.SubElement(source, "name").text = spec.vg_name
        ET.SubElement(source, "format", type="lvm2")
    elif isinstance(spec, IscsiPoolSpec):
        ET.SubElement(source, "host", name=spec.source_host, port=str(spec.port))
        ET.SubElement(source, "device", path=spec.target_iqn)
        if spec.initiator_iqn:
            initiator = ET.SubElement(source, "initiator")
            ET.SubElement(initiator, "iqn", name=spec.initiator_iqn)
    else:
        root.remove(source)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = spec.target_path
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class PoolSource:
    """Where a pool's storage lives, as its XML says (any pool type)."""

    pool_type: str
    target_path: str = ""
    hosts: tuple[tuple[str, int | None], ...] = ()  # (name, port)
    dir: str = ""
    devices: tuple[str, ...] = ()
    name: str = ""  # VG name, RBD pool, gluster volume…
    format: str = ""
    initiator: str = ""
    adapter: str = ""  # scsi host adapter (name or wwnn/wwpn)

    def as_dict(self) -> dict[str, object]:
        return {"hosts": [f"{h}:{p}" if p else h for h, p in self.hosts], "dir": self.dir,
                "devices": list(self.devices), "name": self.name, "format": self.format,
                "initiator": self.initiator, "adapter": self.adapter}


def _port(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def parse_pool_source(xml: str) -> PoolSource:
    """The source and target of a pool from its XML (libvirt's own or any you read)."""
    root = SafeET.fromstring(xml)
    source = root.find("source")
    if source is None:
        source = ET.Element("source")
    adapter = source.find("adapter")
    adapter_label = ""
    if adapter is not None:
        adapter_label = adapter.get("name", "") or ":".join(
            filter(None, (adapter.get("wwnn", ""), adapter.get("wwpn", ""))))
    fmt = source.find("format")
    return PoolSource(
        pool_type=root.get("type", ""),
        target_path=(root.findtext("target/path") or "").strip(),
        hosts=tuple((h.get("name", ""), _port(h.get("port"))) for h in source.findall("host")),
        dir=(source.find("dir").get("path", "") if source.find("dir") is not None else ""),
        devices=tuple(d.get("path", "") for d in source.findall("device") if d.get("path")),
        name=(source.findtext("name") or "").strip(),
        format=fmt.get("type", "") if fmt is not None else "",
        initiator=source.find("initiator/iqn").get("name", "")
        if source.find("initiator/iqn") is not None else "",
        adapter=adapter_label,
    )
