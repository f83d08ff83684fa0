"""Two real Xen dom0s: a storage network between them, storage both can write, and migration
of a running PV guest from one to the other and back.

xen1 exports a directory over NFS to the storage network; on both hosts the app's ``netfs``
pool type mounts it for real, at the same path, and the app recognises the two pools as the
same storage. A volume written through xen2 reads back through xen1, byte for byte.

Migration goes the way the app sends it to any Xen host: peer to peer, the source dom0's
libvirtd reaching the target over xen+ssh on the storage network (the target's migration URI,
set at enrolment), libxl streaming the memory to the target's hostname there. The guest keeps
a disk on the shared pool; its console is read through the browser's websocket.

Skipped with ``XENWEB_TEST_XEN_PAIR=0`` (one dom0 only).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from guests.migration.job import migrate_body
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt.pools import delete_pool
from lab.tinyguest import TINY_GUEST_BANNER, TINY_GUEST_TICK
from lab.xen.manager import XenHost
from lab.xen.register import register_xen_host
from lab.xen.remote import run_on
from lab.xen.shared import export_source
from storage.models import Pool, Volume
from tests.xen.helpers import create_pv_guest, post, remove_quietly, run
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(1500)]

MOUNT_POINT = "/var/lib/xen/shared"
POOL = "shared"


def test_storage_network_links_the_dom0s(xen_pair: list[XenHost]) -> None:
    xen1, xen2 = xen_pair
    assert (xen1.storage_address, xen2.storage_address) == ("10.99.0.1", "10.99.0.2")
    addresses = run_on(xen2, ["cat", "/proc/net/fib_trie"]).stdout  # dom0 has no iproute2
    assert "10.99.0.2" in addresses, addresses
    reach = run_on(xen2, ["timeout", "10", "bash", "-c", "</dev/tcp/10.99.0.1/22"],
                   check=False)
    assert reach.returncode == 0, reach.stderr


@contextlib.contextmanager
def shared_pools(client: Client, xen1: XenHost, *hosts: Host) -> Iterator[list[Pool]]:
    """The NFS export as a netfs pool on each host, through the API; removed afterwards."""
    server, export = export_source(xen1)
    made: list[Pool] = []
    try:
        for host in hosts:
            created = post(client, "/api/v1/pools/", {
                "host": host.pk, "type": "netfs", "name": POOL, "source_host": server,
                "source_dir": export, "target_path": MOUNT_POINT, "build": True})
            assert created.status_code == 201, created.json()
            made.append(Pool.objects.get(pk=created.json()["id"]))
        yield made
    finally:
        for host in hosts:
            deleted = None
            pool = Pool.objects.filter(host=host, name=POOL).first()
            if pool is not None:
                deleted = client.delete(f"/api/v1/pools/{pool.pk}/")
            if deleted is None or deleted.status_code != 204:
                with contextlib.suppress(VirtError):
                    delete_pool(VirtTarget(host.uri, allow_insecure=True), POOL)


def test_netfs_pools_share_xen1_storage_with_xen2(
    xen_pair: list[XenHost], admin_client_tx: Client
) -> None:
    xen1, xen2 = xen_pair
    host1, _ = register_xen_host(xen1)
    host2, _ = register_xen_host(xen2)
    server, export = export_source(xen1)
    volume_name = f"shared-{uuid.uuid4().hex[:6]}.img"
    with shared_pools(admin_client_tx, xen1, host1, host2) as (pool1, pool2):
        for xen_host in (xen1, xen2):
            mounted = run_on(xen_host, ["findmnt", "-n", "-o", "FSTYPE,SOURCE",
                                        MOUNT_POINT]).stdout
            assert mounted.split()[0].startswith("nfs") and f"{server}:{export}" in mounted
        # The same NFS server and export: the app knows both pools are one storage.
        shown = admin_client_tx.get(f"/api/v1/pools/{pool2.pk}/").json()
        assert shown["type"] == "netfs" and shown["active"] and shown["shared"], shown
        assert pool1.storage_key == pool2.storage_key
        assert [h["host"] for h in shown["shared_with"]] == [host1.pk], shown["shared_with"]

        created = post(admin_client_tx, "/api/v1/volumes/", {
            "pool": pool2.pk, "name": volume_name, "size": "4M"})
        assert created.status_code == 201, created.json()
        data = os.urandom(1024 * 1024)
        uploaded = admin_client_tx.put(f"/api/v1/volumes/{created.json()['id']}/content/",
                                       data, content_type="application/octet-stream")
        assert uploaded.status_code == 201, uploaded.json().get("error")

        # xen1 reads the file xen2 wrote, byte for byte.
        refreshed = post(admin_client_tx, f"/api/v1/pools/{pool1.pk}/refresh/")
        assert refreshed.status_code == 200, refreshed.json()
        on_xen1 = Volume.objects.get(pool=pool1, name=volume_name)
        assert on_xen1.path == f"{MOUNT_POINT}/{volume_name}" and on_xen1.capacity == len(data)
        read = admin_client_tx.get(f"/api/v1/volumes/{on_xen1.pk}/content/")
        assert read.status_code == 200
        assert b"".join(read.streaming_content) == data

        # Deleted from xen1: gone from xen2's pool too.
        assert admin_client_tx.delete(f"/api/v1/volumes/{on_xen1.pk}/").status_code == 204
        post(admin_client_tx, f"/api/v1/pools/{pool2.pk}/refresh/")
        assert not Volume.objects.filter(pool=pool2, name=volume_name).exists()
    for xen_host in (xen1, xen2):
        assert run_on(xen_host, ["findmnt", MOUNT_POINT], check=False).returncode != 0


def xl_names(xen_host: XenHost) -> set[str]:
    lines = run_on(xen_host, ["xl", "list"]).stdout.splitlines()[1:]
    return {line.split()[0] for line in lines if line.strip()}


def defined_on(xen_host: XenHost) -> set[str]:
    return set(run_on(xen_host, ["virsh", "-c", "xen:///system", "list", "--all",
                                 "--name"]).stdout.split())


def migrate(client: Client, guest: Guest, target: Host, mode: str, *,
            succeed: bool = True) -> Job:
    base = f"/api/v1/guests/{guest.pk}/migrate"
    preflight = client.get(f"{base}/preflight/?host={target.pk}&mode={mode}")
    assert preflight.status_code == 200, preflight.content
    answer = preflight.json()
    assert answer["ok"], answer["checks"]
    # The dialog offers only what libvirt's Xen driver can do.
    assert answer["features"]["supported"] and not answer["features"]["postcopy"]
    assert not answer["features"]["abort"] and not answer["features"]["data_counters"]
    job = run(post(client, f"{base}/", {"host": target.pk, "mode": mode}), migrate_body,
              succeed=succeed)
    if succeed:
        assert job.result["target"] == target.pk, job.result
    return job


def guest_with_shared_disk(client: Client, host: Host, pool: Pool) -> Guest:
    volume = post(client, "/api/v1/volumes/", {
        "pool": pool.pk, "name": f"move-{uuid.uuid4().hex[:6]}.img", "size": "16M"})
    assert volume.status_code == 201, volume.json()
    # Kernel and initrd sit at the same path in both dom0s; the disk on the shared pool.
    return create_pv_guest(client, host, "move", disks=[{"volume": volume.json()["id"]}])


def test_migration_between_the_xen_hosts(
    xen_pair: list[XenHost], admin_client_tx: Client, console: Any
) -> None:
    xen1, xen2 = xen_pair
    host1, _ = register_xen_host(xen1)
    host2, _ = register_xen_host(xen2)
    assert host2.migration_uri == "xen+ssh://root@10.99.0.2/system"
    shown = admin_client_tx.get(f"/api/v1/hosts/{host2.pk}/").json()
    assert shown["migration_uri"] == host2.migration_uri
    with shared_pools(admin_client_tx, xen1, host1, host2) as (pool1, _):
        guest = guest_with_shared_disk(admin_client_tx, host1, pool1)
        try:
            started = post(admin_client_tx, f"/api/v1/guests/{guest.pk}/start/")
            assert started.status_code == 200, started.json()
            console(guest, TINY_GUEST_BANNER, TINY_GUEST_TICK)

            # Live migration of a PV guest needs Xen's shadow paging (log-dirty). Debian 12's
            # Xen 4.17 is built without it; the lab's hypervisor is Debian's source with it
            # (lab/xen/hypervisor.py), and the dom0's /boot/xen-*.config says which.
            config = run_on(xen1, ["sh", "-c", "cat /boot/xen-*.config"]).stdout
            if "CONFIG_SHADOW_PAGING=y" in config:
                there = migrate(admin_client_tx, guest, host2, "live")
                # Xen reports no counters and cannot abort a migration: the progress was an
                # estimate from memory size and bandwidth, the job not cancellable.
                assert there.estimated and not there.cancellable
                assert there.result["downtime_ms"] is None and there.result["total_s"] > 0
                moved = Guest.objects.get(pk=guest.pk)
                assert (moved.host_id, moved.state) == (host2.pk, "running")
                assert guest.name in xl_names(xen2) and guest.name not in xl_names(xen1)
                assert guest.name not in defined_on(xen1)
                console(moved, TINY_GUEST_TICK)  # the same guest, still ticking, on xen2
                migrate(admin_client_tx, moved, host1, "live")
                assert guest.name in xl_names(xen1) and guest.name not in xl_names(xen2)
            else:  # a stock Debian hypervisor (a cached image from before the lab built one)
                failed = migrate(admin_client_tx, guest, host2, "live", succeed=False)
                assert failed.state == "failed"
                assert f"'{guest.name}' is still running on xen1" in failed.error, failed.error
                assert "migrate it paused instead" in failed.error
                assert guest.name in xl_names(xen1) and guest.name not in defined_on(xen2)
                assert Guest.objects.get(pk=guest.pk).host_id == host1.pk

            job = migrate(admin_client_tx, Guest.objects.get(pk=guest.pk), host2, "paused")
            # Xen reports no counters and cannot abort: the progress was an estimate and the
            # job not cancellable, and both were said.
            assert job.estimated and not job.cancellable and job.result["downtime_ms"] is None
            assert "does not report the downtime" in job.result["downtime_note"]
            moved = Guest.objects.get(pk=guest.pk)
            assert (moved.host_id, moved.state) == (host2.pk, "running")
            assert guest.name in xl_names(xen2) and guest.name not in xl_names(xen1)
            assert guest.name not in defined_on(xen1)
            # The same guest goes on running there: its heartbeat on xen2's console.
            console(moved, TINY_GUEST_TICK)

            # Offline: memory saved to the shared directory, restored on the other host.
            offline = migrate(admin_client_tx, moved, host1, "offline")
            assert offline.result["save_path"].startswith(f"{MOUNT_POINT}/")
            back = Guest.objects.get(pk=guest.pk)
            assert (back.host_id, back.state) == (host1.pk, "running")
            assert guest.name in xl_names(xen1) and guest.name not in xl_names(xen2)
            console(back, TINY_GUEST_TICK)

            # Cold: libvirt's Xen driver has no offline migration, the app moves the
            # definition.
            destroyed = post(admin_client_tx, f"/api/v1/guests/{guest.pk}/destroy/")
            assert destroyed.status_code == 200, destroyed.json()
            migrate(admin_client_tx, Guest.objects.get(pk=guest.pk), host2, "cold")
            cold = Guest.objects.get(pk=guest.pk)
            assert (cold.host_id, cold.state) == (host2.pk, "shutoff")
            assert guest.name in defined_on(xen2) and guest.name not in defined_on(xen1)
        finally:
            remove_quietly(host1, str(guest.uuid))
            remove_quietly(host2, str(guest.uuid))
            run_on(xen1, ["sh", "-c", "rm -f /srv/xen-shared/move-*.img"], check=False)
