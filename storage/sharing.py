"""Shared storage: which pools on different hosts are the same storage.

A pool's `storage_key` names its underlying storage, computed from the pool XML at
reconcile. Pools whose storage is shared by nature (NFS export, iSCSI target, shared LVM
volume group) are shared automatically; a dir/fs pool on a cluster filesystem only when
the admin declares it (the same path on two hosts is usually two different disks). The
admin may also declare a pool not shared, or group declared pools under a label.

The migration checks call `disk_on_target(host, path, target)` per disk (or
`shared_pool_on(pool, host)` / `hosts_sharing(pool)`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from hosts.models import Host
from hosts.virt.pool_xml import PoolSource
from storage.errors import StorageError
from storage.models import Pool
from xenweb.audit.services import record

# Pool types whose storage lives on the network: shared unless the admin says otherwise.
NETWORK_TYPES = ("netfs", "iscsi", "iscsi-direct", "logical", "rbd", "sheepdog", "gluster")
DEFAULT_PORTS = {"iscsi": 3260, "iscsi-direct": 3260}
# Pools whose volumes are files below the target path (a mount point can differ per host).
PATH_POOL_TYPES = ("dir", "fs", "netfs")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def normal_host(name: str) -> str:
    """Host names compare case-insensitively, without a trailing dot or IPv6 brackets."""
    return name.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def normal_path(path: str) -> str:
    """`/export//vm/./` and `/export/vm` are the same directory."""
    path = path.strip()
    if not path:
        return ""
    return posixpath.normpath(path) if path.startswith("/") else path.strip("/")


def _portal(source: PoolSource) -> str:
    if not source.hosts:
        return ""
    name, port = source.hosts[0]
    port = port or DEFAULT_PORTS.get(source.pool_type)
    return f"{normal_host(name)}:{port}" if port else normal_host(name)


def storage_key(source: PoolSource) -> str:
    """The identity of the pool's storage, the same on every host that uses it ("" when
    the XML does not say enough)."""
    kind = source.pool_type
    if kind == "netfs":
        if not source.hosts or not source.dir:
            return ""
        fmt = "nfs" if source.format in ("", "auto", "nfs") else source.format
        return f"{fmt}:{normal_host(source.hosts[0][0])}:{normal_path(source.dir)}"
    if kind in ("iscsi", "iscsi-direct"):
        iqn = source.devices[0] if source.devices else ""
        return f"iscsi:{_portal(source)}:{iqn.strip().lower()}" if iqn else ""
    if kind == "logical":
        vg = source.name or posixpath.basename(normal_path(source.target_path))
        if not vg:
            return ""
        devices = ",".join(sorted(normal_path(d) for d in source.devices))
        return f"lvm:{vg}" + (f":{devices}" if devices else "")
    if kind in ("rbd", "sheepdog", "gluster"):
        hosts = ",".join(sorted(normal_host(h) for h, _ in source.hosts))
        where = source.name + (f"/{normal_path(source.dir)}" if source.dir else "")
        return f"{kind}:{hosts}:{where}" if where else ""
    if kind in ("dir", "fs"):
        return f"path:{normal_path(source.target_path)}" if source.target_path else ""
    return ""


def auto_shared(pool: Pool) -> bool:
    """Shared by nature: network storage whose identity is known."""
    return pool.pool_type in NETWORK_TYPES and bool(pool.storage_key)


def effective_shared(pool: Pool) -> bool:
    return pool.shared_declared if pool.shared_declared is not None else auto_shared(pool)


def apply_source(pool: Pool, source: PoolSource) -> None:
    """Set the pool's source fields, key and effective sharing from its XML (no save)."""
    pool.target_path = source.target_path
    pool.source = source.as_dict()
    pool.storage_key = storage_key(source)[:1024]
    pool.shared = effective_shared(pool)


# ---- reads --------------------------------------------------------------------------------

def same_storage(pool: Pool) -> list[Pool]:
    """The other hosts' pools that are the same storage as `pool` (empty if not shared)."""
    key = pool.share_key
    if not pool.shared or not key:
        return []
    candidates = Pool.objects.select_related("host").filter(shared=True).exclude(
        host_id=pool.host_id)
    if pool.share_label:
        candidates = candidates.filter(share_label=pool.share_label)
    else:
        candidates = candidates.filter(storage_key=pool.storage_key, share_label="")
    return list(candidates.order_by("host__name", "name"))


def shared_with(pool: Pool) -> list[dict[str, Any]]:
    return [{"host": p.host_id, "host_name": p.host.name, "pool": p.pk, "pool_name": p.name}
            for p in same_storage(pool)]


def hosts_sharing(pool: Pool) -> list[Host]:
    """Every host that has this storage: the pool's own host first."""
    return [pool.host] + [p.host for p in same_storage(pool)]


def shared_pool_on(pool: Pool, host: Host) -> Pool | None:
    """The pool on `host` that is the same storage as `pool` (a volume's path there is the
    same file), or None: what a live migration needs for each disk."""
    if host.pk == pool.host_id:
        return pool
    return next((p for p in same_storage(pool) if p.host_id == host.pk), None)


def pool_of_disk(host: Host, path: str) -> Pool | None:
    """The host's pool holding a guest disk: by volume path, else the pool whose directory
    holds the path (deepest first: a file libvirt has not listed, or in a subdirectory)."""
    pool = Pool.objects.select_related("host").filter(host=host, volumes__path=path).first()
    if pool is not None or not path.startswith("/"):
        return pool
    path = normal_path(path)
    holders = [p for p in Pool.objects.select_related("host").filter(
        host=host, pool_type__in=PATH_POOL_TYPES).exclude(target_path="")
        if path.startswith(normal_path(p.target_path).rstrip("/") + "/")]
    return max(holders, key=lambda p: len(normal_path(p.target_path)), default=None)


@dataclass(frozen=True)
class DiskOnTarget:
    pool: Pool  # the target host's pool of the same storage
    path: str  # where the disk is on the target (mount points may differ between hosts)


def disk_on_target(host: Host, path: str, target: Host) -> DiskOnTarget | None:
    """For a migration: where the source host's disk `path` is on the target host, or None
    when the disk is local or on storage the target does not have as a pool."""
    pool = pool_of_disk(host, path)
    there = shared_pool_on(pool, target) if pool is not None else None
    if pool is None or there is None:
        return None
    source_dir, target_dir = normal_path(pool.target_path), normal_path(there.target_path)
    if pool.pool_type in PATH_POOL_TYPES and source_dir and target_dir and \
            normal_path(path).startswith(source_dir.rstrip("/") + "/"):
        path = posixpath.join(target_dir, posixpath.relpath(normal_path(path), source_dir))
    return DiskOnTarget(pool=there, path=path)


# ---- writes -------------------------------------------------------------------------------

def declare_sharing(pool: Pool, shared: bool | None, *, label: str = "", user: Any = None,
                    request: Any = None) -> Pool:
    """The admin's word: shared (optionally grouped under `label`), not shared, or back to
    automatic (None: decided from the pool type)."""
    label = label.strip()
    if label and not LABEL_RE.match(label):
        raise StorageError(f"'{label}' is not a valid sharing label: letters, digits, '_', "
                           "'.', ':' and '-', up to 64.")
    if label and shared is not True:
        raise StorageError("A sharing label only goes with a pool declared shared.")
    if shared is True and not label and not pool.storage_key:
        raise StorageError(f"Nothing identifies the storage of pool '{pool.name}' (no path "
                           "or source in its definition): give a sharing label to group it.")
    before = {"shared": pool.shared, "declared": pool.shared_declared,
              "label": pool.share_label}
    pool.shared_declared = shared
    pool.share_label = label
    pool.shared = effective_shared(pool)
    pool.save(update_fields=["shared_declared", "share_label", "shared", "updated_at"])
    record("pool.sharing", user=user, request=request, target=pool, before=before,
           shared=pool.shared, declared=shared, label=label,
           shared_with=[f"{p.host.name}/{p.name}" for p in same_storage(pool)])
    return pool
