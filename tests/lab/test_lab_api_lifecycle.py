"""The product on a real libvirt/QEMU lab host, through the API: create, start, pause,
resume, save/restore (jobs), hot-plug a disk, shut down (job), delete with volumes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.slow_actions import restore_body, save_body, shutdown_body
from hosts.virt import VirtTarget
from hosts.virt.console import read_console_until
from hosts.virt.pools import list_pools
from hosts.virt.volumes import create_volume
from lab.bootfiles import lab_boot_files
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_BANNER, tiny_guest_cmdline
from storage.inventory import reconcile_pools
from storage.models import Volume
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def run(response: Any, body: Any) -> Job:
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")  # what the Celery worker runs
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    return job


def create_tiny_guest(lab_host: Any, client: Client, prefix: str,
                      **extra: Any) -> tuple[Any, Guest]:
    """The lab host enrolled, and a new tiny guest defined on it through the API."""
    host, _ = register_lab_host(lab_host)
    kernel, initrd = lab_boot_files(host)
    created = post(client, "/api/v1/guests/", {
        "name": f"{prefix}-{uuid.uuid4().hex[:6]}", "host": host.pk, "type": "hvm",
        "memory_mib": 160, "kernel_file": kernel, "initrd_file": initrd,
        "cmdline": tiny_guest_cmdline(), **extra,
    })
    assert created.status_code == 201, created.json()
    return host, Guest.objects.get(pk=created.json()["id"])


def test_guest_lifecycle_through_the_api(lab_hosts: list[Any], admin_client: Client) -> None:
    host, guest = create_tiny_guest(lab_hosts[0], admin_client, "api")
    name, pk = guest.name, guest.pk
    base = f"/api/v1/guests/{pk}"
    try:
        assert post(admin_client, f"{base}/start/").json()["state"] == "running"
        console = read_console_until(VirtTarget(host.uri, allow_insecure=True),
                                     str(guest.uuid), TINY_GUEST_BANNER, 90)
        assert TINY_GUEST_BANNER in console
        assert post(admin_client, f"{base}/pause/").json()["state"] == "paused"
        assert post(admin_client, f"{base}/resume/").json()["state"] == "running"

        run(post(admin_client, f"{base}/save/"), save_body)
        assert Guest.objects.get(pk=pk).state == "shutoff"
        run(post(admin_client, f"{base}/restore/"), restore_body)
        assert Guest.objects.get(pk=pk).state == "running"

        extra = create_volume(VirtTarget(host.uri, allow_insecure=True),
                              "local", f"{name}-extra.img", 16 * 1024**2)
        reconcile_pools(host)
        volume = Volume.objects.get(pool__host=host, path=extra.path)
        attached = post(admin_client, f"{base}/disks/", {"volume": volume.pk})
        assert attached.status_code == 200, attached.json()
        assert attached.json()["applied"] == "live"  # QEMU hot-plugs virtio disks
        assert extra.path in [d["source"] for d in attached.json()["guest"]["disks"]]

        job = run(post(admin_client, f"{base}/shutdown/", {"timeout": 90}), shutdown_body)
        assert job.result["state"] == "shutoff"
    finally:
        from hosts.virt import VirtError
        from hosts.virt import domains as virt

        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
    deleted = admin_client.delete(f"{base}/?confirm={name}&delete_volumes=true")
    assert deleted.status_code == 204
    pools = list_pools(VirtTarget(host.uri, allow_insecure=True))
    remaining = {v.path for p in pools for v in p.volumes}
    assert extra.path not in remaining


def test_managed_save_then_start_resumes(lab_hosts: list[Any], admin_client: Client) -> None:
    host, guest = create_tiny_guest(lab_hosts[0], admin_client, "ms")
    base = f"/api/v1/guests/{guest.pk}"
    try:
        post(admin_client, f"{base}/start/")
        assert TINY_GUEST_BANNER in read_console_until(VirtTarget(host.uri, allow_insecure=True),
                                                       str(guest.uuid),
                                                       TINY_GUEST_BANNER, 90)
        run(post(admin_client, f"{base}/managedsave/"), _managed_save_body())
        saved = admin_client.get(f"{base}/").json()
        assert saved["state"] == "shutoff" and saved["has_managed_save"]
        resumed = post(admin_client, f"{base}/start/").json()
        assert resumed["state"] == "running" and not resumed["has_managed_save"]
        # It resumed where it was: the heartbeat goes on, no fresh boot banner needed.
        assert "tick" in read_console_until(VirtTarget(host.uri, allow_insecure=True),
                                            str(guest.uuid), "tick", 30)
    finally:
        from hosts.virt import VirtError
        from hosts.virt import domains as virt

        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))


def _managed_save_body() -> Any:
    from guests.slow_actions import managed_save_body

    return managed_save_body


def test_uefi_guest_boots_with_the_hosts_ovmf(lab_hosts: list[Any],
                                              admin_client: Client) -> None:
    """firmware=efi: libvirt picks the host's OVMF build (its firmware descriptors); the
    guest boots through it (OVMF loads the kernel) and gets its own NVRAM, deleted with it."""
    from hosts.virt import VirtError
    from hosts.virt import domains as virt
    from hosts.virt.connection import get_connection

    host, guest = create_tiny_guest(lab_hosts[0], admin_client, "efi", firmware="efi",
                                    memory_mib=256)
    base = f"/api/v1/guests/{guest.pk}"
    try:
        assert post(admin_client, f"{base}/start/").json()["state"] == "running"
        live = get_connection(VirtTarget(host.uri, allow_insecure=True)).lookupByUUIDString(
            str(guest.uuid)).XMLDesc(0)
        assert "OVMF" in live and "<nvram" in live, live
        console = read_console_until(VirtTarget(host.uri, allow_insecure=True),
                                     str(guest.uuid), TINY_GUEST_BANNER, 240)
        assert TINY_GUEST_BANNER in console
        assert post(admin_client, f"{base}/destroy/").json()["state"] == "shutoff"
        deleted = admin_client.delete(f"{base}/?confirm={guest.name}")
        assert deleted.status_code == 204, deleted.content
        with pytest.raises(VirtError):
            virt.get_domain(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
    finally:
        try:
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
            virt.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
