"""Pools and volumes through the API on the embedded demo host (libvirt's test driver)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from hosts.models import Host
from storage.jobs import clone_body, wipe_body
from storage.models import Pool, Volume
from storage.units import parse_size
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def volume(name: str) -> Volume:
    return Volume.objects.get(name=name)


def test_sizes() -> None:
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("512M") == 512 * 1024**2
    assert parse_size("1.5K") == 1536
    assert parse_size("4096") == parse_size(4096) == 4096
    assert parse_size("2GiB") == 2 * 1024**3
    for bad in ("ten", "-1", "1.5", "10X"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_pools_and_volumes_from_the_cache(admin_client: Client, demo: Host) -> None:
    pools = admin_client.get(f"/api/v1/pools/?host={demo.pk}").json()
    assert pools["count"] >= 1
    default = next(p for p in pools["results"] if p["name"] == "default")
    assert default["type"] == "dir" and default["active"] is True and default["host"] == demo.pk
    assert default["volumes"] == Pool.objects.get(pk=default["id"]).volumes.count() > 0
    assert {"capacity", "allocation", "available", "shared"} <= set(default)
    assert admin_client.get("/api/v1/pools/?host=999").json()["count"] == 0

    vols = admin_client.get(f"/api/v1/volumes/?pool={default['id']}").json()["results"]
    web = next(v for v in vols if v["name"] == "web01.img")
    assert web["path"] == "/var/lib/xen/images/web01.img" and web["capacity"] == 20 * 1024**3
    assert [u["name"] for u in web["used_by"]] == ["web01"]
    detail = admin_client.get(web["url"]).json()
    assert detail["used_by"][0]["state"] == "running"

    refreshed = post(admin_client, f"/api/v1/pools/{default['id']}/refresh/")
    assert refreshed.status_code == 200 and refreshed.json()["name"] == "default"
    assert AuditRecord.objects.filter(action="pool.refresh").exists()


def test_create_resize_clone_wipe_delete(admin_client: Client, demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    created = post(admin_client, "/api/v1/volumes/", {
        "pool": pool.pk, "name": "scratch.qcow2", "size": "10G", "format": "qcow2"})
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["capacity"] == 10 * 1024**3 and body["used_by"] == []
    again = post(admin_client, "/api/v1/volumes/", {"pool": pool.pk, "name": "scratch.qcow2",
                                                    "size": "1G"})
    assert again.status_code == 409 and "already has a volume" in again.json()["detail"]
    bad = post(admin_client, "/api/v1/volumes/", {"pool": pool.pk, "name": "x", "size": "lots"})
    assert bad.status_code == 400 and "size" in bad.json()

    base = f"/api/v1/volumes/{body['id']}"
    shrink = post(admin_client, f"{base}/resize/", {"size": "1G"})
    assert shrink.status_code == 409 and "only grow" in shrink.json()["detail"]
    # The test driver cannot resize (the lab test does): the refusal says so.
    grown = post(admin_client, f"{base}/resize/", {"size": "12G"})
    assert grown.status_code == 409 and "does not support" in grown.json()["detail"]
    assert AuditRecord.objects.filter(action="volume.resize", result="failed").exists()

    clone = post(admin_client, f"{base}/clone/", {"name": "scratch-copy.qcow2"})
    assert clone.status_code == 202
    run_job(clone.json()["id"], clone_body, task_id="t", worker="w")
    job = Job.objects.get(pk=clone.json()["id"])
    assert job.state == "succeeded", job.error
    assert volume("scratch-copy.qcow2").capacity == 10 * 1024**3

    wipe = post(admin_client, f"{base}/wipe/")
    assert wipe.status_code == 202
    run_job(wipe.json()["id"], wipe_body, task_id="t", worker="w")
    wiped = Job.objects.get(pk=wipe.json()["id"])  # the test driver cannot wipe either
    assert wiped.state == "failed" and "does not support" in wiped.error

    assert admin_client.delete(base + "/").status_code == 204
    assert not Volume.objects.filter(name="scratch.qcow2").exists()
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    assert {"volume.create", "volume.resize", "volume.clone", "volume.wipe",
            "volume.delete", "job.start"} <= actions


def test_in_use_volume_is_protected(admin_client: Client, demo: Host) -> None:
    web = volume("web01.img")
    deleted = admin_client.delete(f"/api/v1/volumes/{web.pk}/")
    assert deleted.status_code == 409
    assert "attached to guest 'web01', which is running" in deleted.json()["detail"]
    for action in ("wipe", "resize"):
        refused = post(admin_client, f"/api/v1/volumes/{web.pk}/{action}/", {"size": "30G"})
        assert refused.status_code == 409 and "web01" in refused.json()["detail"]
    # A stopped guest's disk may be deleted.
    mail = Guest.objects.get(name="mail01")
    assert mail.state == "shutoff"
    assert admin_client.delete(f"/api/v1/volumes/{volume('mail01.img').pk}/").status_code == 204


def test_viewer_is_read_only(viewer_client: Client, operator_client: Client,
                             demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    web = volume("web01.img")
    assert viewer_client.get("/api/v1/pools/").status_code == 200
    assert viewer_client.get(f"/api/v1/volumes/{web.pk}/").status_code == 200
    assert post(viewer_client, f"/api/v1/pools/{pool.pk}/refresh/").status_code == 403
    assert post(viewer_client, "/api/v1/volumes/", {"pool": pool.pk, "name": "v", "size": "1G"}
                ).status_code == 403
    for action in ("resize", "clone", "wipe"):
        assert post(viewer_client, f"/api/v1/volumes/{web.pk}/{action}/").status_code == 403
    assert viewer_client.delete(f"/api/v1/volumes/{web.pk}/").status_code == 403
    assert viewer_client.put(f"/api/v1/volumes/{web.pk}/content/", b"x",
                             content_type="application/octet-stream").status_code in (403, 405)
    assert viewer_client.get(f"/api/v1/volumes/{web.pk}/content/").status_code == 403
    made = post(operator_client, "/api/v1/volumes/", {"pool": pool.pk, "name": "op.img",
                                                      "size": "1M"})
    assert made.status_code == 201
