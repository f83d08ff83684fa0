"""Snapshots and the exclusivity rule on a real libvirt/QEMU lab host, through the API.

The image content is read and changed with qemu-io/qemu-img (qemu-utils): a qcow2 disk gets
random data, a snapshot is taken, the data is overwritten, the guest is reverted, and the
data region's checksum is the original one again; once with the guest shut off (internal
disk snapshot made with qemu-img by libvirt) and once running (QEMU's savevm: memory too).
The LVM copy-back revert runs here for real between two volumes of a dir pool (this
machine has no device-mapper for real logical volumes)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.snapshots.jobs import create_body, revert_body
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt_domains
from hosts.virt import snapshots as virt
from hosts.virt.console import read_console_until
from lab.bootfiles import lab_boot_files
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_BANNER, tiny_guest_cmdline
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024
DATA = 4 * MIB  # the region the test writes and checks


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def run(response: Any, body: Any) -> Job:
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")  # what the Celery worker runs
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    return job


@pytest.fixture
def local_pool(lab_hosts: list[Any]) -> Pool:
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    return Pool.objects.select_related("host").get(host=host, name="local")


def new_volume(client: Client, pool: Pool, fmt: str, size: str = "16M") -> Volume:
    name = f"t-{uuid.uuid4().hex[:8]}.{'img' if fmt == 'raw' else fmt}"
    created = post(client, "/api/v1/volumes/", {"pool": pool.pk, "name": name, "size": size,
                                                "format": fmt})
    assert created.status_code == 201, created.json()
    return Volume.objects.get(pk=created.json()["id"])


def tiny_guest(client: Client, pool: Pool, prefix: str, *volumes: Volume) -> Guest:
    kernel, initrd = lab_boot_files(pool.host)
    created = post(client, "/api/v1/guests/", {
        "name": f"{prefix}-{uuid.uuid4().hex[:6]}", "host": pool.host_id, "type": "hvm",
        "memory_mib": 160, "kernel_file": kernel, "initrd_file": initrd,
        "cmdline": tiny_guest_cmdline(), "disks": [{"volume": v.pk} for v in volumes]})
    assert created.status_code == 201, created.json()
    return Guest.objects.select_related("host").get(pk=created.json()["id"])


def remove(client: Client, *guests: Guest) -> None:
    for guest in guests:
        try:
            virt_domains.destroy(VirtTarget(guest.host.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
        client.delete(f"/api/v1/guests/{guest.pk}/?confirm={guest.name}&delete_volumes=true")


def qemu_write(path: str, source: Path, offset: int, fmt: str = "qcow2") -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c",
                    f"write -s {source} {offset} {source.stat().st_size}", path],
                   check=True, capture_output=True)


def data_checksum(path: str, tmp: Path, *, running: bool = False) -> str:
    """sha256 of the guest-visible first DATA bytes of a qcow2 image."""
    raw = tmp / f"{uuid.uuid4().hex}.raw"
    share = ["-U"] if running else []  # read the image of a running guest too
    subprocess.run(["qemu-img", "convert", *share, "-f", "qcow2", "-O", "raw", path, str(raw)],
                   check=True)
    with raw.open("rb") as handle:
        digest = hashlib.sha256(handle.read(DATA)).hexdigest()
    raw.unlink()
    return digest


def random_file(tmp: Path, size: int) -> Path:
    path = tmp / f"{uuid.uuid4().hex}.bin"
    path.write_bytes(os.urandom(size))
    return path


def image_snapshots(path: str) -> str:
    return subprocess.run(["qemu-img", "snapshot", "-U", "-l", path], check=True,
                          capture_output=True, text=True).stdout


def test_qcow2_snapshot_of_a_shut_off_guest_reverts_the_data(
        admin_client: Client, local_pool: Pool, tmp_path: Path) -> None:
    disk = new_volume(admin_client, local_pool, "qcow2")
    qemu_write(disk.path, random_file(tmp_path, DATA), 0)
    original = data_checksum(disk.path, tmp_path)
    guest = tiny_guest(admin_client, local_pool, "snap", disk)
    base = f"/api/v1/guests/{guest.pk}/snapshots"
    try:
        listed = admin_client.get(f"{base}/").json()
        assert listed["capability"]["kind"] == "internal"
        assert not listed["capability"]["with_memory"]
        taken = post(admin_client, f"{base}/", {"name": "clean", "description": "before"})
        assert taken.status_code == 201, taken.json()
        assert taken.json()["kind"] == "internal" and not taken.json()["with_memory"]
        assert "clean" in image_snapshots(disk.path)  # inside the qcow2 image itself

        qemu_write(disk.path, random_file(tmp_path, 2 * MIB), MIB)  # change the data
        assert data_checksum(disk.path, tmp_path) != original

        reverted = post(admin_client, f"{base}/clean/revert/")
        assert reverted.status_code == 200, reverted.json()
        assert reverted.json()["state"] == "shutoff"
        assert data_checksum(disk.path, tmp_path) == original

        assert admin_client.delete(f"{base}/clean/").status_code == 204
        assert "clean" not in image_snapshots(disk.path)
    finally:
        remove(admin_client, guest)


def test_qcow2_snapshot_of_a_running_guest_keeps_its_memory(
        admin_client: Client, local_pool: Pool, tmp_path: Path) -> None:
    disk = new_volume(admin_client, local_pool, "qcow2")
    qemu_write(disk.path, random_file(tmp_path, DATA), 0)
    original = data_checksum(disk.path, tmp_path)
    guest = tiny_guest(admin_client, local_pool, "snaprun", disk)
    uri, dom = guest.host.uri, str(guest.uuid)
    base = f"/api/v1/guests/{guest.pk}/snapshots"
    try:
        assert post(admin_client, f"/api/v1/guests/{guest.pk}/start/").status_code == 200
        assert TINY_GUEST_BANNER in read_console_until(VirtTarget(uri, allow_insecure=True),
                                                       dom, TINY_GUEST_BANNER, 90)
        job = run(post(admin_client, f"{base}/", {"name": "live"}), create_body)
        assert job.result["kind"] == "internal"
        [taken] = admin_client.get(f"{base}/").json()["results"]
        assert taken["with_memory"] and taken["guest_state"] == "running"

        # Off, and the disk changed behind the guest's back.
        assert post(admin_client, f"/api/v1/guests/{guest.pk}/destroy/").status_code == 200
        qemu_write(disk.path, random_file(tmp_path, MIB), 0)
        assert data_checksum(disk.path, tmp_path) != original

        job = run(post(admin_client, f"{base}/live/revert/"), revert_body)
        assert job.result["state"] == "running"  # back where it was, memory included
        assert "tick" in read_console_until(VirtTarget(uri, allow_insecure=True), dom, "tick", 30)
        assert data_checksum(disk.path, tmp_path, running=True) == original
        assert admin_client.delete(f"{base}/live/").status_code == 204
        assert admin_client.get(f"{base}/").json()["results"] == []
    finally:
        remove(admin_client, guest)


def test_lvm_copy_back_writes_only_what_changed(admin_client: Client, local_pool: Pool,
                                                tmp_path: Path) -> None:
    """The LVM revert's copy-back through libvirt streams, between two real volumes."""
    origin = new_volume(admin_client, local_pool, "raw", "8M")
    content = os.urandom(8 * MIB)
    Path(origin.path).write_bytes(content)
    snapshot = new_volume(admin_client, local_pool, "raw", "8M")
    Path(snapshot.path).write_bytes(content)
    with open(origin.path, "r+b") as handle:  # the guest changes three places
        for offset in (0, 3 * MIB + 100, 8 * MIB - 10):
            handle.seek(offset)
            handle.write(b"changed!!!")
    assert Path(origin.path).read_bytes() != content
    seen: list[str] = []
    result = virt.copy_back(VirtTarget(local_pool.host.uri, allow_insecure=True),
                            snapshot.path, origin.path, 8 * MIB,
                            progress=lambda phase, done, total: seen.append(phase))
    assert Path(origin.path).read_bytes() == content
    assert result.compared == 8 * MIB and result.ranges == 3
    assert result.written == 3 * virt.BLOCK  # one 4 KiB block each, nothing else
    assert seen[0] == "compare" and seen[-1] == "write"
    for volume in (origin, snapshot):
        assert admin_client.delete(f"/api/v1/volumes/{volume.pk}/").status_code == 204


def test_exclusivity_on_a_lab_host(admin_client: Client, local_pool: Pool) -> None:
    data = new_volume(admin_client, local_pool, "raw")
    first = tiny_guest(admin_client, local_pool, "excl-a", data)
    second = tiny_guest(admin_client, local_pool, "excl-b")
    third = tiny_guest(admin_client, local_pool, "excl-c", data)
    api = "/api/v1/guests"
    try:
        assert post(admin_client, f"{api}/{first.pk}/start/").status_code == 200
        owner = f"attached writable to guest '{first.name}' on host '{first.host}'"
        attach = post(admin_client, f"{api}/{second.pk}/disks/", {"volume": data.pk})
        assert attach.status_code == 409 and owner in attach.json()["detail"]
        refused = post(admin_client, f"{api}/{third.pk}/start/")
        assert refused.status_code == 409 and owner in refused.json()["detail"]

        # A reader is no second writer, but QEMU's own image locking refuses to open an
        # image another QEMU writes (unless both share it): the message says so plainly.
        readonly = post(admin_client, f"{api}/{second.pk}/disks/",
                        {"volume": data.pk, "readonly": True})
        assert readonly.status_code == 200, readonly.json()
        locked = post(admin_client, f"{api}/{second.pk}/start/")
        assert locked.status_code == 409
        assert "another running guest has the image open for writing" in \
            locked.json()["detail"]
        target = next(d["target"] for d in readonly.json()["guest"]["disks"]
                      if d["source"] == data.path)
        assert admin_client.delete(f"{api}/{second.pk}/disks/{target}/").status_code == 200

        # Once the writer stops, the other guest may start.
        assert post(admin_client, f"{api}/{first.pk}/destroy/").status_code == 200
        started = post(admin_client, f"{api}/{third.pk}/start/")
        assert started.status_code == 200 and started.json()["state"] == "running"
        assert post(admin_client, f"{api}/{second.pk}/start/").status_code == 200

        # Read-only disks never conflict; shareable ones are shared by QEMU too (share-rw).
        media = new_volume(admin_client, local_pool, "raw")
        quorum = new_volume(admin_client, local_pool, "raw")
        for guest in (second, third):
            for volume, option in ((media, "readonly"), (quorum, "shareable")):
                attached = post(admin_client, f"{api}/{guest.pk}/disks/",
                                {"volume": volume.pk, option: True})
                assert attached.status_code == 200, attached.json()
                assert attached.json()["applied"] == "live"
    finally:
        remove(admin_client, first, second, third)
