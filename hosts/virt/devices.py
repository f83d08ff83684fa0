"""Live resources: vCPUs and hot-plugging disks and NICs.

Each change is applied to the running guest where the hypervisor can, and always to the
definition; the result says which ("live" or "next boot") so the UI can tell the user.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
from defusedxml import ElementTree as SafeET

from .domain_xml import DiskSpec, NicSpec, device_xml
from .domains import _act
from .errors import VirtObjectNotFound
from .target import VirtTarget

LIVE, NEXT_BOOT = "live", "next boot"
# Errors that mean "not while running" rather than "wrong request".
NOT_LIVE = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_INVALID,
            libvirt.VIR_ERR_OPERATION_UNSUPPORTED, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            libvirt.VIR_ERR_CONFIG_UNSUPPORTED)


def _apply(dom: libvirt.virDomain, call: object, running: bool,
           redefine: object = None) -> str:
    """Call with LIVE (when running) and CONFIG separately; LIVE may be refused.

    Drivers without device calls at all (the test driver) get the definition rewritten
    by `redefine(root)` and defined again, which takes effect at the next boot.
    """
    applied = NEXT_BOOT
    if running:
        try:
            call(libvirt.VIR_DOMAIN_AFFECT_LIVE)  # type: ignore[operator]
            applied = LIVE
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in NOT_LIVE:
                raise
    if dom.isPersistent():
        try:
            call(libvirt.VIR_DOMAIN_AFFECT_CONFIG)  # type: ignore[operator]
        except libvirt.libvirtError as exc:
            if redefine is None or exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            root = SafeET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            redefine(root)  # type: ignore[operator]
            dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
    return applied


def _running(dom: libvirt.virDomain) -> bool:
    return dom.state()[0] in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED,
                              libvirt.VIR_DOMAIN_PAUSED)


def set_vcpus(target: VirtTarget, uuid: str, count: int) -> str:
    def call(dom: libvirt.virDomain) -> str:
        return _apply(dom, lambda flags: dom.setVcpusFlags(count, flags), _running(dom))

    return _act(target, uuid, "change the vCPUs of", call)


def attach(target: VirtTarget, uuid: str, device: DiskSpec | NicSpec) -> str:
    xml = device_xml(device)

    def add(root: ET.Element) -> None:
        root.find("devices").append(SafeET.fromstring(xml))

    def call(dom: libvirt.virDomain) -> str:
        return _apply(dom, lambda flags: dom.attachDeviceFlags(xml, flags), _running(dom), add)

    return _act(target, uuid, "attach a device to", call)


def _finder(tag: str, match: object) -> object:
    def find(root: ET.Element) -> ET.Element | None:
        return next((e for e in root.findall(f"devices/{tag}") if match(e)), None)  # type: ignore[operator]

    return find


def _detach(target: VirtTarget, uuid: str, tag: str, match: object, what: str) -> str:
    find = _finder(tag, match)

    def drop(root: ET.Element) -> None:
        element = find(root)  # type: ignore[operator]
        if element is not None:
            root.find("devices").remove(element)

    def call(dom: libvirt.virDomain) -> str:
        root = SafeET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        element = find(root)  # type: ignore[operator]
        if element is None:
            raise VirtObjectNotFound(f"Guest '{dom.name()}' has no such {what}.")
        xml = ET.tostring(element, encoding="unicode")
        return _apply(dom, lambda flags: dom.detachDeviceFlags(xml, flags), _running(dom),
                      drop)

    return _act(target, uuid, f"detach {what} from", call)


def detach_disk(target: VirtTarget, uuid: str, dev: str) -> str:
    return _detach(target, uuid, "disk", lambda e: e.find("target") is not None
                   and e.find("target").get("dev") == dev, f"disk {dev}")


def detach_nic(target: VirtTarget, uuid: str, mac: str) -> str:
    return _detach(target, uuid, "interface", lambda e: e.find("mac") is not None
                   and e.find("mac").get("address", "").lower() == mac.lower(),
                   f"interface {mac}")
