"""A symlink planted in a pool directory never makes the appliance or the host read or write
another file (independent check of issue 18). libvirt lists the link like the file it points
to; on a lab host (real libvirt/QEMU, files this machine holds) the download, upload, clone,
wipe, resize and attach of such a volume are refused and the secret stays as it was, and the
file I/O itself never follows a link (O_NOFOLLOW)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from hosts.virt import VirtError
from lab.paths import lab_dir
from lab.register import register_lab_host
from storage import volume_io
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from storage.services import refresh_pool
from tests.lab.conftest import lab_hosts  # noqa: F401 (the lab's session fixture)

pytestmark = pytest.mark.django_db
SECRET = b"TOP-SECRET root-only host file\n" * 8


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


@pytest.fixture
def local_pool(request: pytest.FixtureRequest) -> Pool:
    host, _ = register_lab_host(request.getfixturevalue("lab_hosts")[0])
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local")


@pytest.fixture
def planted(local_pool: Pool) -> Iterator[tuple[Volume, Path]]:
    """A root-only secret outside the pool and a link to it in the pool's directory, listed
    by libvirt as a volume."""
    secret = lab_dir() / f"secret-{uuid.uuid4().hex[:6]}"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    link = Path(local_pool.target_path) / f"planted-{uuid.uuid4().hex[:6]}.img"
    link.symlink_to(secret)
    try:
        refresh_pool(local_pool)
        volume = Volume.objects.get(pool=local_pool, name=link.name)
        assert volume.path == str(link)
        yield volume, secret
    finally:
        link.unlink(missing_ok=True)
        secret.unlink()
        refresh_pool(local_pool)


def test_a_planted_link_is_never_read_or_written(admin_client: Client,
                                                 operator_client: Client,
                                                 planted: tuple[Volume, Path]) -> None:
    volume, secret = planted
    url = f"/api/v1/volumes/{volume.pk}/"
    for client in (operator_client, admin_client):
        download = client.get(url + "content/")
        assert download.status_code == 409, download.content
        assert b"TOP-SECRET" not in b"".join(getattr(download, "streaming_content", [b""]))
        assert "symbolic link" in download.json()["detail"]
        upload = client.put(url + "content/", b"\0" * 65536,
                            content_type="application/octet-stream")
        assert upload.status_code == 409, upload.content
        for action, body in (("clone", {"name": f"copy-{uuid.uuid4().hex[:6]}.img"}),
                             ("wipe", {}), ("resize", {"size": "1M"})):
            response = post(client, url + f"{action}/", body)
            assert response.status_code == 409, (action, response.content)
            assert "symbolic link" in response.json()["detail"], action
        assert secret.read_bytes() == SECRET
        assert not Volume.objects.filter(name__startswith="copy-").exists()


def test_a_planted_link_is_never_a_disk(operator_client: Client,
                                        planted: tuple[Volume, Path]) -> None:
    volume, _secret = planted
    response = post(operator_client, "/api/v1/guests/", {
        "name": f"link-{uuid.uuid4().hex[:6]}", "host": volume.pool.host_id, "type": "hvm",
        "memory_mib": 64, "disks": [{"volume": volume.pk}]})
    assert response.status_code == 400, response.json()
    assert "symbolic link" in str(response.json())
    assert not Guest.objects.filter(name__startswith="link-").exists()


def test_the_file_io_never_follows_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "link.img").symlink_to(secret)
    (pool / "up.img").symlink_to("../secret")
    for name in ("link.img", "up.img"):
        path = str(pool / name)
        with pytest.raises(VirtError, match="symbolic link"):
            volume_io.FileUpload(path, replace=True)
        with pytest.raises(VirtError, match="symbolic link"):
            volume_io.FileDownload(path, offset=0, length=16, chunk=16)
        with pytest.raises(VirtError, match="symbolic link"):
            volume_io.direct_file("qemu:///system", path, files_local=True)
    assert secret.read_bytes() == SECRET
    # A pool directory reached through a link of its own is fine: the file is in it.
    (tmp_path / "alias").symlink_to(pool)
    (pool / "real.img").write_bytes(b"x" * 16)
    reader = volume_io.FileDownload(str(tmp_path / "alias" / "real.img"), offset=0, length=16,
                                    chunk=16)
    assert b"".join(reader) == b"x" * 16
    # A FIFO or device is no volume file for direct I/O.
    os.mkfifo(pool / "fifo")
    with pytest.raises(VirtError, match="not a regular file"):
        volume_io.open_file(str(pool / "fifo"), os.O_RDONLY | os.O_NONBLOCK, "download")



def test_a_planted_link_is_no_save_image_to_restore(planted: tuple[Volume, Path]) -> None:
    from guests.save_images import SaveImageRefused, restore_source

    volume, secret = planted
    guest = Guest.objects.create(host=volume.pool.host, name=f"g-{uuid.uuid4().hex[:6]}",
                                 uuid=uuid.uuid4())
    with pytest.raises(SaveImageRefused, match="symbolic link"):
        restore_source(guest, volume.pk)
    assert secret.read_bytes() == SECRET
