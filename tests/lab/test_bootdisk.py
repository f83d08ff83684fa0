"""The lab's boot disk: its pure parts, the image as built, and booting it under plain QEMU.

The boots are marked ``hypervisor`` (they boot machines: CI's PostgreSQL pass skips them).
Each case boots once: SeaBIOS -> SYSLINUX (MBR, active FAT partition) -> kernel + initramfs
-> the root file system named on the command line, with the serial console in a file.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.bootdisk import (
    BOOT_DISK_BANNER,
    BOOT_DISK_DEVICES,
    BOOT_DISK_NO_FSTAB_ROOT,
    BOOT_DISK_NO_ROOT,
    BOOT_SECTORS,
    BOOT_START,
    CONFIG_PATH,
    MBR_BIN,
    ROOT_SECTORS,
    ROOT_START,
    SECTOR,
    BootDisk,
    Partition,
    RootNaming,
    banner_pattern,
    boot_disk_cmdline,
    check_hostname,
    ensure_boot_disk,
    fstab_text,
    init_script,
    mbr_bytes,
    partitions,
    root_spec,
    syslinux_config,
)
from lab.tinyguest import TINY_GUEST_TICK, module_load_order

QEMU = shutil.which("qemu-system-x86_64")
TOOLS = ("syslinux", "mcopy", "mtype", "mkfs.vfat", "mkfs.ext4", "debugfs")
BANNER_TIMEOUT = 240.0
UUID = "0f3c6a52-1d2e-4b7a-9c11-2f5e8d0a4b6c"

# --- pure parts -------------------------------------------------------------------------------


def test_mbr_bytes() -> None:
    code = bytes(range(256)) + bytes(184)
    parts = (Partition(2048, 65536, 0x0E, active=True), Partition(67584, 32768, 0x83))
    mbr = mbr_bytes(code, parts, 0xA1B2C3D4)
    assert len(mbr) == 512
    assert mbr[:440] == code
    assert mbr[440:444] == bytes.fromhex("d4c3b2a1")  # disk signature, little-endian
    assert mbr[444:446] == b"\0\0"
    assert mbr[510:] == b"\x55\xaa"
    first, second = mbr[446:462], mbr[462:478]
    assert first[0] == 0x80 and second[0] == 0x00  # only partition 1 is active
    assert first[4] == 0x0E and second[4] == 0x83
    assert first[8:16] == (2048).to_bytes(4, "little") + (65536).to_bytes(4, "little")
    assert second[8:16] == (67584).to_bytes(4, "little") + (32768).to_bytes(4, "little")
    assert first[1:4] == bytes((32, 33, 0))  # LBA 2048: head 32, sector 33, cylinder 0
    assert mbr[478:510] == bytes(32)  # entries 3 and 4 empty
    huge = mbr_bytes(b"", (Partition(2048, 1 << 30, 0x83),), 0)
    assert huge[446 + 5 : 446 + 8] == bytes((254, 0xFF, 0xFF))  # past CHS range: saturated
    with pytest.raises(ValueError):
        mbr_bytes(bytes(441), parts, 0)
    with pytest.raises(ValueError):
        mbr_bytes(b"", parts * 3, 0)


def test_layout() -> None:
    boot, root = partitions()
    assert (boot.start, boot.sectors, boot.active) == (BOOT_START, BOOT_SECTORS, True)
    assert (root.start, root.sectors, root.active) == (ROOT_START, ROOT_SECTORS, False)
    assert boot.start * SECTOR == 1 << 20  # 1 MiB aligned, as fdisk does
    assert root.start == boot.start + boot.sectors


def test_module_load_order_closes_over_dependencies() -> None:
    deps = {
        "ext4": ["jbd2", "mbcache", "crc16"],
        "jbd2": [],
        "mbcache": [],
        "crc16": [],
        "sd_mod": ["scsi_mod", "scsi_common"],
        "scsi_mod": ["scsi_common"],
        "scsi_common": [],
        "ata_piix": ["libata"],
        "libata": ["scsi_mod"],
        "xen_blkfront": [],
    }
    order = module_load_order(["ata_piix", "sd_mod", "xen-blkfront", "ext4", "builtin"],
                              lambda name: deps.get(name))  # fmt: skip
    assert order == ["scsi_common", "scsi_mod", "libata", "ata_piix", "sd_mod",
                     "xen_blkfront", "jbd2", "mbcache", "crc16", "ext4"]  # fmt: skip
    for name, needed in deps.items():
        for dep in needed:
            assert order.index(dep) < order.index(name)


def test_root_spec_cmdline_and_fstab() -> None:
    assert root_spec("device", UUID) == "/dev/sda2"
    assert root_spec("uuid", UUID) == f"UUID={UUID}"
    with pytest.raises(ValueError):
        root_spec("label", UUID)  # type: ignore[arg-type]
    cmdline = boot_disk_cmdline("/dev/sda2")
    assert cmdline.split()[:4] == ["root=/dev/sda2", "ro", "console=ttyS0", "console=tty0"]
    assert f"root=UUID={UUID} " in boot_disk_cmdline(f"UUID={UUID}")
    for spec in ("/dev/sda2", f"UUID={UUID}"):
        entries = [line.split() for line in fstab_text(spec).splitlines()
                   if line and not line.startswith("#")]  # fmt: skip
        assert entries == [[spec, "/", "ext4", "errors=remount-ro", "0", "1"]]


def test_syslinux_config_for_syslinux_and_pygrub() -> None:
    text = syslinux_config(boot_disk_cmdline("/dev/sda2"))
    assert CONFIG_PATH == "/boot/extlinux/extlinux.conf"  # SYSLINUX's install dir; pygrub's list
    lines = [line.strip() for line in text.splitlines()]
    assert "DEFAULT linux" in lines and "LABEL linux" in lines
    assert "KERNEL /boot/vmlinuz" in lines
    # pygrub takes the initrd from APPEND's initrd= (it has no INITRD directive)
    assert "APPEND initrd=/boot/initrd.gz root=/dev/sda2 ro console=ttyS0 console=tty0" in text
    assert "SERIAL 0 115200" in lines


def test_init_script_and_banner() -> None:
    script = init_script()
    assert script.startswith("#!/bin/busybox sh\n")
    for placeholder in ("@PREFIX@", "@DEVICES@", "@BANNER@"):  # the tiny guest's stay: its
        assert placeholder not in script  # _initramfs fills them in
    assert script.index("/etc/modules-disk") < script.index(BOOT_DISK_BANNER)
    assert script.index(BOOT_DISK_BANNER) < script.index("acpid")  # then the tiny guest's services
    line = f"{BOOT_DISK_BANNER}: hostname=web-01 root=/dev/sda2 kernel=6.1.0-1-amd64 uptime=3.1"
    assert re.search(banner_pattern("web-01"), line)[1] == "/dev/sda2"  # type: ignore[index]
    assert not re.search(banner_pattern("web-0"), line)
    not_found = BOOT_DISK_NO_ROOT.format(spec="/dev/sda2")
    assert not_found == "xenweb boot disk: root /dev/sda2 not found"
    assert check_hostname("web-01") == "web-01"
    for bad in ("", "-web", "web_01", "Web", "a" * 64, "web/01"):
        with pytest.raises(ValueError):
            check_hostname(bad)


# --- the image as built -----------------------------------------------------------------------


def _require_tools() -> None:
    sbin = "/usr/sbin:/sbin"
    missing = [t for t in TOOLS if not (shutil.which(t) or shutil.which(t, path=sbin))]
    if missing or not any(path.is_file() for path in MBR_BIN):
        pytest.skip(f"missing {missing or 'mbr.bin'}: scripts/bootstrap.sh installs them")


@pytest.fixture(scope="module", params=["device", "uuid"])
def disk(request: pytest.FixtureRequest) -> BootDisk:
    _require_tools()
    naming: RootNaming = request.param
    return ensure_boot_disk(f"bd-{naming}", naming)


def _run(*args: str) -> str:
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    return subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout


def test_image_is_cached_and_complete(disk: BootDisk, tmp_path: Path) -> None:
    started = time.monotonic()
    assert ensure_boot_disk(disk.hostname, disk.root_naming) == disk
    assert time.monotonic() - started < 5  # the warm path only reads the pointer
    data = disk.path.read_bytes()
    assert len(data) == disk.size_bytes
    mbr_code = next(path for path in MBR_BIN if path.is_file()).read_bytes()
    assert data[:440] == mbr_code[:440]
    assert data[446:512] == mbr_bytes(b"", partitions(), 0)[446:512]

    fat = f"{disk.path}@@{BOOT_START * SECTOR}"
    assert _run("mtype", "-i", fat, f"::{CONFIG_PATH}") == syslinux_config(disk.cmdline)
    listing = _run("mdir", "-a", "-b", "-i", fat, "::/boot/extlinux")
    assert "ldlinux.sys" in listing and "ldlinux.c32" in listing
    assert f"root={disk.root_spec} " in disk.cmdline

    root_img = tmp_path / "root.img"
    start = ROOT_START * SECTOR
    root_img.write_bytes(data[start : start + ROOT_SECTORS * SECTOR])

    def cat(path: str) -> str:
        return _run("debugfs", "-R", f"cat {path}", str(root_img))

    assert cat("/etc/hostname") == f"{disk.hostname}\n"
    assert cat("/etc/fstab") == fstab_text(disk.root_spec)
    assert 'VERSION_ID="12"' in cat("/usr/lib/os-release")
    assert "CONFIG_EXT4_FS=" in cat(f"/boot/config-{disk.kernel_version}")
    stats = _run("debugfs", "-R", "stats", str(root_img))
    assert re.search(rf"Filesystem UUID:\s+{disk.fs_uuid}", stats)
    if disk.root_naming == "uuid":
        assert disk.root_spec == f"UUID={disk.fs_uuid}"
    else:
        assert disk.root_spec == "/dev/sda2"


# --- booting it -------------------------------------------------------------------------------


class Machine:
    """One QEMU process booting a copy-on-write view of the disk (``snapshot=on``)."""

    def __init__(self, disk: BootDisk, bus: str, workdir: Path, accel: str) -> None:
        assert QEMU is not None
        self.console = workdir / "console.log"
        self.monitor = workdir / "monitor.sock"
        self.console.write_bytes(b"")
        self.started = time.monotonic()
        args = [
            QEMU,
            "-accel", accel,
            "-m", "256",
            "-display", "none",
            "-nic", "none",
            "-no-reboot",
            "-drive", f"file={disk.path},format=raw,if={bus},snapshot=on",
            "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.monitor},server,nowait",
        ]  # fmt: skip
        self.log = (workdir / "qemu.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.console.read_bytes().decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.proc.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.text()}")
            time.sleep(0.2)

    def powerdown(self) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.monitor))
            sock.recv(4096)
            sock.sendall(b"system_powerdown\n")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


Boot = Callable[[RootNaming, str], Machine]


@pytest.fixture(scope="module")
def accel() -> str:
    from lab.kvmprobe import kvm_boots_linux

    return "kvm" if kvm_boots_linux() else "tcg"


@pytest.fixture
def boot(accel: str) -> Iterator[Boot]:
    """``boot(naming, bus)``: a Machine booting the boot disk of that root naming."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed (scripts/bootstrap.sh installs it)")
    _require_tools()
    machines: list[Machine] = []
    workdir = Path(tempfile.mkdtemp(prefix="xw-bd-"))  # short: unix socket path limit

    def start(naming: RootNaming, bus: str) -> Machine:
        disk = ensure_boot_disk(f"bd-{naming}", naming)
        machine_dir = workdir / str(len(machines))
        machine_dir.mkdir()
        machine = Machine(disk, bus, machine_dir, accel)
        machines.append(machine)
        return machine

    try:
        yield start
    finally:
        for machine in machines:
            machine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.hypervisor
@pytest.mark.parametrize("naming", ["device", "uuid"])
def test_boots_from_its_ide_disk(boot: Boot, naming: RootNaming) -> None:
    machine = boot(naming, "ide")
    banner = machine.wait_for(banner_pattern(f"bd-{naming}"), BANNER_TIMEOUT)
    print(f"{naming}: banner {time.monotonic() - machine.started:.1f} s after QEMU start")
    assert banner[1] == "/dev/sda2"
    assert "SYSLINUX" in machine.text()  # booted by the boot loader, not by QEMU -kernel
    machine.wait_for(rf"{TINY_GUEST_TICK} [\d.]+", 30)
    machine.powerdown()  # the tiny guest's services follow the root step
    assert machine.proc.wait(timeout=30) == 0


@pytest.mark.hypervisor
def test_root_by_device_name_is_not_found_on_another_bus(boot: Boot) -> None:
    machine = boot("device", "virtio")  # the disk is now vda, the config still says sda2
    machine.wait_for(re.escape(BOOT_DISK_NO_ROOT.format(spec="/dev/sda2")), BANNER_TIMEOUT)
    devices = machine.wait_for(rf"{re.escape(BOOT_DISK_DEVICES)} (.*)", 10)
    print(f"not found {time.monotonic() - machine.started:.1f} s after QEMU start")
    assert "vda2" in devices[1].split()
    assert BOOT_DISK_BANNER not in machine.text()


@pytest.mark.hypervisor
def test_root_by_uuid_is_found_on_another_bus(boot: Boot) -> None:
    machine = boot("uuid", "virtio")
    banner = machine.wait_for(banner_pattern("bd-uuid"), BANNER_TIMEOUT)
    print(f"uuid on virtio: banner {time.monotonic() - machine.started:.1f} s after QEMU start")
    assert banner[1] == "/dev/vda2"
    assert BOOT_DISK_NO_FSTAB_ROOT.split("{")[0] not in machine.text()
