"""Preparing a freshly started libvirtd and clearing one that is about to stop: dir pools
and a bridged network defined idempotently, every running guest powered off.

Each call opens a connection of its own, bounded by ``timeout``, and closes it: the daemon
may be gone the next moment, so nothing is kept in the connection pool. Used by the local
lab (``lab/``), which starts and stops its own libvirtds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import call_on_own_connection
from .target import VirtTarget

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DirPool:
    name: str
    path: str


def _dir_pool_xml(spec: DirPool) -> str:
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = spec.name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = spec.path
    return ET.tostring(pool, encoding="unicode")


def _target_path(pool: libvirt.virStoragePool) -> str:
    root = SafeET.fromstring(pool.XMLDesc(0))
    return (root.findtext("target/path") or "").rstrip("/")


def _ensure_dir_pool(conn: libvirt.virConnect, spec: DirPool) -> None:
    try:
        pool = conn.storagePoolLookupByName(spec.name)
    except libvirt.libvirtError:
        pool = None
    if pool is not None and _target_path(pool) != spec.path.rstrip("/"):
        if pool.isActive():
            pool.destroy()
        pool.undefine()
        pool = None
    if pool is None:
        pool = conn.storagePoolDefineXML(_dir_pool_xml(spec), 0)
    if not pool.isActive():
        pool.create(0)
    if not pool.autostart():
        pool.setAutostart(1)
    pool.refresh(0)


def ensure_dir_pools(
    target: VirtTarget,
    pools: Sequence[DirPool],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Define, start, autostart and refresh a dir pool for each of ``pools`` (idempotent; a
    pool of that name at another path is redefined). The directories must exist on the host.
    """

    def work(conn: libvirt.virConnect) -> None:
        for spec in pools:
            _ensure_dir_pool(conn, spec)

    call_on_own_connection(
        target, work, timeout=timeout, what="setting up the storage pools",
        action="set up the storage pools",
    )


def _bridged_network_xml(name: str, bridge: str) -> str:
    network = ET.Element("network")
    ET.SubElement(network, "name").text = name
    ET.SubElement(network, "forward", mode="bridge")
    ET.SubElement(network, "bridge", name=bridge)
    return ET.tostring(network, encoding="unicode")


def ensure_bridged_network(target: VirtTarget, name: str, bridge: str, *,
                           timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Define, start and autostart the network `name` forwarding to the existing host bridge
    `bridge` (no firewall rules, no DHCP); one of that name on another bridge is redefined."""

    def work(conn: libvirt.virConnect) -> None:
        try:
            network = conn.networkLookupByName(name)
        except libvirt.libvirtError:
            network = None
        if network is not None and network.bridgeName() != bridge:
            if network.isActive():
                network.destroy()
            network.undefine()
            network = None
        if network is None:
            network = conn.networkDefineXML(_bridged_network_xml(name, bridge))
        if not network.isActive():
            network.create()
        if not network.autostart():
            network.setAutostart(1)

    call_on_own_connection(
        target, work, timeout=timeout, what="setting up the network",
        action=f"set up the network '{name}'",
    )


def destroy_running_guests(
    target: VirtTarget, *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[str]:
    """Destroy (power off) every running guest on ``target``; the names of those destroyed.
    A guest that cannot be destroyed (gone meanwhile, or wedged) is skipped."""

    def work(conn: libvirt.virConnect) -> list[str]:
        names = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
                names.append(dom.name())
            except libvirt.libvirtError:
                continue
        return names

    return call_on_own_connection(
        target, work, timeout=timeout, what="stopping the guests",
        action="stop the guests",
    )
