"""A VMware VM becomes a Xen PV guest on a real Xen 4.17 dom0 and boots its own kernel.

The source is the lab's bootable disk (lab.bootdisk: MBR, SYSLINUX on a FAT /boot, an ext4
root that fstab and the kernel command line name ``/dev/sda2``, consoles on ttyS0 and tty0)
as a VMware directory. The lab's dom0s have no HVM (no VT-x under TCG), so the import
chooses PV by itself, converts the copy (root by UUID, console on hvc0) and defines a
pygrub guest; started, pygrub reads extlinux.conf from the disk and the guest prints its
own hostname, read here through the app's text console websocket as the browser does.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.v2v.import_job import run_import
from conversions.v2v.sources import import_root
from guests.models import Guest
from hosts.models import Host
from hosts.virt import domain_xml as dx
from hosts.virt import domains as virt
from lab.bootdisk import BOOT_DISK_BANNER, ensure_boot_disk
from lab.xen.manager import XenHost
from lab.xen.register import register_xen_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from tests.conversions.v2v.test_boot_lab import MAC, vmware_dir
from tests.xen.helpers import post, remove_quietly, run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(1200)]


@pytest.fixture
def enrolled(xen_host: XenHost) -> Host:
    host, _ = register_xen_host(xen_host)
    return host


@pytest.fixture
def area() -> Iterator[Path]:
    path = import_root() / f"t-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_vmware_vm_becomes_a_pv_guest_and_boots_via_pygrub(
        enrolled: Host, admin_client_tx: Client, console: Any, area: Path) -> None:
    disk = ensure_boot_disk("src-xen", "device")
    name = f"v2v-{uuid.uuid4().hex[:6]}"
    source = vmware_dir(area, disk, "monolithicSparse", name)
    reconcile_pools(enrolled)
    pool = Pool.objects.get(host=enrolled, name="default")
    # No type asked for: the dom0 has no HVM, the guest can run as PV.
    job = run(post(admin_client_tx, "/api/v1/imports/", {
        "source": source, "host": enrolled.pk, "pool": pool.pk, "format": "raw",
        "name": name, "memory_mib": 192}), run_import)
    assert job.result["type"] == dx.PV
    notes = job.result["devices"]
    assert notes[0].startswith("Type: Xen PV, booted by pygrub"), notes
    assert any("/dev/sda2 → UUID=" in note for note in notes), notes
    assert any("console=hvc0 added" in note for note in notes), notes
    guest = Guest.objects.get(pk=job.result["guest"])
    base = f"/api/v1/guests/{guest.pk}"
    try:
        defined = virt.get_domain(enrolled.virt_target, str(guest.uuid)).xml
        assert defined.os_type == dx.PV
        assert [(d.target, d.bus) for d in defined.disks] == [("xvda", "xen")]
        assert [nic.mac for nic in defined.nics] == [MAC]
        # The dom0 has no network for the NIC: it goes, through the API, before the start.
        removed = admin_client_tx.delete(f"{base}/nics/{MAC}/")
        assert removed.status_code == 200, removed.json()
        started = post(admin_client_tx, f"{base}/start/")
        assert started.status_code == 200, started.json()
        banner = f"{BOOT_DISK_BANNER}: hostname=src-xen root="
        seen = console(guest, banner, "not found")
        assert banner in seen, seen[-3000:]
        stopped = post(admin_client_tx, f"{base}/destroy/")
        assert stopped.status_code == 200, stopped.json()
        deleted = admin_client_tx.delete(f"{base}/?confirm={guest.name}&delete_volumes=true")
        assert deleted.status_code == 204, deleted.content
    finally:
        remove_quietly(enrolled, str(guest.uuid))
