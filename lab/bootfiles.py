"""The lab's boot files: the tiny guest's kernel and initrd in a directory every lab host
serves as its boot files directory (like a boot directory on NFS that all dom0s mount),
so guests booting them are created by file name, as operators do, and migrate between
lab hosts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hosts.models import Host
from lab.paths import lab_dir
from lab.tinyguest import ensure_tiny_guest
from storage.bootfiles import refresh_boot_files, set_boot_files_dir

KERNEL, INITRD = "vmlinuz", "initrd.gz"


def lab_boot_dir() -> Path:
    return lab_dir() / "boot"


def lab_boot_files(host: Host, user: Any = None) -> tuple[str, str]:
    """The tiny guest's kernel and initrd in the lab's boot files directory, served on the
    (lab) host; returns their file names."""
    image = ensure_tiny_guest()
    directory = lab_boot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for source, name in ((image.kernel, KERNEL), (image.initrd, INITRD)):
        target = directory / name
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)
    if host.boot_files_dir != str(directory):
        set_boot_files_dir(host, str(directory), user=user)
    else:
        refresh_boot_files(host)
    return KERNEL, INITRD
