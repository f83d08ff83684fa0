"""Defining a storage pool from its XML, and removing it again (define, build, start; stop,
undefine).

Interim: the Xen lab's two-host tests use it for a real ``netfs`` pool until the storage
pools API (``hosts.virt.pools.define_pool`` with ``hosts.virt.pool_xml`` specs) is merged;
then callers switch to that and this module goes.
"""

from __future__ import annotations

import libvirt

from .connection import get_connection
from .errors import translate
from .pools import PoolInfo, _describe


def define_pool_from_xml(uri: str, xml: str, *, allow_insecure: bool = False) -> PoolInfo:
    """Define the pool, build it (its target folder) and start it (mount, for netfs).
    Nothing stays defined when a step fails."""
    conn = get_connection(uri, allow_insecure=allow_insecure)
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action="define the storage pool") from exc
    step = f"start the storage pool '{pool.name()}'"
    try:
        pool.build(0)
        pool.create(0)
        return _describe(pool)
    except libvirt.libvirtError as exc:
        error = translate(exc, uri, action=step)
        try:
            pool.undefine()
        except libvirt.libvirtError:
            pass
        raise error from exc


def remove_pool(uri: str, name: str, *, allow_insecure: bool = False) -> None:
    """Stop (unmount) and undefine the pool; its storage is kept."""
    conn = get_connection(uri, allow_insecure=allow_insecure)
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError as exc:
        raise translate(exc, uri, action=f"remove the storage pool '{name}'") from exc
