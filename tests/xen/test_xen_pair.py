"""Two real Xen dom0s: a storage network between them, storage both can write, and live
migration of a running PV guest from one to the other and back.

xen1 exports its image store (its ``default`` dir pool) over NFS to the storage network; on
xen2 the app's ``netfs`` pool type mounts it for real. A volume made through the API in
xen2's netfs pool, filled through xen2 and read back through xen1's own dir pool, proves
both hosts write the same storage (what live migration of a guest's disks needs).

Live migration goes the way the app sends it to any Xen host: peer to peer, the source dom0's
libvirtd reaching the target over xen+ssh on the storage network (the target's migration URI,
set at enrolment), libxl streaming the memory to the target's hostname there.

Skipped with ``XENWEB_TEST_XEN_PAIR=0`` (one dom0 only).
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.test import Client

from guests.migration_job import migrate_body
from guests.models import Guest
from hosts.lab.tinyguest import TINY_GUEST_BANNER, TINY_GUEST_TICK
from hosts.lab.xen.manager import XenHost
from hosts.lab.xen.register import register_xen_host
from hosts.lab.xen.remote import run_on
from hosts.lab.xen.shared import export_source
from hosts.models import Host
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from tests.xen.helpers import console_until, create_pv_guest, post, remove_quietly, run
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(1200)]

MOUNT_POINT = "/var/lib/xen/shared"


def test_storage_network_links_the_dom0s(xen_pair: list[XenHost]) -> None:
    xen1, xen2 = xen_pair
    assert (xen1.storage_address, xen2.storage_address) == ("10.99.0.1", "10.99.0.2")
    addresses = run_on(xen2, ["cat", "/proc/net/fib_trie"]).stdout  # dom0 has no iproute2
    assert "10.99.0.2" in addresses, addresses
    reach = run_on(xen2, ["timeout", "10", "bash", "-c", "</dev/tcp/10.99.0.1/22"],
                   check=False)
    assert reach.returncode == 0, reach.stderr


def test_netfs_pool_shares_xen1_storage_with_xen2(
    xen_pair: list[XenHost], admin_client: Client
) -> None:
    xen1, xen2 = xen_pair
    host1, _ = register_xen_host(xen1)
    host2, _ = register_xen_host(xen2)
    server, export = export_source(xen1)
    name = "xen1-images"
    # The app's own netfs pool type, through the API: libvirt mounts the NFS export.
    created_pool = post(admin_client, "/api/v1/pools/", {
        "host": host2.pk, "type": "netfs", "name": name, "source_host": server,
        "source_dir": export, "target_path": MOUNT_POINT, "build": True})
    assert created_pool.status_code == 201, created_pool.json()
    pool_id = created_pool.json()["id"]
    volume_name = f"shared-{uuid.uuid4().hex[:6]}.img"
    try:
        info = created_pool.json()
        assert (info["type"], info["active"]) == ("netfs", True) and info["storage_key"]
        mounted = run_on(xen2, ["findmnt", "-n", "-o", "FSTYPE,SOURCE", MOUNT_POINT]).stdout
        assert mounted.split()[0].startswith("nfs") and f"{server}:{export}" in mounted

        netfs = Pool.objects.get(pk=pool_id)
        assert netfs.pool_type == "netfs" and netfs.active
        created = post(admin_client, "/api/v1/volumes/", {
            "pool": netfs.pk, "name": volume_name, "size": "4M"})
        assert created.status_code == 201, created.json()
        data = os.urandom(1024 * 1024)
        uploaded = admin_client.put(f"/api/v1/volumes/{created.json()['id']}/content/", data,
                                    content_type="application/octet-stream")
        assert uploaded.status_code == 201, uploaded.json()

        # xen1 sees the file xen2 wrote in its own dir pool, byte for byte.
        reconcile_pools(host1)
        default1 = Pool.objects.get(host=host1, name="default")
        refreshed = post(admin_client, f"/api/v1/pools/{default1.pk}/refresh/")
        assert refreshed.status_code == 200, refreshed.json()
        on_xen1 = Volume.objects.get(pool=default1, name=volume_name)
        assert on_xen1.path == f"{export}/{volume_name}" and on_xen1.capacity == len(data)
        read = admin_client.get(f"/api/v1/volumes/{on_xen1.pk}/content/")
        assert read.status_code == 200
        assert b"".join(read.streaming_content) == data

        # Deleted from xen1: gone from xen2's pool too.
        assert admin_client.delete(f"/api/v1/volumes/{on_xen1.pk}/").status_code == 204
        post(admin_client, f"/api/v1/pools/{netfs.pk}/refresh/")
        assert not Volume.objects.filter(pool=netfs, name=volume_name).exists()
    finally:
        run_on(xen1, ["rm", "-f", f"{export}/{volume_name}"], check=False)
        deleted = admin_client.delete(f"/api/v1/pools/{pool_id}/")
        assert deleted.status_code == 204, deleted.content
    assert run_on(xen2, ["findmnt", MOUNT_POINT], check=False).returncode != 0


def xl_names(xen_host: XenHost) -> set[str]:
    lines = run_on(xen_host, ["xl", "list"]).stdout.splitlines()[1:]
    return {line.split()[0] for line in lines if line.strip()}


def migrate(client: Client, guest: Guest, target: Host, mode: str, *,
            succeed: bool = True) -> Job:
    base = f"/api/v1/guests/{guest.pk}/migrate"
    preflight = client.get(f"{base}/preflight/?host={target.pk}&mode={mode}")
    assert preflight.status_code == 200, preflight.content
    answer = preflight.json()
    assert answer["ok"], answer["checks"]
    # The dialog offers only what libvirt's Xen driver can do.
    assert answer["features"]["supported"] and not answer["features"]["postcopy"]
    job = run(post(client, f"{base}/", {"host": target.pk, "mode": mode}), migrate_body,
              succeed=succeed)
    if succeed:
        assert job.result["target"] == target.pk, job.result
    return job


def defined_on(xen_host: XenHost) -> set[str]:
    return set(run_on(xen_host, ["virsh", "-c", "xen:///system", "list", "--all",
                                 "--name"]).stdout.split())


def test_migration_between_the_xen_hosts(
    xen_pair: list[XenHost], admin_client: Client
) -> None:
    xen1, xen2 = xen_pair
    host1, _ = register_xen_host(xen1)
    host2, _ = register_xen_host(xen2)
    assert host2.migration_uri == "xen+ssh://root@10.99.0.2/system"
    shown = admin_client.get(f"/api/v1/hosts/{host2.pk}/").json()
    assert shown["migration_uri"] == host2.migration_uri
    # Diskless: kernel and initrd sit at the same path in both dom0s.
    guest = create_pv_guest(admin_client, host1, "move")
    try:
        assert post(admin_client, f"/api/v1/guests/{guest.pk}/start/").status_code == 200
        console_until(host1, guest, TINY_GUEST_BANNER)

        # Live migration of a PV guest needs Xen's shadow paging (log-dirty); Debian 12's
        # Xen 4.17 is built without it. Then the job fails with the way out, and the guest
        # runs on where it was.
        config = run_on(xen1, ["sh", "-c", "cat /boot/xen-*.config"]).stdout
        if "CONFIG_SHADOW_PAGING=y" in config:
            migrate(admin_client, guest, host2, "live")
            migrate(admin_client, Guest.objects.get(pk=guest.pk), host1, "live")
        else:
            failed = migrate(admin_client, guest, host2, "live", succeed=False)
            assert failed.state == "failed"
            assert f"'{guest.name}' is still running on xen1" in failed.error, failed.error
            assert "migrate it paused instead" in failed.error
            assert guest.name in xl_names(xen1) and guest.name not in defined_on(xen2)
            assert Guest.objects.get(pk=guest.pk).host_id == host1.pk

        migrate(admin_client, Guest.objects.get(pk=guest.pk), host2, "paused")
        moved = Guest.objects.get(pk=guest.pk)
        assert (moved.host_id, moved.state) == (host2.pk, "running")
        assert guest.name in xl_names(xen2) and guest.name not in xl_names(xen1)
        assert guest.name not in defined_on(xen1)
        # The same guest goes on running there: its heartbeat on xen2's console.
        console_until(host2, moved, TINY_GUEST_TICK)

        migrate(admin_client, moved, host1, "paused")
        back = Guest.objects.get(pk=guest.pk)
        assert (back.host_id, back.state) == (host1.pk, "running")
        assert guest.name in xl_names(xen1) and guest.name not in xl_names(xen2)
        console_until(host1, back, TINY_GUEST_TICK)

        # Cold: libvirt's Xen driver has no offline migration, the app moves the definition.
        assert post(admin_client, f"/api/v1/guests/{guest.pk}/destroy/").status_code == 200
        migrate(admin_client, Guest.objects.get(pk=guest.pk), host2, "cold")
        cold = Guest.objects.get(pk=guest.pk)
        assert (cold.host_id, cold.state) == (host2.pk, "shutoff")
        assert guest.name in defined_on(xen2) and guest.name not in defined_on(xen1)
    finally:
        remove_quietly(host1, str(guest.uuid))
        remove_quietly(host2, str(guest.uuid))
