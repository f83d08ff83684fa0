"""Storage pages on the demo host: overview, pool detail, forms (with CSRF), and what each
role sees."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from hosts.models import Host
from storage.models import Pool, Volume
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db

MUTATING = ('id="new-pool"', 'id="pool-buttons"><form', 'id="sharing-form"',
            'id="delete-pool-form"', 'id="volume-create-form"', "volume-upload",
            "storage/volumes/")


def page(client: Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, path
    return response.content.decode()


def test_overview_and_detail_show_capacity_sharing_and_users(admin_client: Client,
                                                             demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    Pool.objects.filter(host=demo, name="iso").update(iso_library=True)
    overview = page(admin_client, "/storage/")
    assert 'href="/storage/"' in overview  # the navigation links the storage pages
    assert f'href="/storage/pools/{pool.pk}/"' in overview and "ISO library" in overview
    assert "free of 100.0" in overview and "low space" not in overview
    Pool.objects.filter(pk=pool.pk).update(available=5 * 1024**3)
    assert "low space" in page(admin_client, f"/storage/?host={demo.pk}")

    detail = page(admin_client, f"/storage/pools/{pool.pk}/")
    assert "web01.img" in detail and "/var/lib/xen/images" in detail
    web01 = Volume.objects.get(name="web01.img")
    row = detail.split(f'data-volume="{web01.pk}"')[1].split("</tr>")[0]
    assert ">web01</a>" in row and "running" in row  # used by
    assert "Local to demo" in detail and "In use:" in detail
    # Each volume has its download button (the API's resumable download).
    assert f'href="/api/v1/volumes/{web01.pk}/content/" download="web01.img"' in row

    host_page = page(admin_client, f"/hosts/{demo.pk}/")
    assert f'href="/storage/?host={demo.pk}"' in host_page
    assert f'href="/storage/pools/{pool.pk}/"' in host_page and "low space" in host_page


def test_viewer_sees_no_mutating_buttons(viewer_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    for html in (page(viewer_client, "/storage/"),
                 page(viewer_client, f"/storage/pools/{pool.pk}/")):
        for marker in MUTATING:
            assert marker not in html, marker
    assert viewer_client.get("/storage/pools/new/").status_code == 403
    assert viewer_client.post(f"/storage/pools/{pool.pk}/stop/").status_code == 403
    vol = Volume.objects.get(name="mail01.img")
    assert viewer_client.post(f"/storage/volumes/{vol.pk}/delete/").status_code == 403
    assert Pool.objects.get(pk=pool.pk).active


def test_operator_runs_pools_but_does_not_define_them(operator_client: Client,
                                                      demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="iso")
    html = page(operator_client, f"/storage/pools/{pool.pk}/")
    assert "Mark as ISO library" in html and 'id="volume-create-form"' in html
    assert 'id="sharing-form"' not in html and 'id="delete-pool-form"' not in html
    assert 'id="new-pool"' not in page(operator_client, "/storage/")
    assert operator_client.post(f"/storage/pools/{pool.pk}/delete/").status_code == 403
    assert operator_client.post(f"/storage/pools/{pool.pk}/sharing/",
                                {"shared": "yes"}).status_code == 403
    done = operator_client.post(f"/storage/pools/{pool.pk}/iso-library/", {"enabled": "1"},
                                follow=True)
    assert "is now an ISO library" in done.content.decode()
    assert Pool.objects.get(pk=pool.pk).iso_library


def test_forms_post_with_csrf(admin_user: Any, demo: Host) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    form = page(client, f"/storage/pools/new/?host={demo.pk}")
    assert 'name="csrfmiddlewaretoken"' in form and 'data-types="netfs iscsi"' in form
    token = client.cookies["csrftoken"].value
    fields = {"host": demo.pk, "type": "netfs", "name": "nfs", "source_host": "nas.example.org",
              "source_dir": "/export/vm", "target_path": "/mnt/nfs", "netfs_format": "nfs",
              "fs_format": "auto", "start": "on", "autostart": "on"}
    assert client.post("/storage/pools/new/", fields).status_code == 403  # no token
    made = client.post("/storage/pools/new/", {**fields, "csrfmiddlewaretoken": token})
    assert made.status_code == 302
    pool = Pool.objects.get(host=demo, name="nfs")
    assert made["Location"] == f"/storage/pools/{pool.pk}/"
    assert pool.pool_type == "netfs" and pool.shared and pool.autostart

    bad = client.post("/storage/pools/new/", {**fields, "name": "nfs2", "source_dir": "vm",
                                              "csrfmiddlewaretoken": token})
    assert bad.status_code == 400 and "exported directory" in bad.content.decode()
    assert 'value="nfs2"' in bad.content.decode()  # the input is kept

    def act(path: str, data: dict[str, Any] | None = None) -> str:
        response = client.post(path, {**(data or {}), "csrfmiddlewaretoken": token},
                               follow=True)
        assert response.status_code == 200
        return response.content.decode()

    assert "set to not shared" in act(f"/storage/pools/{pool.pk}/sharing/", {"shared": "no"})
    assert Pool.objects.get(pk=pool.pk).shared is False
    assert "stopped" in act(f"/storage/pools/{pool.pk}/stop/")
    assert "autostart off" in act(f"/storage/pools/{pool.pk}/autostart/", {"enabled": "0"})
    assert "was deleted" in act(f"/storage/pools/{pool.pk}/delete/")
    assert not Pool.objects.filter(pk=pool.pk).exists()

    default = Pool.objects.get(host=demo, name="default")
    html = act(f"/storage/pools/{default.pk}/delete/")
    assert "is in use" in html and "build01" in html

    html = act(f"/storage/pools/{default.pk}/volumes/new/", {
        "name": "scratch.qcow2", "size": "2G", "format": "qcow2", "allocation": "sparse"})
    assert "was created" in html
    vol = Volume.objects.get(pool=default, name="scratch.qcow2")
    assert vol.capacity == 2 * 1024**3
    # The test driver cannot resize (the lab test does): its refusal reaches the page.
    assert "does not support this" in act(f"/storage/volumes/{vol.pk}/resize/", {"size": "3G"})
    assert "can only grow" in act(f"/storage/volumes/{vol.pk}/resize/", {"size": "1G"})
    assert "lots" in act(f"/storage/volumes/{vol.pk}/resize/", {"size": "lots"})
    web = Volume.objects.get(name="web01.img")
    assert "attached to guest &#x27;web01&#x27;" in act(f"/storage/volumes/{web.pk}/delete/")
    assert "was deleted" in act(f"/storage/volumes/{vol.pk}/delete/")
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    assert {"pool.create", "pool.sharing", "pool.stop", "pool.delete", "volume.create",
            "volume.delete"} <= actions


def test_upload_form_targets_the_content_api(admin_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="iso")
    vol = Volume.objects.get(pool=pool, name="debian-12.5.0-amd64-netinst.iso")
    html = page(admin_client, f"/storage/pools/{pool.pk}/")
    assert f'data-url="/api/v1/volumes/{vol.pk}/content/"' in html
    assert "xenweb/storage.js" in html and 'type="file"' in html


@pytest.mark.parametrize("name", ["../escape.img", "/etc/evil.img", "a/b.img", ".hidden",
                                  "x\x00.img"])
def test_a_new_volumes_name_is_a_name_not_a_path(operator_client: Client, demo: Host,
                                                 name: str) -> None:
    """The page's upload-as-new-volume sends the file's name: the API takes it as a name in
    the pool, never as a path."""
    pool = Pool.objects.get(host=demo, name="default")
    before = set(Volume.objects.values_list("path", flat=True))
    answer = operator_client.post("/api/v1/volumes/", {"pool": pool.pk, "name": name,
                                                       "size": 1024 * 1024, "format": "raw"},
                                  content_type="application/json")
    assert answer.status_code in (400, 409), answer.content  # the API's refusal (409) or a 400
    if "\x00" not in name:
        assert "is not a valid volume name" in answer.json()["detail"]
    assert set(Volume.objects.values_list("path", flat=True)) == before
