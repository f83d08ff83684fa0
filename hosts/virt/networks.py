"""Networks and bridges of a host: libvirt networks, the host bridges they use, and the
host's own Linux bridges (libvirt's interface driver: xenbr0 is usually one of these).

An isolated network (no forward element) separates guest traffic, like the seed's
"custom bridges" that connect only the guests attached to them.
"""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt
from defusedxml import ElementTree as SafeET

from .connection import get_connection
from .errors import VirtOperationError, translate
from .target import VirtTarget

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    uuid: str
    active: bool
    autostart: bool
    bridge: str
    forward_mode: str  # "" = isolated; bridge, nat, route, …


def _describe(net: libvirt.virNetwork) -> NetworkInfo:
    root = SafeET.fromstring(net.XMLDesc(0))
    bridge = root.find("bridge")
    forward = root.find("forward")
    return NetworkInfo(
        name=net.name(), uuid=net.UUIDString(), active=bool(net.isActive()),
        autostart=bool(net.autostart()),
        bridge=bridge.get("name", "") if bridge is not None else "",
        forward_mode=forward.get("mode", "nat") if forward is not None else "",
    )


def list_networks(target: VirtTarget) -> list[NetworkInfo]:
    conn = get_connection(target)
    try:
        return sorted((_describe(n) for n in conn.listAllNetworks(0)), key=lambda n: n.name)
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action="list networks") from exc


def list_bridges(target: VirtTarget) -> list[str] | None:
    """Names of the host's Linux bridges, or None when its libvirtd has no interface
    driver (then only the bridges of its libvirt networks are known)."""
    conn = get_connection(target)
    try:
        interfaces = conn.listAllInterfaces(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return None
        raise translate(exc, target.uri, action="list the host's interfaces") from exc
    names = set()
    for interface in interfaces:
        try:
            root = SafeET.fromstring(interface.XMLDesc(0))
        except libvirt.libvirtError:
            continue  # gone between the listing and the read
        if root.get("type") == "bridge":
            names.add(root.get("name") or interface.name())
    return sorted(names)


def create_isolated_network(target: VirtTarget, name: str, bridge: str) -> NetworkInfo:
    """Define, start and autostart a network whose guests see only each other."""
    for value, what in ((name, "network name"), (bridge, "bridge name")):
        if not NAME_RE.match(value):
            raise VirtOperationError(
                f"'{value}' is not a valid {what}: 1 to 15 letters, digits, _ . - "
                "(Linux limits interface names to 15 characters)."
            )
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", name=bridge, stp="on", delay="0")
    conn = get_connection(target)
    action = f"create the isolated network '{name}'"
    try:
        net = conn.networkDefineXML(ET.tostring(root, encoding="unicode"))
    except libvirt.libvirtError as exc:
        raise translate(exc, target.uri, action=action) from exc
    try:
        net.create()
        net.setAutostart(1)
        return _describe(net)
    except libvirt.libvirtError as exc:
        # A network that cannot start (no firewall tool, the bridge name taken) is not left
        # defined: the operator's next try would meet "already exists" instead.
        with contextlib.suppress(libvirt.libvirtError):
            net.undefine()
        raise translate(exc, target.uri, action=action) from exc
