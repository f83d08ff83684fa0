"""Boot files for tests: a host's boot files directory holding a kernel and an initrd.

On the demo host (libvirt's test driver, which never opens a file) the files are volumes
the test driver keeps in memory; on lab hosts they are the tiny guest's real kernel and
initrd, copied into a directory every lab host serves (like a boot directory on NFS).
"""

from __future__ import annotations

from typing import Any

from hosts.models import Host
from hosts.virt import VirtTarget
from lab.bootfiles import INITRD, KERNEL, lab_boot_dir, lab_boot_files
from storage.bootfiles import boot_pool, refresh_boot_files, set_boot_files_dir

__all__ = ["DEMO_BOOT_DIR", "INITRD", "KERNEL", "demo_boot_files", "lab_boot_dir",
           "lab_boot_files"]

DEMO_BOOT_DIR = "/var/lib/xen/boot"


def demo_boot_files(host: Host, user: Any = None) -> tuple[str, str]:
    """The demo host's boot files directory with a kernel and an initrd (names)."""
    from hosts.virt.volumes import create_volume

    set_boot_files_dir(host, DEMO_BOOT_DIR, user=user)
    pool = boot_pool(host)
    assert pool is not None
    for name in (KERNEL, INITRD):
        create_volume(VirtTarget(host.uri), pool.name, name, 8 * 1024**2)
    refresh_boot_files(host)
    return KERNEL, INITRD
