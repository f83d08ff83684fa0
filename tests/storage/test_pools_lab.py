"""Dir pools for real on the lab's libvirt/QEMU hosts: build (mkdir), start/stop,
autostart, a volume, delete refused while a guest uses it, delete with the directory; and
the lab's shared directory (standing in for NFS) recognised as one storage on both hosts."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from hosts.virt import VirtTarget
from hosts.virt.pools import list_pools
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from storage.sharing import disk_on_target, hosts_sharing, shared_pool_on

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


@pytest.fixture
def lab(lab_hosts: list[Any]) -> list[Any]:
    hosts = [register_lab_host(lab_host)[0] for lab_host in lab_hosts]
    for host in hosts:
        reconcile_pools(host)
    return hosts


def test_the_lab_shared_directory_is_one_storage_on_both_hosts(admin_client: Client,
                                                                lab: list[Any]) -> None:
    one, two = (Pool.objects.get(host=host, name="lab-shared") for host in lab)
    assert one.shared and one.shared_declared and one.storage_key == two.storage_key
    assert shared_pool_on(one, lab[1]) == two and shared_pool_on(two, lab[0]) == one
    assert {h.pk for h in hosts_sharing(one)} == {lab[0].pk, lab[1].pk}
    listed = admin_client.get(f"/api/v1/pools/{one.pk}/").json()
    assert [s["pool"] for s in listed["shared_with"]] == [two.pk]
    local = Pool.objects.get(host=lab[0], name="local")
    assert not local.shared and shared_pool_on(local, lab[1]) is None
    disk = f"{one.target_path}/some-guest.img"
    there = disk_on_target(lab[0], disk, lab[1])
    assert there is not None and there.pool == two and there.path == disk
    assert disk_on_target(lab[0], f"{local.target_path}/x.img", lab[1]) is None
    page = admin_client.get(f"/storage/pools/{one.pk}/").content.decode()
    assert f"{lab[1].name}/lab-shared" in page


def test_dir_pool_lifecycle_on_a_lab_host(admin_client: Client, lab: list[Any]) -> None:
    host = lab[0]
    local = Pool.objects.get(host=host, name="local")
    name = f"t-pool-{uuid.uuid4().hex[:6]}"
    directory = Path(local.target_path).parent / name
    made = post(admin_client, "/api/v1/pools/", {"host": host.pk, "type": "dir", "name": name,
                                                 "target_path": str(directory),
                                                 "build": True})
    assert made.status_code == 201, made.json()
    pool = made.json()
    url = pool["url"]
    guest_url = None
    try:
        assert directory.is_dir() and pool["active"] and pool["autostart"]
        assert pool["capacity"] > 0 and pool["available"] > 0
        assert post(admin_client, f"{url}autostart/", {"enabled": False}).json()[
            "autostart"] is False
        assert post(admin_client, f"{url}stop/").json()["active"] is False
        assert post(admin_client, f"{url}start/").json()["active"] is True

        vol = post(admin_client, "/api/v1/volumes/", {"pool": pool["id"], "name": "disk.img",
                                                      "size": "4M"})
        assert vol.status_code == 201, vol.json()
        assert (directory / "disk.img").exists()
        grown = post(admin_client, f"/api/v1/volumes/{vol.json()['id']}/resize/",
                     {"size": "8M"})
        assert grown.status_code == 200 and grown.json()["capacity"] == 8 * 1024**2
        refreshed = post(admin_client, f"{url}refresh/").json()
        assert refreshed["volumes"] == 1

        guest = post(admin_client, "/api/v1/guests/", {
            "name": name, "host": host.pk, "type": "hvm", "memory_mib": 64,
            "disks": [{"volume": vol.json()["id"]}]})
        assert guest.status_code == 201, guest.json()
        guest_url = guest.json()["url"]
        refused = admin_client.delete(url)
        assert refused.status_code == 409
        assert f"guest '{name}' (shut off, {directory}/disk.img)" in refused.json()["detail"]
        with_dir = admin_client.delete(f"{url}?delete_storage=1")
        assert with_dir.status_code == 409

        assert admin_client.delete(f"{guest_url}?confirm={name}").status_code == 204
        guest_url = None
        kept = admin_client.delete(f"{url}?delete_storage=1")
        assert kept.status_code == 409 and "delete them first" in kept.json()["detail"]
        assert admin_client.delete(f"/api/v1/volumes/{vol.json()['id']}/").status_code == 204
        assert admin_client.delete(f"{url}?delete_storage=1").status_code == 204
        assert not directory.exists()
        assert name not in [p.name for p in list_pools(VirtTarget(host.uri, allow_insecure=True))]
    finally:
        if guest_url:
            admin_client.delete(f"{guest_url}?confirm={name}&delete_volumes=true")
        if Pool.objects.filter(pk=pool["id"]).exists():
            admin_client.delete(url)
