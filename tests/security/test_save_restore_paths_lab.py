"""C1 of issue 18 on a real libvirt/QEMU lab host: the save image is a volume the app
creates and locks; a path is refused; the finding's attack (download the save, edit the
domain XML inside, upload it into one's own volume, restore from it) and its variants are
refused before QEMU opens anything; a volume of another host or one that holds no save
image is refused; an untouched copy restores, and the round trip works."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.slow_actions import restore_body, save_body
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from hosts.virt.console import read_console_until
from lab.control import SHARED_POOL
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_BANNER, TINY_GUEST_TICK
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from tests.lab.conftest import lab_hosts  # noqa: F401 (the session's lab hosts)
from tests.lab.test_lab_api_lifecycle import create_tiny_guest, post
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db

QEMU_MAGIC = b"LibvirtQemudSave"


def run(response: Any, body: Any) -> Job:
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")
    job.refresh_from_db()
    return job


def put(client: Client, url: str, data: bytes) -> Any:
    return client.put(url, data, content_type="application/octet-stream")


@pytest.fixture
def running_guest(lab_hosts: list[Any], admin_client: Client) -> Iterator[tuple[Host, Guest]]:  # noqa: F811
    host, guest = create_tiny_guest(lab_hosts[0], admin_client, "c1")
    reconcile_pools(host)
    assert post(admin_client, f"/api/v1/guests/{guest.pk}/start/").json()["state"] \
        == "running"
    read_console_until(VirtTarget(host.uri, allow_insecure=True),
                       str(guest.uuid), TINY_GUEST_BANNER, 90)
    yield host, guest
    for call in (virt.destroy, virt.undefine):
        try:
            call(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass


def edit_qemu_image(data: bytes, edit: Callable[[str], str]) -> bytes:
    """What the attacker does to a downloaded QEMU save image: rewrite the domain XML in
    its header (libvirt's layout: magic, version, data length, was-running, compressed,
    cookie offset; the XML, NUL; the migration cookie; zero padding), same total size."""
    assert data.startswith(QEMU_MAGIC)
    fields = len(QEMU_MAGIC)
    _version, data_len, _running, _compressed, cookie_off = struct.unpack_from("<5I", data,
                                                                               fields)
    start = data.index(b"<domain")
    body = data[start:start + data_len]
    xml = body[:body.index(b"\0")].decode()
    cookie = body[cookie_off:body.index(b"\0", cookie_off) + 1] if cookie_off else b""
    new_xml = edit(xml).encode() + b"\0"
    new_body = (new_xml + cookie).ljust(data_len, b"\0")
    assert len(new_body) == data_len
    header = bytearray(data[:start])
    struct.pack_into("<I", header, fields + 16, len(new_xml) if cookie_off else 0)
    return bytes(header) + new_body + data[start + data_len:]


def test_save_goes_into_a_locked_app_volume_and_restores(
        running_guest: tuple[Host, Guest], admin_client: Client, lab_hosts: list[Any],  # noqa: F811
        tmp_path: Path) -> None:
    host, guest = running_guest
    base = f"/api/v1/guests/{guest.pk}"
    victim = tmp_path / "victim"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    for path in (str(victim), "victim", "../../victim", "/proc/self/environ", "/dev/null"):
        assert post(admin_client, f"{base}/save/", {"path": path}).status_code == 400
    assert victim.read_text() == "root only\n"
    other, _ = register_lab_host(lab_hosts[1])
    reconcile_pools(other)
    elsewhere = Pool.objects.filter(host=other).first()
    refused = post(admin_client, f"{base}/save/", {"pool": elsewhere.pk})
    assert refused.status_code == 400 and "not on the guest's host" in refused.json()["detail"]
    local = Pool.objects.get(host=host, name="local")
    missing = post(admin_client, f"{base}/save/", {"pool": 999999})
    assert missing.status_code == 400 and "No pool" in missing.json()["detail"]
    for change, words in (({"iso_library": True}, "ISO library"),
                          ({"pool_type": "logical"}, "file pools"),
                          ({"active": False}, "not active"),
                          ({"available": 1024}, "MiB free")):
        Pool.objects.filter(pk=local.pk).update(**change)
        refused = post(admin_client, f"{base}/save/", {"pool": local.pk})
        assert refused.status_code == 400 and words in refused.json()["detail"], change
        Pool.objects.filter(pk=local.pk).update(iso_library=False, pool_type=local.pool_type,
                                                active=True, available=local.available)
    assert not Job.objects.filter(kind="guest.save").exists()

    job = run(post(admin_client, f"{base}/save/", {"pool": local.pk}), save_body)
    assert job.state == "succeeded", job.error
    volume = Volume.objects.get(pk=job.result["volume"])
    assert volume.pool == local and volume.name.startswith(guest.name)
    assert volume.name.endswith(".save")
    saved = Guest.objects.get(pk=guest.pk)
    assert saved.state == "shutoff" and saved.saved_volume == volume
    assert saved.saved_path == volume.path
    assert Path(volume.path).read_bytes()[:16] == QEMU_MAGIC
    assert admin_client.get(f"{base}/").json()["saved_volume"] == volume.pk
    page = admin_client.get(f"/guests/{guest.pk}/").content.decode()
    assert volume.name in page and 'data-action="restore"' in page
    # Not offered as a disk to attach.
    assert f'<option value="{volume.pk}">' not in page

    # The volume is locked: no upload, wipe, resize or attaching can change what a
    # restore trusts. Downloading it is allowed (an operator's own guest's memory).
    vbase = f"/api/v1/volumes/{volume.pk}"
    upload = put(admin_client, f"{vbase}/content/", b"\0" * 4096)
    assert upload.status_code == 409 and "saved memory" in upload.json()["detail"]
    assert post(admin_client, f"{vbase}/wipe/").status_code == 409
    assert post(admin_client, f"{vbase}/resize/", {"size": "2G"}).status_code == 409
    _, second = create_tiny_guest(lab_hosts[0], admin_client, "c1b")
    try:
        attach = post(admin_client, f"/api/v1/guests/{second.pk}/disks/", {"volume": volume.pk})
        assert attach.status_code == 409 and "saved memory" in attach.json()["detail"]
    finally:
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), str(second.uuid))
    assert Path(volume.path).read_bytes()[:16] == QEMU_MAGIC

    job = run(post(admin_client, f"{base}/restore/"), restore_body)
    assert job.state == "succeeded", job.error
    assert Guest.objects.get(pk=guest.pk).state == "running"
    assert TINY_GUEST_TICK in read_console_until(VirtTarget(host.uri, allow_insecure=True),
                                                 str(guest.uuid), TINY_GUEST_TICK,
                                                 60)
    # The app's own save volume is deleted after the restore, the guest's record cleared.
    assert not Volume.objects.filter(pk=volume.pk).exists()
    assert not Path(volume.path).exists()
    restored = Guest.objects.get(pk=guest.pk)
    assert (restored.saved_path, restored.saved_volume, restored.saved_definition) \
        == ("", None, "")


def test_an_edited_save_image_in_an_operators_volume_is_refused(
        running_guest: tuple[Host, Guest], operator_client: Client,
        lab_hosts: list[Any], tmp_path: Path) -> None:  # noqa: F811
    """The finding, step by step, as an operator, and its variants."""
    host, guest = running_guest
    client = operator_client
    base = f"/api/v1/guests/{guest.pk}"
    job = run(post(client, f"{base}/save/"), save_body)
    assert job.state == "succeeded", job.error
    own = Volume.objects.get(pk=job.result["volume"])
    download = client.get(f"/api/v1/volumes/{own.pk}/content/")
    assert download.status_code == 200
    image = b"".join(download.streaming_content)
    assert image.startswith(QEMU_MAGIC)

    local = Pool.objects.get(host=host, name="local")
    created = post(client, "/api/v1/volumes/", {"pool": local.pk, "name":
                                                f"mine-{uuid.uuid4().hex[:6]}.img",
                                                "size": "1M", "format": "raw"})
    assert created.status_code == 201, created.json()
    mine = created.json()
    victim = tmp_path / "victim"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    other_disk = Volume.objects.filter(pool__host=host).exclude(pk__in=[own.pk, mine["id"]]) \
        .first()
    disk = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<source file='{}'/><target dev='vdb' bus='virtio'/></disk>")
    variants: dict[str, Callable[[str], str]] = {
        "disk: a root-only host file": lambda xml: xml.replace(
            "<devices>", "<devices>" + disk.format(victim), 1),
        "disk: a block device of the host": lambda xml: xml.replace(
            "<devices>", "<devices>" + disk.format("/dev/loop0").replace(
                "type='file'", "type='block'").replace("file=", "dev="), 1),
        "disk: another guest's volume": lambda xml: xml.replace(
            "<devices>", "<devices>" + disk.format(
                other_disk.path if other_disk else "/var/lib/libvirt/images/x.img"), 1),
        "another uuid": lambda xml: xml.replace(str(guest.uuid), str(uuid.uuid4())),
        "initrd: a root-only host file": lambda xml: _replace_tag(xml, "initrd", str(victim)),
        "kernel command line": lambda xml: _replace_tag(xml, "cmdline", "init=/bin/sh"),
        "emulator": lambda xml: _replace_tag(xml, "emulator", "/bin/sh"),
        "serial to a host file": lambda xml: xml.replace(
            "<serial type='pty'>", f"<serial type='file'><source path='{victim}'/>", 1),
        "static root label": lambda xml: xml.replace(
            "</domain>", "<seclabel type='static' model='dac' relabel='no'>"
            "<label>+0:+0</label></seclabel></domain>"),
    }
    for name, edit in variants.items():
        uploaded = put(client, f"/api/v1/volumes/{mine['id']}/content/",
                       edit_qemu_image(image, edit))
        assert uploaded.status_code == 201, (name, uploaded.json())
        response = post(client, f"{base}/restore/", {"volume": mine["id"]})
        assert response.status_code == 400, (name, response.json())
        assert "differs from the guest's own" in response.json()["detail"] \
            or "not of" in response.json()["detail"], (name, response.json())
        assert virt.get_domain(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid)).state \
            == "shutoff", name
    assert victim.read_text() == "root only\n"

    # No save image at all; a volume of another host: refused.
    uploaded = put(client, f"/api/v1/volumes/{mine['id']}/content/", b"\x55" * 65536)
    assert uploaded.status_code == 201, uploaded.json()
    response = post(client, f"{base}/restore/", {"volume": mine["id"]})
    assert response.status_code == 400 and "no libvirt save image" in response.json()["detail"]
    other, _ = register_lab_host(lab_hosts[1])
    reconcile_pools(other)
    theirs = Volume.objects.filter(pool__host=other).first()
    if theirs is not None:
        response = post(client, f"{base}/restore/", {"volume": theirs.pk})
        assert response.status_code == 400 and "not on" in response.json()["detail"]
    assert not Job.objects.filter(kind="guest.restore").exists()

    # An untouched copy of the guest's own image restores from the operator's volume
    # (checked, and restored with the checked definition); that volume is theirs: kept.
    assert put(client, f"/api/v1/volumes/{mine['id']}/content/", image).status_code == 201
    job = run(post(client, f"{base}/restore/", {"volume": mine["id"]}), restore_body)
    assert job.state == "succeeded", job.error
    assert virt.get_domain(VirtTarget(host.uri, allow_insecure=True),
                           str(guest.uuid)).state == "running"
    assert Volume.objects.filter(pk=mine["id"]).exists()
    # The guest's own (now stale) save is deleted by its next save, not left to pile up.
    job = run(post(client, f"{base}/save/"), save_body)
    assert job.state == "succeeded", job.error
    assert not Volume.objects.filter(pk=own.pk).exists()
    newest = Volume.objects.get(pk=job.result["volume"])
    # Deleting the save volume leaves nothing to restore: refused with a clear message.
    assert client.delete(f"/api/v1/volumes/{newest.pk}/").status_code == 204
    response = post(client, f"{base}/restore/")
    assert response.status_code == 400 and "gone" in response.json()["detail"]
    # Deleting the guest with its volumes takes its save image along.
    assert post(client, f"{base}/start/").status_code == 200
    job = run(post(client, f"{base}/save/"), save_body)
    assert job.state == "succeeded", job.error
    last = Volume.objects.get(pk=job.result["volume"])
    deleted = client.delete(f"{base}/?confirm={guest.name}&delete_volumes=true")
    assert deleted.status_code == 204
    assert not Path(last.path).exists()


def _replace_tag(xml: str, tag: str, value: str) -> str:
    start = xml.index(f"<{tag}>") + len(tag) + 2
    return xml[:start] + value + xml[xml.index(f"</{tag}>"):]


def test_a_save_on_shared_storage_is_locked_through_every_hosts_pool(
        running_guest: tuple[Host, Guest], operator_client: Client,
        lab_hosts: list[Any]) -> None:  # noqa: F811
    """The same save file seen through the other host's pool of the shared storage (its
    own volume row): no write into it there either, and no restore of this guest from it
    (it is not a volume of the guest's host)."""
    host, guest = running_guest
    base = f"/api/v1/guests/{guest.pk}"
    shared = Pool.objects.get(host=host, name=SHARED_POOL)
    job = run(post(operator_client, f"{base}/save/", {"pool": shared.pk}), save_body)
    assert job.state == "succeeded", job.error
    own = Volume.objects.get(pk=job.result["volume"])
    other, _ = register_lab_host(lab_hosts[1])
    reconcile_pools(other)
    theirs = Pool.objects.get(host=other, name=SHARED_POOL)
    assert post(operator_client, f"/api/v1/pools/{theirs.pk}/refresh/").status_code == 200
    twin = Volume.objects.get(pool=theirs, path=own.path)
    assert twin.pk != own.pk
    upload = put(operator_client, f"/api/v1/volumes/{twin.pk}/content/", b"\0" * 4096)
    assert upload.status_code == 409 and "saved memory" in upload.json()["detail"]
    assert post(operator_client, f"/api/v1/volumes/{twin.pk}/wipe/").status_code == 409
    response = post(operator_client, f"{base}/restore/", {"volume": twin.pk})
    assert response.status_code == 400 and "not on" in response.json()["detail"]
    assert Path(own.path).read_bytes()[:16] == QEMU_MAGIC
    job = run(post(operator_client, f"{base}/restore/", {"volume": own.pk}), restore_body)
    assert job.state == "succeeded", job.error
    assert virt.get_domain(VirtTarget(host.uri, allow_insecure=True),
                           str(guest.uuid)).state == "running"
    assert not Path(own.path).exists()  # its own save: deleted after the restore
