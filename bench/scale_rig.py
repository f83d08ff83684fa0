"""The scale rig: N demo hosts (libvirt ``test:///`` node files) with M guests each, written
with ElementTree in the shape the demo host uses (Xen PV and HVM guests, disks, NICs), and
enrolled at once; plus a counter of libvirt calls for the measurements."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import libvirt
from django.conf import settings

from hosts.models import Host

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
RUN_STATES = (1, 1, 1, 5, 1, 3, 1, 1)  # mostly running; some shut off, some paused
# Answered by the client library from the object it holds: no round trip to libvirtd.
LOCAL_CALLS = frozenset({"name", "UUID", "UUIDString", "ID", "connect"})


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _domain(node: ET.Element, host: int, index: int) -> None:
    name = f"h{host:02d}-vm{index:04d}"
    hvm = index % 5 == 0
    domain = _sub(node, "domain", type="xen")
    _sub(domain, "name", name)
    _sub(domain, "uuid", str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.scale.xenweb")))
    _sub(domain, "description", f"scale rig guest {index} of host {host}")
    memory = str((512 + 256 * (index % 8)) * 1024)
    _sub(domain, "memory", memory, unit="KiB")
    _sub(domain, "currentMemory", memory, unit="KiB")
    _sub(domain, "vcpu", str(1 + index % 4), placement="static")
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm" if hvm else "linux", arch="x86_64",
         machine="xenfv" if hvm else "xenpv")
    devices = _sub(domain, "devices")
    for number, letter in enumerate("ab"[: 1 + index % 2]):
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="raw")
        _sub(disk, "source", file=f"/var/lib/xen/images/{name}-{number}.img")
        _sub(disk, "target", dev=f"{'hd' if hvm else 'xvd'}{letter}",
             bus="ide" if hvm else "xen")
    nic = _sub(devices, "interface", type="bridge")
    _sub(nic, "mac", address=f"00:16:3e:{host:02x}:{index // 256:02x}:{index % 256:02x}")
    _sub(nic, "source", bridge="xenbr0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="xen", port="0")
    _sub(domain, f"{{{TEST_NS}}}runstate", str(RUN_STATES[index % len(RUN_STATES)]))


def node_xml(host: int, guests: int) -> str:
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    cpu = _sub(node, "cpu")
    for tag, value in (("mhz", "3000"), ("model", "x86_64"), ("nodes", "1"), ("sockets", "2"),
                       ("cores", "16"), ("threads", "2")):
        _sub(cpu, tag, value)
    _sub(node, "memory", str(1024 * 1024 * 1024))  # KiB: 1 TiB, room for every guest
    for index in range(guests):
        _domain(node, host, index)
    return ET.tostring(node, encoding="unicode")


def rig_dir() -> Path:
    path = Path(settings.DATA_DIR) / "scale-rig"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_hosts(hosts: int, guests_per_host: int) -> list[Host]:
    """Host rows for ``hosts`` node files of ``guests_per_host`` guests (not reconciled)."""
    made = []
    for number in range(1, hosts + 1):
        path = rig_dir() / f"host{number:02d}-{guests_per_host}.xml"
        path.write_text(node_xml(number, guests_per_host))
        uri = "test://" + quote(path.as_posix(), safe="/")
        host, _ = Host.objects.update_or_create(
            name=f"scale{number:02d}", defaults={
                "uri": uri, "state": Host.State.ONLINE, "hypervisor_type": "Xen",
                "arch": "x86_64", "cpus": 64, "memory_mib": 1024 * 1024})
        made.append(host)
    return made


@contextmanager
def count_libvirt_calls() -> Iterator[Counter[str]]:
    """Counts calls of libvirt's connection, domain and pool methods that go to libvirtd
    (remote procedure calls on a real host) while active."""
    counts: Counter[str] = Counter()
    originals = []
    for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virStoragePool,
                libvirt.virStorageVol, libvirt.virNetwork):
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not callable(member) or name in LOCAL_CALLS:
                continue
            originals.append((cls, name, member))

            def counted(*args: object, __member: object = member, __name: str = name,
                        **kwargs: object) -> object:
                counts[__name] += 1
                return __member(*args, **kwargs)  # type: ignore[operator]

            setattr(cls, name, counted)
    try:
        yield counts
    finally:
        for cls, name, member in originals:
            setattr(cls, name, member)
