"""A tiny bootable Linux guest for the lab, built from Debian packages only.

The guest is Debian's own kernel (``linux-image-amd64``) plus an initramfs holding a static
busybox (``busybox-static``) and a shell-script ``/init``. It boots by direct kernel boot
(kernel + initrd, no disk) and, as soon as ``/init`` runs, prints ``TINY_GUEST_BANNER`` on the
console (and on ``ttyS0`` when the console is elsewhere). Then it:

- prints a heartbeat ``tick <uptime>`` every two seconds, so a reader of the console after a
  migration or a restore sees new output;
- with ``xenweb.dirty=N`` on the kernel command line (see ``tiny_guest_cmdline``), fills
  N MiB of tmpfs with random data once, prints ``dirtying N MiB`` and then rewrites those
  N MiB of guest pages continuously (live-migration tests under load); the guest needs about
  ``4 * N`` MiB of RAM plus 64 MiB (tmpfs holds at most half of it, source and target copies);
- powers off on an ACPI power-button press (libvirt's ``shutdown``, QEMU's
  ``system_powerdown``): the ``button`` and ``evdev`` modules plus busybox ``acpid``;
- powers off when Xen asks a PV guest to (libvirt's ``shutdown`` on Xen: the kernel's Xen
  driver runs ``/sbin/poweroff``, which the initramfs provides).

``ensure_tiny_guest()`` builds it once into ``lab_dir()/tiny-guest/<key>/`` (the key hashes the
package versions and ``BUILDER_VERSION``), from ``.deb`` files that ``apt-get download`` keeps in
``cache_dir()/debs``. Later calls only read ``current.json`` and check that the files exist;
package versions are resolved again (with ``apt-cache``, about a second) only when the apt
lists have changed since.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.paths import cache_dir, lab_dir
from lab.rootfs import locked

log = logging.getLogger(__name__)

TINY_GUEST_BANNER = "xenweb tiny guest ready"
TINY_GUEST_TICK = "tick"
TINY_GUEST_DIRTYING = "dirtying"
TINY_GUEST_POWER_BUTTON = "xenweb tiny guest: power button, powering off"
TINY_GUEST_POWEROFF = "xenweb tiny guest: shutdown requested, powering off"

# Bump when the image content changes (init script, modules, layout): it is part of the key.
BUILDER_VERSION = 4

KERNEL_METAPACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
MODULES = ("button", "evdev")  # ACPI power button -> input event -> busybox acpid
APT_LISTS = Path("/var/lib/apt/lists")


class TinyGuestError(RuntimeError):
    """Building the tiny guest failed."""


@dataclass(frozen=True)
class TinyGuestImage:
    kernel: Path
    initrd: Path
    kernel_version: str


@dataclass(frozen=True)
class _Package:
    name: str
    version: str
    arch: str


def tiny_guest_cmdline(dirty_mib: int = 0, console: str = "ttyS0") -> str:
    """The kernel command line: serial console, quiet kernel, ``xenweb.dirty=N`` (MiB)."""
    if dirty_mib < 0:
        raise ValueError(f"dirty_mib must be >= 0, not {dirty_mib}")
    return f"console={console} panic=-1 loglevel=1 xenweb.dirty={dirty_mib}"


def ensure_tiny_guest() -> TinyGuestImage:
    """The tiny guest's kernel and initrd, built if missing. Idempotent and process-safe."""
    root = lab_dir() / "tiny-guest"
    root.mkdir(exist_ok=True)
    image = _current(root, check_apt=True)
    if image:
        return image
    with locked(root / ".lock"):
        image = _current(root, check_apt=True)  # built by another process meanwhile?
        if image:
            return image
        for leftover in [*root.glob(".build-*"), *root.glob(".scratch-*")]:
            shutil.rmtree(leftover, ignore_errors=True)  # from a builder that died
        apt_stamp = _apt_lists_stamp()
        try:
            kernel, busybox = _resolve_packages()
        except TinyGuestError as exc:
            image = _current(root, check_apt=False)
            if image is None:
                raise
            log.warning("%s; using the tiny guest built before", exc)
            return image
        key = _key(kernel, busybox)
        out = root / key
        if not (out / "manifest.json").is_file():
            shutil.rmtree(out, ignore_errors=True)  # incomplete: never renamed into place
            _build(kernel, busybox, root, out)
        manifest = json.loads((out / "manifest.json").read_text())
        pointer = {"builder": BUILDER_VERSION, "key": key, "apt_lists": apt_stamp, **manifest}
        tmp = root / ".current.json.tmp"
        tmp.write_text(json.dumps(pointer, indent=2) + "\n")
        tmp.replace(root / "current.json")
        return _image(out, manifest["kernel_version"])


# --- cache and lock ---------------------------------------------------------------------------


def _image(out: Path, kernel_version: str) -> TinyGuestImage:
    return TinyGuestImage(out / "vmlinuz", out / "initrd.gz", kernel_version)


def _current(root: Path, *, check_apt: bool) -> TinyGuestImage | None:
    """The image ``current.json`` points to, if complete and (optionally) not outdated."""
    try:
        pointer = json.loads((root / "current.json").read_text())
    except (OSError, ValueError):
        return None
    if pointer.get("builder") != BUILDER_VERSION:
        return None
    if check_apt and pointer.get("apt_lists") != _apt_lists_stamp():
        return None
    image = _image(root / pointer["key"], pointer["kernel_version"])
    if image.kernel.is_file() and image.initrd.is_file():
        return image
    return None


def _apt_lists_stamp() -> int:
    try:
        return APT_LISTS.stat().st_mtime_ns
    except OSError:
        return 0


def _key(*packages: _Package) -> str:
    text = json.dumps([BUILDER_VERSION, [vars(p) for p in packages]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- Debian packages --------------------------------------------------------------------------


def _run(args: list[str], *, hint: str = "", cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise TinyGuestError(f"{' '.join(args)} failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        suffix = f"; {hint}" if hint else ""
        raise TinyGuestError(f"{' '.join(args)} failed: {' / '.join(detail)}{suffix}")
    return result.stdout


def _resolve_packages() -> tuple[_Package, _Package]:
    """The kernel image package ``linux-image-amd64`` depends on, and busybox-static."""
    hint = "run apt-get update?"
    depends = _run(["apt-cache", "depends", KERNEL_METAPACKAGE], hint=hint)
    names = re.findall(r"^\s*Depends:\s*(linux-image-\S+)\s*$", depends, re.MULTILINE)
    if not names:
        raise TinyGuestError(f"apt-cache depends {KERNEL_METAPACKAGE}: no linux-image-* found")
    shown = _run(["apt-cache", "show", "--no-all-versions", names[0], BUSYBOX_PACKAGE], hint=hint)
    found: dict[str, _Package] = {}
    for stanza in shown.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if {"Package", "Version", "Architecture"} <= fields.keys():
            found[fields["Package"]] = _Package(
                fields["Package"], fields["Version"], fields["Architecture"]
            )
    missing = {names[0], BUSYBOX_PACKAGE} - found.keys()
    if missing:
        raise TinyGuestError(f"apt-cache show: no candidate for {', '.join(sorted(missing))}")
    return found[names[0]], found[BUSYBOX_PACKAGE]


def _download(package: _Package) -> Path:
    """``apt-get download`` into ``cache_dir()/debs`` (once; apt checks the hashes)."""
    debs = cache_dir() / "debs"
    debs.mkdir(exist_ok=True)
    version = package.version.replace(":", "%3a")
    target = debs / f"{package.name}_{version}_{package.arch}.deb"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        spec = f"{package.name}={package.version}"
        _run(["apt-get", "download", spec], cwd=Path(tmp), hint="run apt-get update?")
        files = list(Path(tmp).glob("*.deb"))
        if len(files) != 1:
            raise TinyGuestError(f"apt-get download {spec}: expected one .deb, got {files}")
        files[0].replace(target)
    return target


def _extract(deb: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(into)])
    return into


# --- kernel modules ---------------------------------------------------------------------------


def _module_bytes(path: Path) -> bytes:
    """A module, uncompressed (busybox insmod cannot load compressed modules)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise TinyGuestError(f"unsupported module compression: {path.name}")


def _modinfo(module: bytes) -> dict[str, str]:
    """The ``.modinfo`` section of an ELF64 little-endian module (``key=value`` strings)."""
    if module[:5] != b"\x7fELF\x02":
        raise TinyGuestError("kernel module is not an ELF64 file")
    (shoff,) = struct.unpack_from("<Q", module, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", module, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", module, shoff + index * shentsize
        )
        return name, offset, size

    _, names_offset, _ = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        if module[names_offset + name :].startswith(b".modinfo\0"):
            fields = module[offset : offset + size].split(b"\0")
            return dict(f.decode(errors="replace").split("=", 1) for f in fields if b"=" in f)
    return {}


def module_load_order(
    wanted: Iterable[str], depends: Callable[[str], list[str] | None]
) -> list[str]:
    """``wanted`` modules and their dependencies, each after what it depends on.

    ``depends(name)`` lists a module's dependencies, or is None for a module built into the
    kernel (skipped). Names are normalised as the kernel does (``-`` is ``_``).
    """
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        deps = depends(name)
        if deps is None:
            return
        for dep in deps:
            visit(dep)
        ordered.append(name)

    for name in wanted:
        visit(name)
    return ordered


def _modules(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """``wanted`` modules and their dependencies, in load order; built-ins are skipped.

    Dependencies come from each module's ``.modinfo`` ``depends=`` (what depmod turns into
    ``modules.dep``, which the kernel package does not ship: its postinst generates it).
    """
    index = {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko*")}
    builtin_file = moddir / "modules.builtin"
    builtin_lines = builtin_file.read_text().split() if builtin_file.is_file() else []
    builtin = {Path(line).name.split(".ko")[0].replace("-", "_") for line in builtin_lines}
    data: dict[str, bytes] = {}

    def depends(name: str) -> list[str] | None:
        if name not in index:
            if name in builtin:
                return None
            raise TinyGuestError(f"kernel module {name} not found in {moddir}")
        data[name] = _module_bytes(index[name])
        return [d for d in _modinfo(data[name]).get("depends", "").split(",") if d]

    return [(name, data[name]) for name in module_load_order(wanted, depends)]


# --- initramfs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str  # without the leading "/"
    mode: int  # file type and permissions
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _cpio_newc(entries: list[_Entry]) -> bytes:
    """A ``newc`` (SVR4, no CRC) cpio archive, as the kernel unpacks into its rootfs."""
    out = bytearray()
    for ino, entry in enumerate([*entries, _Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out += b"070701" + "".join(f"{field:08x}" for field in fields).encode() + name
        out += b"\0" * (-len(out) % 4)
        out += entry.data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


# /init is assembled from these pieces; lab/bootdisk.py puts its root-disk step between them.
# The console that /dev/console writes to is the last one in /sys/class/tty/console/active
# (the last console= on the command line): say() copies a line to ttyS0 when that one is not it.
INIT_SETUP = r"""#!/bin/busybox sh
# xenweb tiny guest: /init (PID 1), generated by lab/tinyguest.py
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm

say() {
    echo "$*"
    case "$(cat /sys/class/tty/console/active 2>/dev/null)" in
        *ttyS0) ;;
        *) [ -c /dev/ttyS0 ] && echo "$*" 2>/dev/null >/dev/ttyS0 ;;
    esac
}
uptime_s() { read -r up _ </proc/uptime; echo "$up"; }
"""

_INIT_BANNER = r"""
say "@BANNER@ kernel=$(uname -r) uptime=$(uptime_s)"
"""

INIT_SERVICES = r"""
while read -r module; do
    insmod "/lib/modules/$module.ko" || say "xenweb tiny guest: insmod $module failed"
done </etc/modules
# The power button: acpid reads /dev/input/event*, runs /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /tmp/acpid.log -p /tmp/acpid.pid

dirty=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in xenweb.dirty=*) dirty="${arg#xenweb.dirty=}" ;; esac
done
case "$dirty" in ''|*[!0-9]*) say "xenweb tiny guest: bad xenweb.dirty=$dirty"; dirty=0 ;; esac
if [ "$dirty" -gt 0 ]; then
    (
        start=$(uptime_s)
        if ! head -c $((dirty * 1048576)) /dev/urandom >/dev/shm/src ||
            ! cp /dev/shm/src /dev/shm/dst; then
            rm -f /dev/shm/src /dev/shm/dst
            say "xenweb tiny guest: cannot fill 2 x $dirty MiB of tmpfs (RAM >= 4 * N + 64 MiB?)"
            exit 1
        fi
        say "@DIRTYING@ $dirty MiB (filled in $(awk "BEGIN { print $(uptime_s) - $start }") s)"
        passes=0
        while :; do
            dd if=/dev/shm/src of=/dev/shm/dst bs=1M conv=notrunc 2>/dev/null
            passes=$((passes + 1))
            echo "$passes" >/tmp/dirty-passes.new && mv /tmp/dirty-passes.new /tmp/dirty-passes
        done
    ) &
fi

while :; do
    if [ -f /tmp/dirty-passes ]; then
        say "@TICK@ $(uptime_s) passes=$(cat /tmp/dirty-passes)"
    else
        say "@TICK@ $(uptime_s)"
    fi
    sleep 2
done
"""

_POWER_BUTTON = """#!/bin/sh
echo "@POWER@" >/dev/console
poweroff -f
"""
# What the kernel runs when Xen asks the guest to shut down (its poweroff_cmd).
_SBIN_POWEROFF = """#!/bin/sh
echo "@POWEROFF@" >/dev/console
/bin/poweroff -f
"""


def _initramfs(
    busybox: Path,
    modules: list[tuple[str, bytes]],
    *,
    init: str | None = None,
    extra: tuple[_Entry, ...] = (),
) -> bytes:
    """The gzip'd initramfs; ``init`` (default: the tiny guest's) and ``extra`` entries are
    for other flavours (lab/bootdisk.py): ``modules`` always go to ``/etc/modules``."""
    applets = _run([str(busybox), "--list"]).split()
    init = (
        (INIT_SETUP + _INIT_BANNER + INIT_SERVICES if init is None else init)
        .replace("@BANNER@", TINY_GUEST_BANNER)
        .replace("@DIRTYING@", TINY_GUEST_DIRTYING)
        .replace("@TICK@", TINY_GUEST_TICK)
    )
    power_button = _POWER_BUTTON.replace("@POWER@", TINY_GUEST_POWER_BUTTON)
    sbin_poweroff = _SBIN_POWEROFF.replace("@POWEROFF@", TINY_GUEST_POWEROFF)
    directory, script, link = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o755, stat.S_IFLNK | 0o777
    dirs = "bin sbin dev proc sys tmp root etc etc/acpi etc/acpi/PWRF lib lib/modules var var/run"
    entries = [_Entry(name, directory) for name in dirs.split()]
    entries += [
        _Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        _Entry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)),
        _Entry("init", script, init.encode()),
        _Entry("bin/busybox", script, busybox.read_bytes()),
        *(_Entry(f"bin/{a}", link, b"busybox") for a in applets if a != "busybox"),
        _Entry("etc/modules", stat.S_IFREG | 0o644, "".join(f"{n}\n" for n, _ in modules).encode()),
        *(_Entry(f"lib/modules/{n}.ko", stat.S_IFREG | 0o644, data) for n, data in modules),
        _Entry("etc/acpi/PWRF/00000080", script, power_button.encode()),
        _Entry("sbin/poweroff", script, sbin_poweroff.encode()),
        *extra,
    ]
    return gzip.compress(_cpio_newc(entries), compresslevel=9, mtime=0)


# --- build ------------------------------------------------------------------------------------


def _build(kernel: _Package, busybox: _Package, root: Path, out: Path) -> None:
    """Build into a temporary directory next to ``out``, then rename it into place."""
    log.info("building the tiny guest from %s %s", kernel.name, busybox.name)
    kernel_deb, busybox_deb = _download(kernel), _download(busybox)
    build = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix=".scratch-") as scratch:
            kernel_tree = _extract(kernel_deb, Path(scratch) / "kernel")
            busybox_tree = _extract(busybox_deb, Path(scratch) / "busybox")
            vmlinuz = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
            if len(vmlinuz) != 1:
                raise TinyGuestError(f"{kernel_deb.name}: expected one boot/vmlinuz-*")
            kernel_version = vmlinuz[0].name.removeprefix("vmlinuz-")
            moddir = kernel_tree / "lib" / "modules" / kernel_version
            modules = _modules(moddir, MODULES)
            initrd = _initramfs(busybox_tree / "bin" / "busybox", modules)
            shutil.copyfile(vmlinuz[0], build / "vmlinuz")
            (build / "initrd.gz").write_bytes(initrd)
        manifest = {
            "kernel_version": kernel_version,
            "packages": [vars(kernel), vars(busybox)],
            "modules": [name for name, _ in modules],
            "initrd_bytes": len(initrd),
        }
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        build.chmod(0o755)
        build.rename(out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log.info("tiny guest %s built in %s", kernel_version, out)
