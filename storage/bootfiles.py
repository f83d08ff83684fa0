"""A host's boot files directory: where operators' guest kernels and initrds come from.

Only administrators set it (the API and the host page ask for hosts.change_host). The app
serves the directory as a libvirt dir pool, so its files are listed by the host's own
libvirtd, cached as that pool's volumes, and chosen by name (guests.boot checks each
choice). The setting itself is the host's (Host.boot_files_dir); the pool is storage's.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from django.db.models import Q, QuerySet

from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import bootfiles as virt
from hosts.virt.volumes import describe_pool
from storage.inventory import reconcile_pools, store_pool
from storage.models import Pool, Volume
from xenweb.audit.services import record

DIR_RE = re.compile(r"^/[A-Za-z0-9._+~@/-]{1,1023}$")
# Trees that hold the host's own secrets or kernel interfaces: never served, nor below.
FORBIDDEN_TREES = ("/boot", "/dev", "/etc", "/proc", "/run", "/sys", "/var/run", "/var/log")
# System directories themselves (a directory of its own below them is fine).
FORBIDDEN_DIRS = ("/", "/root", "/home", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/var",
                  "/var/lib", "/tmp", "/srv", "/opt", "/mnt", "/media")  # noqa: S108


class BootFilesError(ValueError):
    """A boot files directory that cannot be used; the message says why."""


def check_directory(directory: str) -> str:
    """An absolute, normalised directory of its own ('' clears)."""
    directory = directory.strip()
    if not directory:
        return ""
    directory = directory.rstrip("/") or "/"
    if (not DIR_RE.match(directory) or posixpath.normpath(directory) != directory
            or "/." in directory):
        raise BootFilesError(
            f"'{directory}' is not a usable directory: give an absolute path like "
            "/var/lib/xen/boot (letters, digits, . _ + ~ @ -; no '..', no hidden parts).")
    if directory in FORBIDDEN_DIRS or any(
            directory == root or directory.startswith(root + "/") for root in FORBIDDEN_TREES):
        raise BootFilesError(
            f"'{directory}' holds the host's own files: give a directory of its own for "
            "guest kernels and initrds, like /var/lib/xen/boot (dom0's /boot holds its own "
            "initrd, which may carry keys).")
    return directory


def set_boot_files_dir(host: Host, directory: str, *, user: Any, request: Any = None) -> Host:
    """Serve `directory` on the host as its boot files (a dir pool), or none ('')."""
    try:
        directory = check_directory(directory)
        if directory:
            info = virt.ensure_boot_pool(host.virt_target, directory)
        else:
            virt.remove_boot_pool(host.virt_target)
    except (BootFilesError, VirtError) as exc:
        record("host.boot_files_dir", user=user, request=request, target=host,
               result="failed", message=str(exc), directory=directory)
        raise
    host.boot_files_dir = directory
    host.save(update_fields=["boot_files_dir", "updated_at"])
    try:
        reconcile_pools(host)  # also drops the app's pool for a former directory
    except VirtError:
        if directory:
            store_pool(host, info)  # the periodic reconcile catches up with the rest
    record("host.boot_files_dir", user=user, request=request, target=host,
           directory=directory)
    return host


def refresh_boot_files(host: Host) -> list[str]:
    """The directory's files, listed again on the host (files added or removed there since
    are seen) and stored in the inventory; [] without a boot files directory."""
    pool = boot_pool(host)
    if pool is None:
        return []
    store_pool(host, describe_pool(host.virt_target, pool.name, refresh=True))
    return list(offered(host).values_list("name", flat=True))


def boot_pool(host: Host) -> Pool | None:
    """The cached pool serving the host's boot files directory (None without one)."""
    directory = host.boot_files_dir.rstrip("/")
    if not directory:
        return None
    return Pool.objects.filter(host=host, pool_type="dir").filter(
        Q(target_path=directory) | Q(target_path=directory + "/")).first()


def offered(host: Host | None = None) -> QuerySet[Volume]:
    """The files of the boot files directories (of one host, or of all), as last listed."""
    hosts = Host.objects.exclude(boot_files_dir="")
    if host is not None:
        hosts = hosts.filter(pk=host.pk)
    pools = [pool.pk for pool in (boot_pool(h) for h in hosts) if pool is not None]
    return Volume.objects.select_related("pool__host").filter(pool_id__in=pools).exclude(
        format="dir").order_by("pool__host__name", "name")
