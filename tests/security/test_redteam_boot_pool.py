"""The pool serving a host's boot files directory is the administrators' (independent check
of issue 18): libvirt lists a symlink there exactly like its target and follows it for every
read and write, so an operator must not upload, wipe, resize, delete, clone, download or
create its volumes (403 with the reason, API and pages), and nobody makes a boot file a
guest's disk or CD-ROM, a save pool, an ISO library or an import target. On the demo host
(libvirt's test driver)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from hosts.models import Host
from storage.bootfiles import boot_pool
from storage.models import Pool, Volume
from tests.bootfiles import KERNEL, demo_boot_files
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


@pytest.fixture
def booted(demo: Host, admin_user: Any) -> Host:
    demo_boot_files(demo, admin_user)
    demo.refresh_from_db()
    return demo


@pytest.fixture
def kernel(booted: Host) -> Volume:
    pool = boot_pool(booted)
    assert pool is not None
    return Volume.objects.get(pool=pool, name=KERNEL)


def _volume_calls(volume: Volume) -> list[tuple[str, str, Any]]:
    url = f"/api/v1/volumes/{volume.pk}/"
    return [("post", url + "resize/", {"size": volume.capacity * 2}),
            ("post", url + "clone/", {"name": "copy-of-kernel"}),
            ("post", url + "wipe/", {}),
            ("delete", url, None),
            ("get", url + "content/", None),
            ("put", url + "content/", b"\0" * 4096),
            ("post", "/api/v1/volumes/", {"pool": volume.pool_id, "name": "planted",
                                          "size": "1M"})]


def _call(client: Client, method: str, url: str, body: Any) -> Any:
    if method == "put":
        return client.put(url, body, content_type="application/octet-stream")
    if method == "post":
        return post(client, url, body)
    return getattr(client, method)(url)


@pytest.mark.parametrize("index", range(7), ids=["resize", "clone", "wipe", "delete",
                                                 "download", "upload", "create"])
def test_an_operator_gets_403_on_the_boot_files_pool(operator_client: Client,
                                                     kernel: Volume, index: int) -> None:
    method, url, body = _volume_calls(kernel)[index]
    jobs = Job.objects.count()
    response = _call(operator_client, method, url, body)
    assert response.status_code == 403, response.content
    assert "boot files directory" in response.json()["detail"]
    assert "only an administrator" in response.json()["detail"]
    assert Volume.objects.filter(pk=kernel.pk, capacity=kernel.capacity).exists()
    assert not Volume.objects.filter(name__in=("planted", "copy-of-kernel")).exists()
    assert Job.objects.count() == jobs


@pytest.mark.parametrize("action", ["stop", "autostart"])
def test_an_operator_cannot_stop_the_boot_files_pool(operator_client: Client, kernel: Volume,
                                                     action: str) -> None:
    response = post(operator_client, f"/api/v1/pools/{kernel.pool_id}/{action}/",
                    {"enabled": False})
    assert response.status_code == 403, response.content
    assert Pool.objects.get(pk=kernel.pool_id).active


@pytest.mark.parametrize("action", ["resize", "clone", "wipe", "delete"])
def test_the_pages_refuse_an_operator_too(operator_client: Client, kernel: Volume,
                                         action: str) -> None:
    response = operator_client.post(f"/storage/volumes/{kernel.pk}/{action}/",
                                    {"size": "64M", "name": "copy-of-kernel"})
    assert response.status_code == 403
    assert Volume.objects.filter(pk=kernel.pk, capacity=kernel.capacity).exists()
    response = operator_client.post(f"/storage/pools/{kernel.pool_id}/volumes/new/",
                                    {"name": "planted", "size": "1M"})
    assert response.status_code == 403
    assert not Volume.objects.filter(name__in=("planted", "copy-of-kernel")).exists()


def test_a_viewer_gets_nothing_either(viewer_client: Client, kernel: Volume) -> None:
    for method, url, body in _volume_calls(kernel):
        assert _call(viewer_client, method, url, body).status_code == 403, (method, url)


def test_an_admin_may_manage_the_boot_files(admin_client: Client, kernel: Volume) -> None:
    made = post(admin_client, "/api/v1/volumes/", {"pool": kernel.pool_id,
                                                   "name": "vmlinuz-new", "size": "1M"})
    assert made.status_code == 201, made.json()
    download = admin_client.get(f"/api/v1/volumes/{kernel.pk}/content/")
    assert download.status_code != 403, download.content
    assert admin_client.delete(f"/api/v1/volumes/{made.json()['id']}/").status_code == 204


def test_a_boot_file_is_never_a_disk_or_cdrom(admin_client: Client, operator_client: Client,
                                             kernel: Volume, booted: Host) -> None:
    from guests.models import Guest

    guest = Guest.objects.filter(host=booted).exclude(name="Domain-0").first()
    assert guest is not None
    for client in (admin_client, operator_client):
        response = post(client, f"/api/v1/guests/{guest.pk}/disks/", {"volume": kernel.pk})
        assert response.status_code == 409, response.json()
        assert "kernel or initrd" in response.json()["detail"]
        for disk in ({"volume": kernel.pk}, {"iso": kernel.pk},
                     {"pool": kernel.pool_id, "size_gib": 0.01}):
            response = post(client, "/api/v1/guests/", {
                "name": "bootdisk", "host": booted.pk, "type": "pv", "memory_mib": 128,
                "bootloader": "pygrub", "disks": [disk]})
            assert response.status_code == 400, (disk, response.json())
            assert "boot files directory" in str(response.json()), response.json()
    assert not Guest.objects.filter(name="bootdisk").exists()
    assert not Volume.objects.filter(pool=kernel.pool, name__startswith="bootdisk").exists()


def test_the_boot_files_pool_is_no_iso_library(operator_client: Client, admin_client: Client,
                                              kernel: Volume) -> None:
    for client in (operator_client, admin_client):
        response = post(client, f"/api/v1/pools/{kernel.pool_id}/iso-library/",
                        {"enabled": True})
        assert response.status_code in (403, 409), response.content
    assert not Pool.objects.get(pk=kernel.pool_id).iso_library


def test_the_boot_files_pool_takes_no_save_image(operator_client: Client, kernel: Volume,
                                                booted: Host) -> None:
    from guests.models import Guest
    from guests.save_images import _unsuitable

    guest = Guest.objects.filter(host=booted).exclude(name="Domain-0").first()
    assert "boot files directory" in _unsuitable(kernel.pool, guest)
