"""The whole-image checks on a real libvirt/QEMU lab host, whose volumes this machine holds
as files (issue 18 H1, M4): uploads through the API, the whole stored file probed, the
clone that must not follow a backing chain, libvirt's pool refresh reading a raw disk as
qcow2, and an upload whose web process is killed mid-body (the real web server)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from guests.models import Guest
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.jobs import clone_body, wipe_body
from storage.models import Pool, Volume
from tests.lab.conftest import lab_hosts  # noqa: F401 (the lab's session fixture)
from tests.live.processes import WebServer, wait_for
from tests.security import hostile
from xenweb.accounts.tokens import create_token
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job
from xenweb.jobs.services import reap_stale_jobs

MIB = hostile.MIB


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def put(client: Client, url: str, data: bytes) -> Any:
    return client.put(url, data, content_type="application/octet-stream")


@pytest.fixture
def local_pool(request: pytest.FixtureRequest) -> Pool:
    host, _ = register_lab_host(request.getfixturevalue("lab_hosts")[0])
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local")


def new_volume(client: Client, pool: Pool, size: str, fmt: str = "raw") -> dict[str, Any]:
    name = f"sec-{uuid.uuid4().hex[:8]}.{'img' if fmt == 'raw' else fmt}"
    made = post(client, "/api/v1/volumes/", {"pool": pool.pk, "name": name, "size": size,
                                             "format": fmt})
    assert made.status_code == 201, made.json()
    return made.json()


@pytest.mark.django_db
def test_hostile_uploads_are_refused_on_a_lab_host_and_the_volume_kept(
        admin_client: Client, local_pool: Pool, tmp_path: Path) -> None:
    image = hostile.qcow2_backing_past_first_mib(tmp_path / "h1.qcow2", "/etc/shadow")
    for fmt, message in (("qcow2", "backing file"), ("raw", "declared raw but is qcow2")):
        vol = new_volume(admin_client, local_pool, "4M", fmt)
        before = Path(vol["path"]).read_bytes()
        answer = put(admin_client, f"/api/v1/volumes/{vol['id']}/content/", image.read_bytes())
        assert answer.status_code == 422, answer.json()
        assert message in answer.json()["error"]
        assert "Nothing was written" in answer.json()["error"]
        assert Path(vol["path"]).read_bytes() == before
        assert Volume.objects.get(pk=vol["id"]).content_state == "ready"
        assert admin_client.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


@pytest.mark.django_db
def test_a_clean_upload_is_checked_whole_and_ready(admin_client: Client, local_pool: Pool,
                                                   tmp_path: Path) -> None:
    clean = tmp_path / "clean.qcow2"
    hostile.qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(clean), "32M")
    vol = new_volume(admin_client, local_pool, "1M", "qcow2")
    answer = put(admin_client, f"/api/v1/volumes/{vol['id']}/content/", clean.read_bytes())
    assert answer.status_code == 201, answer.json()
    volume = Volume.objects.get(pk=vol["id"])
    assert (volume.content_state, volume.capacity) == ("ready", 32 * MIB)
    assert admin_client.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


@pytest.mark.django_db
def test_clone_never_follows_a_backing_chain(admin_client: Client, local_pool: Pool,
                                             tmp_path: Path) -> None:
    """A qcow2 volume whose file gained a backing file behind the app's back (written on
    the host): the clone job refuses it instead of letting qemu-img copy the host file."""
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"root-only host file\n" * 1000)
    vol = new_volume(admin_client, local_pool, "1M", "qcow2")
    hostile.qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                     vol["path"], "1M")
    clone = post(admin_client, f"/api/v1/volumes/{vol['id']}/clone/", {"name": "leak.qcow2"})
    assert clone.status_code == 202
    run_job(clone.json()["id"], clone_body, task_id="t", worker="w")
    job = Job.objects.get(pk=clone.json()["id"])
    assert job.state == "failed" and "backing file" in job.error, job.error
    assert not Volume.objects.filter(pool=local_pool, name="leak.qcow2").exists()
    assert admin_client.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


@pytest.mark.django_db
def test_a_raw_disk_that_libvirt_reads_as_qcow2_is_changed_and_unusable(
        admin_client: Client, local_pool: Pool, tmp_path: Path) -> None:
    """What a guest can do to its own raw disk: write a qcow2 header with a backing file.
    libvirt's pool refresh then probes the file as qcow2; the app keeps it raw and
    refuses to attach, clone or start it until it is wiped."""
    vol = new_volume(admin_client, local_pool, "4M")
    evil = hostile.qcow2_with_backing(tmp_path / "evil.qcow2", "/etc/shadow")
    with open(vol["path"], "r+b") as disk:  # the guest writes its disk's first sectors
        disk.write(evil.read_bytes())
    # Any pool refresh (the button, an upload's check, a libvirtd restart) re-probes.
    assert post(admin_client, f"/api/v1/pools/{local_pool.pk}/refresh/").status_code == 200
    volume = Volume.objects.get(pk=vol["id"])
    assert (volume.format, volume.content_state) == ("raw", "changed")
    mail = Guest.objects.filter(host=local_pool.host).first()
    if mail is not None:
        attach = post(admin_client, f"/api/v1/guests/{mail.pk}/disks/", {"volume": volume.pk})
        assert attach.status_code == 409 and "otherwise than" in attach.json()["detail"]
    clone = post(admin_client, f"/api/v1/volumes/{volume.pk}/clone/", {"name": "x.img"})
    assert clone.status_code == 409 and "cannot be cloned" in clone.json()["detail"]
    wipe = post(admin_client, f"/api/v1/volumes/{volume.pk}/wipe/")
    assert wipe.status_code == 202
    run_job(wipe.json()["id"], wipe_body, task_id="t", worker="w")
    assert Job.objects.get(pk=wipe.json()["id"]).state == "succeeded"
    volume.refresh_from_db()
    assert (volume.format, volume.content_state) == ("raw", "ready")
    assert Path(vol["path"]).read_bytes().count(0) == 4 * MIB
    assert admin_client.delete(f"/api/v1/volumes/{volume.pk}/").status_code == 204


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_an_upload_whose_web_process_is_killed_leaves_nothing_half_written(
        local_pool: Pool, admin_client_tx: Client) -> None:
    """The web process is killed (SIGKILL, as a crash or the OOM killer would) mid-body:
    the volume, half-written, is marked as being written (nothing may open it), and when
    the reaper finds the job without heartbeat it empties the volume."""
    vol = new_volume(admin_client_tx, local_pool, "4M")
    token = create_token(get_user_model().objects.get(username="alice-admin"))
    total = 256 * MIB
    server = WebServer()
    try:
        head = (f"PUT /api/v1/volumes/{vol['id']}/content/ HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Token {token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n")
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(head.encode())
            job = None
            while job is None or job.done < 24 * MIB:
                assert sent < total // 2, "the job shows no progress while the body arrives"
                sock.sendall(os.urandom(MIB))
                sent += MIB
                job = Job.objects.filter(kind="volume.upload",
                                         target_id=str(vol["id"])).first()
            server.kill()
            wait_for(lambda: not server.alive(), 30, "the web process gone")
    finally:
        server.stop()
    volume = Volume.objects.get(pk=vol["id"])
    assert (volume.content_state, volume.content_job) == ("writing", job.pk)
    partial = Path(volume.path).read_bytes()
    assert partial.count(0) < len(partial)  # a half-written image is there, for now
    mail = Guest.objects.filter(host=local_pool.host, state="shutoff").first()
    if mail is not None:
        refused = post(admin_client_tx, f"/api/v1/guests/{mail.pk}/disks/",
                       {"volume": volume.pk})
        assert refused.status_code == 409 and "being written" in refused.json()["detail"]

    # What beat's reaper (and a restarted worker) does: the job has no heartbeat.
    assert job.pk in reap_stale_jobs(stale_after=0)
    job.refresh_from_db()
    assert job.state == "interrupted"
    volume.refresh_from_db()
    assert (volume.content_state, volume.content_job, volume.capacity) == ("ready", None,
                                                                           4 * MIB)
    emptied = Path(volume.path).read_bytes()
    assert len(emptied) == 4 * MIB and emptied.count(0) == len(emptied)
    assert AuditRecord.objects.filter(action="volume.recover",
                                      target_id=str(volume.pk)).exists()
    assert admin_client_tx.delete(f"/api/v1/volumes/{volume.pk}/").status_code == 204

