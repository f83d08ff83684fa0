"""An offline migration's save image lies on storage other hosts write: before the target
restores it, the app reads its domain XML and compares it with the XML the save ran with,
and QEMU restores with that checked XML (independent check of issue 18). On two real lab
hosts: the image is edited on the shared storage between the real save and the restore (the
test plays whoever else writes there, wrapping the job's save call), so that its disk is a
root-only host file; the restore is refused, no host opens the file, the guest runs nowhere.
While the migration runs, its save file is locked like a guest's own save image."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from guests.migration import job as migration_job
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget
from lab.paths import lab_dir
from storage.attachments import saved_memory_in
from storage.models import Pool, Volume
from tests.lab.conftest import lab_hosts  # noqa: F401 (the lab's session fixture)
from tests.lab.test_migration_lab import _located, _run, _running_guest, hosts, made, post
from tests.security.test_save_restore_paths_lab import edit_qemu_image

__all__ = ["hosts", "made"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret() -> Iterator[Path]:
    path = lab_dir() / f"secret-{uuid.uuid4().hex[:6]}"
    path.write_bytes(b"TOP-SECRET root-only host file\n" * 64)
    path.chmod(0o600)
    yield path
    path.unlink()


def test_an_image_edited_on_shared_storage_is_not_restored(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest],
        secret: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    disk = guest.devices["disks"][0]["source"]
    real_save = migration_job.virt.save

    def save_then_tamper(target: VirtTarget, uuid_: str, path: str) -> str:
        xml = real_save(target, uuid_, path)
        image = Path(path)
        image.write_bytes(edit_qemu_image(image.read_bytes(),
                                          lambda text: text.replace(disk, str(secret))))
        return xml

    monkeypatch.setattr(migration_job.virt, "save", save_then_tamper)
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/",
                  {"host": target.pk, "mode": "offline"})
    assert answer.status_code == 202, answer.json()
    job = _run(answer.json()["id"])
    assert job.state == "failed"
    assert "differs from the guest's own" in job.error and "restored nowhere" in job.error
    assert _located(guest, target) is None
    assert _located(guest, source) == "shutoff"
    assert secret.read_bytes().startswith(b"TOP-SECRET")
    saved = Path(migration_job.shared_save_path(guest, target))
    assert saved.exists()  # kept for inspection
    saved.unlink()


def test_the_migration_save_file_is_locked(hosts: tuple[Host, Host],
                                           operator_client: Client) -> None:
    source, _target = hosts
    guest = Guest.objects.filter(host=source).exclude(name="Domain-0").first() or \
        Guest.objects.create(host=source, name=f"g-{uuid.uuid4().hex[:6]}",
                             uuid=uuid.uuid4())
    pool = Pool.objects.filter(host=source, shared=True).first()
    assert pool is not None
    volume = Volume.objects.create(pool=pool, name=f".xenweb-save-{guest.uuid}.save",
                                   path=f"{pool.target_path}/.xenweb-save-{guest.uuid}.save")
    try:
        assert saved_memory_in(volume) is not None
        for url, body in ((f"/api/v1/volumes/{volume.pk}/wipe/", None),
                          (f"/api/v1/volumes/{volume.pk}/resize/", {"size": "1G"})):
            response = post(operator_client, url, body)
            assert response.status_code == 409, response.content
            assert "saved memory" in response.json()["detail"]
        upload = operator_client.put(f"/api/v1/volumes/{volume.pk}/content/", b"\0" * 512,
                                     content_type="application/octet-stream")
        assert upload.status_code == 409 and "saved memory" in upload.json()["detail"]
    finally:
        volume.delete()
