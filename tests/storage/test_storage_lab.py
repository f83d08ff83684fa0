"""Volumes on a real libvirt/QEMU lab host through the API: resize, wipe, clone, a small
upload and ranged download, and the refusal of an image with a backing file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from hosts.virt import VirtTarget
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


@pytest.fixture
def local_pool(lab_hosts: list[Any]) -> Pool:
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local")


def new_volume(client: Client, pool: Pool, size: str, fmt: str = "raw") -> dict[str, Any]:
    name = f"t-{uuid.uuid4().hex[:8]}.{'img' if fmt == 'raw' else fmt}"
    created = post(client, "/api/v1/volumes/", {"pool": pool.pk, "name": name, "size": size,
                                                "format": fmt})
    assert created.status_code == 201, created.json()
    return created.json()


def put(client: Client, url: str, data: bytes) -> Any:
    return client.put(url, data, content_type="application/octet-stream")


def test_volume_actions_on_a_lab_host(admin_client: Client, local_pool: Pool) -> None:
    vol = new_volume(admin_client, local_pool, "8M")
    base = f"/api/v1/volumes/{vol['id']}"
    grown = post(admin_client, f"{base}/resize/", {"size": "16M"})
    assert grown.status_code == 200 and grown.json()["capacity"] == 16 * 1024**2
    assert os.path.getsize(vol["path"]) == 16 * 1024**2

    data = os.urandom(3 * 1024 * 1024 + 17)
    uploaded = put(admin_client, f"{base}/content/", data)
    assert uploaded.status_code == 201, uploaded.json()
    job = uploaded.json()
    assert job["kind"] == "volume.upload" and job["state"] == "succeeded"
    assert job["done"] == job["total"] == len(data) and job["result"]["format"] == "raw"
    assert Volume.objects.get(pk=vol["id"]).capacity == len(data)  # raw: the upload's size

    whole = admin_client.get(f"{base}/content/")
    assert whole.status_code == 200 and whole["Content-Length"] == str(len(data))
    assert b"".join(whole.streaming_content) == data
    assert Job.objects.get(pk=whole["X-Job-Id"]).state == "succeeded"
    part = admin_client.get(f"{base}/content/", HTTP_RANGE="bytes=1000-")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 1000-{len(data)-1}/" \
        f"{len(data)}"
    assert b"".join(part.streaming_content) == data[1000:]
    beyond = admin_client.get(f"{base}/content/", HTTP_RANGE=f"bytes={len(data)}-")
    assert beyond.status_code == 416

    clone = post(admin_client, f"{base}/clone/", {"name": vol["name"] + ".copy"})
    assert clone.status_code == 202
    from storage.jobs import clone_body, wipe_body
    from xenweb.jobs.runner import run_job

    run_job(clone.json()["id"], clone_body, task_id="t", worker="w")
    # libvirt copies on the host: progress is the copy's size there, an estimate, and the
    # copy cannot be aborted.
    cloned = Job.objects.get(pk=clone.json()["id"])
    assert cloned.state == "succeeded" and cloned.estimated and not cloned.cancellable
    assert cloned.total == cloned.done == len(data)
    copy = Volume.objects.get(name=vol["name"] + ".copy")
    assert hashlib.sha256(Path(copy.path).read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    wipe = post(admin_client, f"/api/v1/volumes/{copy.pk}/wipe/")
    assert wipe.json()["total"] is None  # libvirt reports no progress for a wipe
    run_job(wipe.json()["id"], wipe_body, task_id="t", worker="w")
    wiped_job = Job.objects.get(pk=wipe.json()["id"])
    assert wiped_job.state == "succeeded" and not wiped_job.cancellable
    wiped = Path(copy.path).read_bytes()
    assert wiped.count(0) == len(wiped) >= len(data), len(wiped)
    for pk in (copy.pk, vol["id"]):
        assert admin_client.delete(f"/api/v1/volumes/{pk}/").status_code == 204
    assert not os.path.exists(vol["path"])
    assert AuditRecord.objects.filter(action="volume.upload", result="ok").exists()


def test_clone_progress_follows_the_copy_on_the_host(local_pool: Pool) -> None:
    """The value clone progress polls: the size of the (growing) copy's file."""
    from hosts.virt import volumes as virt
    from hosts.virt.connection import get_connection

    host = local_pool.host
    name = f"t-{uuid.uuid4().hex[:8]}.img"
    info = virt.create_volume(VirtTarget(host.uri, allow_insecure=True),
                              local_pool.name, name, 3 * 1024**2)
    try:
        conn = get_connection(VirtTarget(host.uri, allow_insecure=True))
        pool = conn.storagePoolLookupByName("local")
        assert virt._copied(pool, name) == 3 * 1024**2
        assert virt._copied(pool, "no-such-volume") is None
        seen: list[int] = []
        copy = virt.clone_volume(VirtTarget(host.uri, allow_insecure=True),
                                 info.path, name + ".copy",
                                 progress=seen.append, poll_seconds=0.001)
        assert all(0 <= done <= 3 * 1024**2 for done in seen)
        assert copy.capacity == 3 * 1024**2
        virt.delete_volume(VirtTarget(host.uri, allow_insecure=True), copy.path)
    finally:
        virt.delete_volume(VirtTarget(host.uri, allow_insecure=True), info.path)


def test_image_with_a_backing_file_is_refused(admin_client: Client, local_pool: Pool,
                                              tmp_path: Path) -> None:
    evil = tmp_path / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
                    str(evil)], check=True)
    vol = new_volume(admin_client, local_pool, "1M", "qcow2")
    refused = put(admin_client, f"/api/v1/volumes/{vol['id']}/content/", evil.read_bytes())
    assert refused.status_code == 422, refused.json()
    assert "backing file (/etc/passwd)" in refused.json()["error"]
    assert refused.json()["state"] == "failed"
    # Refused from its first bytes, before any was written: the volume is as it was.
    assert "Nothing was written" in refused.json()["error"]
    assert Volume.objects.get(pk=vol["id"]).content_state == "ready"
    assert os.path.getsize(vol["path"]) < 1024 * 1024

    # A qcow2 image declared raw is refused too (whoever probes it later would follow it).
    raw = new_volume(admin_client, local_pool, "1M")
    fake = put(admin_client, f"/api/v1/volumes/{raw['id']}/content/", evil.read_bytes())
    assert fake.status_code == 422 and "declared raw but is qcow2" in fake.json()["error"]
    assert AuditRecord.objects.filter(action="volume.upload", result="failed").count() == 2

    # A clean qcow2 image is accepted, and its virtual size becomes the volume's.
    clean = tmp_path / "ok.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(clean), "64M"], check=True)
    good = new_volume(admin_client, local_pool, "1M", "qcow2")
    accepted = put(admin_client, f"/api/v1/volumes/{good['id']}/content/", clean.read_bytes())
    assert accepted.status_code == 201, accepted.json()
    assert Volume.objects.get(pk=good["id"]).capacity == 64 * 1024**2
    assert admin_client.delete(f"/api/v1/volumes/{good['id']}/").status_code == 204


def test_new_qcow2_volumes_are_qcow2_v3(admin_client: Client, local_pool: Pool) -> None:
    """libvirt makes qcow2 v2 (compat 0.10) unless told: no zero clusters, slower writes."""
    vol = new_volume(admin_client, local_pool, "4M", "qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2",
                                      vol["path"]], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["format-specific"]["data"]["compat"] == "1.1"
