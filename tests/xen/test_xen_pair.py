"""Two real Xen dom0s: a storage network between them and storage both can write.

xen1 exports its image store (its ``default`` dir pool) over NFS to the storage network; on
xen2 the app's ``netfs`` pool type mounts it for real. A volume made through the API in
xen2's netfs pool, filled through xen2 and read back through xen1's own dir pool, proves
both hosts write the same storage (what live migration of a guest's disks needs).

Runs with ``XENWEB_TEST_XEN_PAIR=1`` (``make test-xen``).
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.test import Client

from hosts.lab.xen.manager import XenHost
from hosts.lab.xen.register import register_xen_host
from hosts.lab.xen.remote import run_on
from hosts.lab.xen.shared import export_source
from hosts.virt.pool_define import define_pool_from_xml, remove_pool
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from tests.xen.helpers import post

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(1200)]

MOUNT_POINT = "/var/lib/xen/shared"


def netfs_pool_xml(name: str, server: str, export: str, target: str) -> str:
    """A libvirt ``netfs`` pool (NFS). Interim: switch to the storage pools API's
    ``NetfsPoolSpec``/``build_pool_xml`` once that is merged."""
    root = ET.Element("pool", type="netfs")
    ET.SubElement(root, "name").text = name
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "host", name=server)
    ET.SubElement(source, "dir", path=export)
    ET.SubElement(source, "format", type="nfs")
    ET.SubElement(ET.SubElement(root, "target"), "path").text = target
    return ET.tostring(root, encoding="unicode")


def test_storage_network_links_the_dom0s(xen_pair: list[XenHost]) -> None:
    xen1, xen2 = xen_pair
    assert (xen1.storage_address, xen2.storage_address) == ("10.99.0.1", "10.99.0.2")
    addresses = run_on(xen2, ["ip", "-brief", "-4", "address"]).stdout
    assert "10.99.0.2/24" in addresses, addresses
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
    info = define_pool_from_xml(host2.uri, netfs_pool_xml(name, server, export, MOUNT_POINT),
                                allow_insecure=True)
    volume_name = f"shared-{uuid.uuid4().hex[:6]}.img"
    try:
        assert (info.pool_type, info.active) == ("netfs", True)
        assert (info.source_host, info.source_path) == (server, export)
        mounted = run_on(xen2, ["findmnt", "-n", "-o", "FSTYPE,SOURCE", MOUNT_POINT]).stdout
        assert mounted.split()[0].startswith("nfs") and f"{server}:{export}" in mounted

        reconcile_pools(host2)
        netfs = Pool.objects.get(host=host2, name=name)
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
        remove_pool(host2.uri, name, allow_insecure=True)
    assert run_on(xen2, ["findmnt", MOUNT_POINT], check=False).returncode != 0
