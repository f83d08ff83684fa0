"""Does the domain XML inside a save image describe the guest it is restored as?

A save image carries the domain definition libvirt restores the guest with: whoever can
write the image can name any host file or device as a disk, serial log, kernel, NVRAM or
emulator, add QEMU command-line arguments or a static security label, and get it opened
by the hypervisor as root. Before a restore, the image's XML is compared with the guest's
own definition; everything must be equal except what libvirt itself changes while a
domain runs (ids, aliases, addresses, assigned ports and PTYs, dynamic security labels,
the live balloon size, detected backing chains, expanded CPU models).

The comparison is deliberately of the whole tree, not of a list of "dangerous" elements:
a new kind of device or attribute that names a host resource is refused by default.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from defusedxml import ElementTree as SafeET

# The test driver's own namespace (run state, managed-save flag): its bookkeeping.
_TEST_NS = "{http://libvirt.org/schemas/domain/test/1.0}"

# Elements libvirt adds or rewrites on a running domain, dropped wherever they are.
# (An <address> inside a <source> is a host device, a passed-through PCI/USB device: kept.)
_VOLATILE_ELEMENTS = {"alias", "address", "currentMemory", "cpu", "memballoon", "genid"}
# The cgroup partition libvirt puts every QEMU domain in by default.
_DEFAULT_PARTITION = "/machine"
# Attributes libvirt fills in at run time, per element tag ("*": any element).
_VOLATILE_ATTRS: dict[str, set[str]] = {
    "*": {"index"},
    "source": {"portid"},  # the port a libvirt network gave a running interface
    "domain": {"id"},
    "vcpu": {"current"},
    # Ports libvirt assigns; the console password, which a save image holds (libvirt
    # writes it with its secrets) and XMLDesc without VIR_DOMAIN_XML_SECURE leaves out.
    "graphics": {"port", "websocket", "tlsPort", "passwd", "passwdValidTo"},
    "serial": {"tty"},
    "console": {"tty"},
    "parallel": {"tty"},
    "channel": {"tty"},
}
# Character devices whose source libvirt allocates itself (a PTY's path).
_CHARDEVS = {"serial", "console", "parallel", "channel"}


class SaveImageXmlError(ValueError):
    """The image's XML cannot be parsed at all."""


def _strip(element: ET.Element) -> Any:
    """A comparable, order-normalised form of `element` without the volatile parts."""
    tag = element.tag
    if tag.startswith(_TEST_NS):
        return None
    drop = _VOLATILE_ATTRS["*"] | _VOLATILE_ATTRS.get(tag, set())
    attrs = {key: value for key, value in element.attrib.items() if key not in drop}
    children = []
    for child in element:
        if child.tag in _VOLATILE_ELEMENTS and tag != "source":
            continue
        if child.tag == "resource" and _default_resource(child):
            continue
        if tag in _CHARDEVS and element.get("type") == "pty" and child.tag == "source":
            continue
        if tag == "interface" and child.tag == "target":
            continue  # the host-side device name (vnet0, vif1.0) libvirt picks
        if tag == "interface" and element.get("type") == "network" and child.tag == "source":
            child = _without(child, "bridge")  # the network's bridge, filled in at start
        if tag == "channel" and child.tag == "target":
            child = _without(child, "state")
        if child.tag == "backingStore" and len(child) == 0 and not child.attrib:
            continue  # "no backing store": what libvirt writes once it looked
        if child.tag == "listen" and tag == "graphics" and child.get("type") == "address":
            child = _without(child, "address") if not element.get("listen") else child
        if child.tag == "seclabel" and child.get("type") == "dynamic":
            child = _dynamic_label(child)
            if child is None:
                continue
        stripped = _strip(child)
        if stripped is not None:
            children.append(stripped)
    text = (element.text or "").strip()
    return (tag, tuple(sorted(attrs.items())), text, tuple(sorted(children, key=repr)))


def _default_resource(resource: ET.Element) -> bool:
    return [(c.tag, (c.text or "").strip()) for c in resource] in (
        [("partition", _DEFAULT_PARTITION)], [])


def _dynamic_label(seclabel: ET.Element) -> ET.Element | None:
    """A dynamic security label without the labels libvirt generates at each start (it
    parses none from a save image); None when nothing else is left, as on a running
    domain whose definition has no label at all. A base label is kept and compared."""
    rest = [child for child in seclabel if child.tag not in ("label", "imagelabel")]
    if not rest and seclabel.get("relabel", "yes") == "yes":
        return None
    copy = ET.Element(seclabel.tag, dict(seclabel.attrib))
    copy.extend(rest)
    return copy


def _without(element: ET.Element, attr: str) -> ET.Element:
    copy = ET.Element(element.tag, {k: v for k, v in element.attrib.items() if k != attr})
    copy.text = element.text
    copy.extend(list(element))
    return copy


def _parse(xml: str, what: str) -> ET.Element:
    try:
        root = SafeET.fromstring(xml)
    except (SafeET.ParseError, ValueError) as exc:
        raise SaveImageXmlError(f"The {what} is not readable domain XML: {exc}") from exc
    if root.tag != "domain":
        raise SaveImageXmlError(f"The {what} is not a domain definition.")
    return root


def _label(item: Any) -> str:
    tag, attrs, text, _children = item
    shown = " ".join(f"{k}='{v}'" for k, v in attrs)
    return f"<{tag}{' ' + shown if shown else ''}>{text[:80]}"


def _describe(image: Any, own: Any, path: str = "") -> list[str]:
    """Where two stripped trees differ, in words (the first few places)."""
    tag = image[0]
    here = f"{path}/{tag}"
    if image[:3] != own[:3]:
        return [f"{here}: the image has {_label(image)}, the guest {_label(own)}"]
    problems: list[str] = []
    theirs, ours = list(image[3]), list(own[3])
    for child in theirs:
        if child in ours:
            ours.remove(child)
            continue
        twin = next((o for o in ours if o[0] == child[0] and o[1] == child[1]), None) \
            or next((o for o in ours if o[0] == child[0]), None)
        if twin is None:
            problems.append(f"{here}: the image adds {_label(child)}")
        else:
            ours.remove(twin)
            problems.extend(_describe(child, twin, here))
    problems.extend(f"{here}: the image lacks {_label(rest)}" for rest in ours)
    return problems


def differences(image_xml: str, definition_xml: str) -> list[str]:
    """What the image's domain XML changes against the guest's definition (empty: none
    but what libvirt changes itself). SaveImageXmlError when the image's XML is garbage."""
    image = _strip(_parse(image_xml, "save image's domain XML"))
    own = _strip(_parse(definition_xml, "guest's definition"))
    if image == own:
        return []
    return _describe(image, own)[:10] or ["the definitions differ"]


def identity(xml: str) -> tuple[str, str]:
    """The (uuid, name) a domain XML claims."""
    root = _parse(xml, "domain XML")
    return (root.findtext("uuid") or "").strip().lower(), (root.findtext("name") or "").strip()
