"""The few text files inspection reads: os-release, fstab, and boot loader configurations
(GRUB 2, GRUB legacy, SYSLINUX/EXTLINUX, Boot Loader Specification entries)."""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass

MAX_CONFIG_LINES = 20000


@dataclass(frozen=True)
class BootEntry:
    title: str
    kernel: str  # the path as the config names it
    initrd: str
    cmdline: str

    @property
    def root(self) -> str:
        return cmdline_value(self.cmdline, "root")


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    mountpoint: str
    fstype: str


def _lines(text: str) -> list[str]:
    return text.splitlines()[:MAX_CONFIG_LINES]


def parse_os_release(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in _lines(text):
        key, sep, value = line.strip().partition("=")
        if not sep or not re.fullmatch(r"[A-Z0-9_]+", key):
            continue
        try:
            parts = shlex.split(value)
        except ValueError:
            parts = [value.strip("\"'")]
        found[key] = parts[0] if parts else ""
    return found


def parse_fstab(text: str) -> list[FstabEntry]:
    entries = []
    for line in _lines(text):
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3:
            entries.append(FstabEntry(fields[0], fields[1], fields[2]))
    return entries


def naming(spec: str) -> str:
    """How fstab (or root=) names a device: uuid, label, partuuid, partlabel, device, lvm."""
    upper = spec.upper()
    for prefix, kind in (("UUID=", "uuid"), ("LABEL=", "label"), ("PARTUUID=", "partuuid"),
                         ("PARTLABEL=", "partlabel")):
        if upper.startswith(prefix):
            return kind
    for prefix, kind in (("/dev/disk/by-uuid/", "uuid"), ("/dev/disk/by-label/", "label"),
                         ("/dev/disk/by-partuuid/", "partuuid"), ("/dev/mapper/", "lvm"),
                         ("/dev/disk/by-id/", "device-id"), ("/dev/disk/by-path/", "path")):
        if spec.startswith(prefix):
            return kind
    if re.fullmatch(r"/dev/[a-z0-9]+/[A-Za-z0-9_.+-]+", spec) and \
            not re.match(r"/dev/(cciss|ida|rd)/", spec):
        return "lvm"
    return "device" if spec.startswith("/dev/") else "other"


def spec_value(spec: str) -> str:
    """The value after UUID=/LABEL=... or after /dev/disk/by-*/."""
    if "=" in spec and not spec.startswith("/"):
        return spec.split("=", 1)[1].strip("\"'")
    if spec.startswith("/dev/disk/by-"):
        return spec.rsplit("/", 1)[-1]
    return spec


def cmdline_value(cmdline: str, key: str) -> str:
    for token in cmdline.split():
        if token.startswith(f"{key}="):
            return token.split("=", 1)[1]
    return ""


def _strip_device(path: str) -> str:
    """GRUB's "(hd0,0)/vmlinuz" and "($root)/vmlinuz" are paths on that device."""
    return re.sub(r"^\([^)]*\)", "", path)


def parse_grub2(text: str) -> list[BootEntry]:
    """Menu entries in order (submenus flattened), the default one first when the config
    names it by number or title."""
    entries: list[BootEntry] = []
    default = ""
    current: dict[str, str] | None = None
    depth = 0
    for raw in _lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"set\s+default=[\"']?([^\"'\s]*)", line)
        if match and current is None:
            default = match.group(1)
        if line.startswith("menuentry ") and current is None:
            title = re.match(r"menuentry\s+(['\"])(.*?)\1", line)
            current = {"title": title.group(2) if title else "", "kernel": "", "initrd": "",
                       "cmdline": ""}
            depth = 0
        if current is not None:
            depth += line.count("{") - line.count("}")
            words = line.split(None, 2)
            if words[0] in ("linux", "linux16", "linuxefi", "kernel") and len(words) > 1:
                current["kernel"] = _strip_device(words[1])
                current["cmdline"] = words[2] if len(words) > 2 else ""
            elif words[0] in ("initrd", "initrd16", "initrdefi") and len(words) > 1:
                current["initrd"] = _strip_device(words[1])
            if depth <= 0 and "}" in line:
                entries.append(BootEntry(**current))
                current = None
    return _default_first(entries, default)


def _default_first(entries: list[BootEntry], default: str) -> list[BootEntry]:
    chosen = None
    if default.isdigit() and int(default) < len(entries):
        chosen = entries[int(default)]
    else:
        chosen = next((e for e in entries if e.title == default), None)
    if chosen is not None:
        entries = [chosen] + [e for e in entries if e is not chosen]
    return [e for e in entries if e.kernel] or entries


def parse_menu_lst(text: str) -> list[BootEntry]:
    entries: list[BootEntry] = []
    default = "0"
    current: dict[str, str] | None = None
    for raw in _lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"(\w+)(?:\s*=\s*|\s+)(.*)", line)
        if match is None:
            continue
        key, rest = match.group(1).lower(), match.group(2).strip()
        if key == "default" and current is None:
            default = rest
        elif key == "title":
            if current is not None:
                entries.append(BootEntry(**current))
            current = {"title": rest, "kernel": "", "initrd": "", "cmdline": ""}
        elif current is not None and key == "kernel":
            path, _, args = rest.partition(" ")
            current["kernel"], current["cmdline"] = _strip_device(path), args.strip()
        elif current is not None and key == "initrd":
            current["initrd"] = _strip_device(rest.split()[0]) if rest else ""
    if current is not None:
        entries.append(BootEntry(**current))
    return _default_first(entries, default)


def parse_syslinux(text: str, config_dir: str) -> list[BootEntry]:
    """LABEL blocks, the DEFAULT one first; relative paths are taken from `config_dir`."""
    entries: list[BootEntry] = []
    default = ""
    current: dict[str, str] | None = None
    for raw in _lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        key, rest = key.lower(), rest.strip()
        if key == "default" and current is None:
            default = rest.split()[0] if rest else ""
        elif key == "label":
            if current is not None:
                entries.append(_syslinux_entry(current, config_dir))
            current = {"title": rest, "kernel": "", "initrd": "", "cmdline": ""}
        elif current is not None and key in ("kernel", "linux"):
            current["kernel"] = rest.split()[0] if rest else ""
        elif current is not None and key == "initrd":
            current["initrd"] = rest.split(",")[0]
        elif current is not None and key == "append":
            current["cmdline"] = rest
            initrd = cmdline_value(rest, "initrd")
            if initrd and not current["initrd"]:
                current["initrd"] = initrd.split(",")[0]
    if current is not None:
        entries.append(_syslinux_entry(current, config_dir))
    entries = [e for e in entries if e.kernel and not e.kernel.endswith(".c32")]
    return _default_first(entries, default)


def _syslinux_entry(fields: dict[str, str], config_dir: str) -> BootEntry:
    def place(path: str) -> str:
        return path if not path or path.startswith("/") else \
            posixpath.normpath(posixpath.join(config_dir, path))
    return BootEntry(fields["title"], place(fields["kernel"]), place(fields["initrd"]),
                     fields["cmdline"])


def parse_bls(text: str) -> BootEntry:
    fields: dict[str, str] = {}
    for raw in _lines(text):
        key, _, value = raw.strip().partition(" ")
        if key and not key.startswith("#"):
            fields.setdefault(key, value.strip())
    return BootEntry(fields.get("title", ""), fields.get("linux", ""),
                     (fields.get("initrd", "").split() or [""])[0], fields.get("options", ""))
