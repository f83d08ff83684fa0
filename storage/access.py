"""Which pools and volume files the app may touch on a user's behalf.

The pool serving a host's boot files directory (guests.boot, storage.bootfiles) holds what
an administrator put there for guest kernels and initrds, possibly symlinks to files
elsewhere on the host (libvirt lists a symlink in a dir pool exactly like its target and
follows it for every read and write). Only administrators read or write its volumes, and
none of them becomes a guest's disk, CD-ROM, save image or import target: guests boot
its files only as kernel or initrd.

Where this machine holds a volume's file (the local dom0, ``Host.files_local`` hosts such as
the lab's), a symlink in any
pool directory is refused for every operation that would read or write through it (the
file I/O itself opens with O_NOFOLLOW, storage.volume_io); on remote hosts libvirt
follows links, which is why only administrators (who have root there anyway) put files
into pool directories.
"""

from __future__ import annotations

import os
from typing import Any

from hosts.virt import parse_uri
from hosts.virt.bootfiles import BOOT_POOL
from storage.errors import StorageError
from storage.models import Pool, Volume

ADMIN_PERMISSION = "hosts.change_host"
# Pools whose volumes are files directly in the pool's directory (LVM and iSCSI volumes
# are device nodes reached through /dev symlinks, as they should be).
FILE_POOLS = ("dir", "fs", "netfs")


class AdminOnlyPool(StorageError):
    """An operation on the boot files pool by someone who is not an administrator (403)."""


def is_boot_pool(pool: Pool) -> bool:
    """Whether `pool` serves its host's boot files directory (or is the app's pool for one)."""
    if pool.name == BOOT_POOL:
        return True
    directory = pool.host.boot_files_dir.rstrip("/")
    return bool(directory) and pool.target_path.rstrip("/") == directory


def is_admin(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False)
                and user.has_perm(ADMIN_PERMISSION))


def check_pool_use(pool: Pool, user: Any, doing: str) -> None:
    """Refuse (AdminOnlyPool) a non-administrator's `doing` on the boot files pool. `user`
    None is the app itself (a job's own step)."""
    if user is not None and is_boot_pool(pool) and not is_admin(user):
        raise AdminOnlyPool(
            f"Pool '{pool.name}' serves the boot files directory of host '{pool.host}': only "
            f"an administrator can {doing} its files.")


def check_not_boot_file(volume: Volume, use: str) -> None:
    """A boot file is a kernel or initrd only, for everyone: never `use`."""
    if is_boot_pool(volume.pool):
        raise StorageError(
            f"Volume '{volume.name}' is in the boot files directory of host "
            f"'{volume.pool.host}': it can only be a guest's kernel or initrd, not {use}.")


def check_not_boot_pool(pool: Pool, use: str) -> None:
    if is_boot_pool(pool):
        raise StorageError(
            f"Pool '{pool.name}' serves the boot files directory of host '{pool.host}': it "
            f"cannot hold {use}.")


def holds_files(uri: str, *, files_local: bool) -> bool:
    """Whether this machine holds the volume files of the host at ``uri``: a host declared
    so (``files_local``, ``Host.files_local``) or a host without a remote host name, not
    libvirt's test driver (its pools live in libvirt's memory; the demo host's,
    ``Host.in_process_only``, in this process). Whether the host's libvirt may use an
    insecure transport has nothing to do with it. The one rule for storage.volume_io's
    direct file I/O and for the link checks here."""
    parsed = parse_uri(uri)
    return parsed.driver != "test" and (files_local or not parsed.hostname)


def holds_file(pool: Pool) -> bool:
    """Whether this machine holds the pool's files (``holds_files`` for its host)."""
    return holds_files(pool.host.uri, files_local=pool.host.files_local)


def link_in_pool(volume: Volume) -> bool:
    """Whether the volume's file, on this machine, is a symlink or resolves outside its
    pool's directory (False where this machine does not hold the file)."""
    if (not volume.path or volume.pool.pool_type not in FILE_POOLS
            or not holds_file(volume.pool)):
        return False
    try:
        if os.path.islink(volume.path):
            return True
    except OSError:
        return False
    root = volume.pool.target_path.rstrip("/")
    if not root or not os.path.exists(volume.path):
        return False
    real = os.path.realpath(volume.path)
    return os.path.dirname(real) != os.path.realpath(root)


def check_not_link(volume: Volume, doing: str) -> None:
    if link_in_pool(volume):
        raise StorageError(
            f"Volume '{volume.name}' is a symbolic link (or leads out of pool "
            f"'{volume.pool.name}'): the app does not {doing} a file through a link.")


def why_not_a_disk(volume: Volume) -> str:
    """"" when the volume may be a guest's disk or CD-ROM, else why not: never a boot file
    (for anyone), never a file reached through a link."""
    if is_boot_pool(volume.pool):
        return (f"Volume '{volume.name}' is in the boot files directory of host "
                f"'{volume.pool.host}': it can only be a guest's kernel or initrd.")
    if link_in_pool(volume):
        return (f"Volume '{volume.name}' is a symbolic link (or leads out of pool "
                f"'{volume.pool.name}'): a link is never a guest's disk.")
    return ""
