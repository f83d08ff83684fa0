"""The lab's bootable disk (lab.bootdisk) in the conversion tests: a damaged copy of it, and a
converted guest booted on a lab host until its serial console shows the disk's banner,
removed afterwards. Shared by the V2V and P2V tests.

The lab hosts have no libvirt network (creating one needs a firewall tool and the network
driver in the lab's libvirtd): a guest imported onto a bridge of this machine
(tests.conversions.bridge) starts with its NICs and its banner names their MACs as the guest
sees them; a guest whose NICs name a network has them removed through the API before the
start (its MACs are checked in the definition, ``defined_macs``)."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

from django.test import Client

from guests.models import Guest
from hosts.virt import VirtError, VirtTarget, domains
from hosts.virt.console import read_console_until
from lab.bootdisk import BOOT_DISK_BANNER

BOOT_TIMEOUT = 240.0  # seconds; the lab hosts run their guests under TCG on a shared machine


def damaged_copy(disk: Path, copy: Path) -> Path:
    """A copy of the boot disk whose partition 2 ends far beyond the disk's end (inspection
    refuses it: "the partition table is damaged")."""
    shutil.copy(disk, copy)
    with copy.open("r+b") as image:  # the sector count of the MBR's second entry
        image.seek(446 + 16 + 12)
        image.write(struct.pack("<I", 1 << 30))
    return copy


def defined_macs(guest: Guest) -> list[str]:
    """The MACs of the guest's NICs, as its host defines them."""
    defined = domains.get_domain(VirtTarget(guest.host.uri, allow_insecure=True),
                                 str(guest.uuid)).xml
    return [nic.mac for nic in defined.nics]


def boot_to_banner(client: Client, guest: Guest, hostname: str,
                   macs: list[str] | None = None) -> str:
    """Start the guest through the API (`client` may) and read its console until the banner
    naming `hostname`; the console read, asserted to hold the banner. `macs`: the guest
    starts with its NICs (on a bridge) and the banner must name these MACs; None: the NICs
    are removed through the API first."""
    if macs is None:
        for mac in defined_macs(guest):
            removed = client.delete(f"/api/v1/guests/{guest.pk}/nics/{mac}/")
            assert removed.status_code == 200, removed.json()
    started = client.post(f"/api/v1/guests/{guest.pk}/start/", content_type="application/json")
    assert started.status_code == 200, started.json()
    expected = f"{BOOT_DISK_BANNER}: hostname={hostname}"
    wanted = f" macs={','.join(macs) if macs else 'none'}"
    console = read_console_until(guest.host.virt_target, str(guest.uuid), wanted,
                                 BOOT_TIMEOUT)
    line = next((x for x in console.splitlines() if expected in x), "")
    assert line, console[-3000:]
    assert wanted in line, line  # the guest sees the kept MACs
    return console


def remove_guest(guest: Guest, volumes: list[str]) -> None:
    """Stop and undefine the guest on its host, delete its volume files (the lab's pools
    are this machine's directories)."""
    target = guest.host.virt_target
    for step in (domains.destroy, domains.undefine):
        try:
            step(target, str(guest.uuid))
        except VirtError:
            pass
    for path in volumes:
        Path(path).unlink(missing_ok=True)
