"""Uploaded and imported images are checked as a whole before a hypervisor opens them
(issue 18 H1, issue 19's bounded probe): hostile images built with the real qemu-img,
uploaded through the real API on the demo host (libvirt's test driver: the bytes go
through a libvirt stream, the host's file is not readable here); the lab-host variants
(volumes held as local files) are in test_image_checks_lab.py.

A volume whose content is being written, or whose format libvirt now reads differently
from the one checked, is never attached, cloned, started or exported.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

import storage.qemu_img
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget
from hosts.virt.pools import VolumeInfo
from storage import content, images
from storage.errors import ImageRefused
from storage.jobs import clone_body
from storage.models import Pool, Volume
from storage.qemu_img import QemuImgFailed, file_args, info_json
from tests.security import hostile
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

MIB = hostile.MIB


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def put(client: Client, url: str, data: bytes) -> Any:
    return client.put(url, data, content_type="application/octet-stream")


# -- the images themselves: what qemu-img reads in them ---------------------------------


def test_the_hostile_image_of_h1_is_real(tmp_path: Path) -> None:
    """qemu-img reads the backing name at 1.5 MiB (past the first MiB the old check copied)."""
    image = hostile.qcow2_backing_past_first_mib(tmp_path / "h1.qcow2", "/etc/shadow")
    found = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", str(image)],
        capture_output=True, text=True, check=True).stdout)
    assert found["backing-filename"] == "/etc/shadow"
    assert image.stat().st_size > hostile.BACKING_AT


def _hostile(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.img"
    if kind == "backing-at-1.5MiB":
        return hostile.qcow2_backing_past_first_mib(path, "/etc/shadow")
    if kind == "backing":
        return hostile.qcow2_with_backing(path, "/etc/shadow")
    if kind == "data-file":
        return hostile.qcow2_with_data_file(path, tmp_path / "outside.raw")
    if kind == "encrypted":
        return hostile.qcow2_encrypted(path)
    if kind == "luks":
        return hostile.luks(path)
    if kind == "huge-l1":
        return hostile.qcow2_huge_l1(path, 4 * 1024 * 1024)
    if kind == "raw-noise":
        path.write_bytes(os.urandom(MIB))
        return path
    if kind == "vmdk-text":
        path.write_text(hostile.vmdk_descriptor('RW 2048 FLAT "/etc/shadow" 0'))
        return path
    raise AssertionError(kind)


HOSTILE = [  # (image, declared format, what the refusal says)
    ("backing-at-1.5MiB", "qcow2", "backing file"),
    ("backing-at-1.5MiB", "raw", "declared raw but is qcow2"),
    ("backing", "qcow2", "backing file"),
    ("backing", "raw", "declared raw but is qcow2"),
    ("data-file", "qcow2", "external data file"),
    ("encrypted", "qcow2", "encrypted"),
    ("luks", "raw", "declared raw but is luks"),
    ("luks", "qcow2", "declared qcow2 but is luks"),
    ("raw-noise", "qcow2", "declared qcow2 but is not a qcow2"),
    ("huge-l1", "qcow2", "refused"),
    ("vmdk-text", "raw", "declared raw but is vmdk"),
]


@pytest.mark.parametrize(("kind", "declared", "message"), HOSTILE)
def test_the_check_refuses_hostile_images(tmp_path: Path, kind: str, declared: str,
                                          message: str) -> None:
    image = _hostile(kind, tmp_path)
    header = image.read_bytes()[:images.HEADER_BYTES]
    with pytest.raises(ImageRefused, match=message):
        images.check_image(header, declared)
    # The whole file, opened with the declared format, is refused as well.
    if declared == "qcow2" and kind not in ("luks", "raw-noise"):
        with pytest.raises(ImageRefused):
            images.check_file(str(image), declared)


def test_the_check_accepts_clean_images(tmp_path: Path) -> None:
    for cluster in ("64k", "2M"):
        clean = tmp_path / f"clean-{cluster}.qcow2"
        hostile.qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}",
                         str(clean), "64M")
        facts = images.check_image(clean.read_bytes()[:images.HEADER_BYTES], "qcow2",
                                   str(clean))
        assert (facts.format, facts.virtual_size) == ("qcow2", 64 * MIB)
    raw = tmp_path / "clean.img"
    raw.write_bytes(os.urandom(3 * MIB))
    assert images.check_image(raw.read_bytes()[:images.HEADER_BYTES], "raw",
                              str(raw)).virtual_size == 3 * MIB


# -- issue 19: the upload probe runs under the V2V path's prlimit bounds ------------------


def test_the_upload_check_runs_qemu_img_only_through_the_bounded_wrapper() -> None:
    from conversions.v2v import qemu

    source = Path(images.__file__).read_text()
    assert "subprocess" not in source and "info_json" in source
    assert "subprocess.run" not in Path(qemu.__file__).read_text()  # info: the same wrapper
    assert qemu.limited is storage.qemu_img.limited
    argv = storage.qemu_img.limited(["qemu-img", "info"], cpu_seconds=20,
                                    address_space=1024**3)
    assert argv[:3] == ["prlimit", "--cpu=20", f"--as={1024**3}"]


def test_a_prlimited_probe_refuses_a_huge_l1_table_within_its_bounds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-img allocates the whole L1 table when it opens a qcow2 (up to 32 MiB): under a
    64 MiB address-space bound the probe is refused, not the appliance's memory used;
    an L1 table beyond QEMU's own maximum is refused by qemu-img under the default
    bounds; the upload check refuses both before qemu-img runs (header fields bounded)."""
    biggest = hostile.qcow2_huge_l1(tmp_path / "l1.qcow2", 4 * 1024 * 1024)
    beyond = hostile.qcow2_huge_l1(tmp_path / "l1-beyond.qcow2", 8 * 1024 * 1024)
    small = tmp_path / "small.qcow2"
    hostile.qemu_img("create", "-q", "-f", "qcow2", str(small), "64M")
    bound = 64 * MIB
    with pytest.raises(QemuImgFailed, match="memory limit"):
        info_json(file_args(str(biggest), "qcow2"), address_space=bound)
    assert info_json(file_args(str(small), "qcow2"), address_space=bound)["format"] == "qcow2"
    with pytest.raises(QemuImgFailed, match="L1 table too large"):
        info_json(file_args(str(beyond), "qcow2"))
    # The upload check's whole-file probe is that bounded probe: lower the shared bound
    # and it is the kernel's limit that stops qemu-img.
    monkeypatch.setattr(storage.qemu_img, "INFO_ADDRESS_SPACE", bound)
    with pytest.raises(ImageRefused, match="memory limit"):
        images.check_file(str(biggest), "qcow2")
    for image in (biggest, beyond):
        with pytest.raises(ImageRefused, match=r"claims .* bytes: refused"):
            images.check_image(image.read_bytes()[:images.HEADER_BYTES], "qcow2")


# -- uploads through the real API on the demo host (libvirt streams) ---------------------


def _demo_volume(client: Client, demo: Host, name: str, fmt: str) -> dict[str, Any]:
    pool = Pool.objects.get(host=demo, name="default")
    made = post(client, "/api/v1/volumes/", {"pool": pool.pk, "name": name, "size": "8M",
                                             "format": fmt})
    assert made.status_code == 201, made.json()
    return made.json()


@pytest.mark.django_db
@pytest.mark.parametrize(("kind", "declared", "message"), [
    ("backing-at-1.5MiB", "qcow2", "backing file"),
    ("backing-at-1.5MiB", "raw", "declared raw but is qcow2"),
    ("data-file", "qcow2", "external data file"),
    ("luks", "raw", "declared raw but is luks"),
    ("huge-l1", "qcow2", "refused"),
])
def test_hostile_uploads_are_refused_on_the_demo_host(
        operator_client: Client, demo: Host, tmp_path: Path, kind: str, declared: str,
        message: str) -> None:
    vol = _demo_volume(operator_client, demo, f"up-{kind}.{declared}", declared)
    answer = put(operator_client, f"/api/v1/volumes/{vol['id']}/content/",
                 _hostile(kind, tmp_path).read_bytes())
    job = answer.json()
    assert answer.status_code == 422, job["error"]
    assert job["state"] == "failed" and message in job["error"]
    # Refused from its first bytes: not one was written, the volume is as it was.
    assert "Nothing was written: the volume keeps its content" in job["error"]
    assert Volume.objects.get(pk=vol["id"]).content_state == "ready"


@pytest.mark.django_db
def test_a_clean_image_passes_the_check_on_the_demo_host(
        operator_client: Client, demo: Host, tmp_path: Path) -> None:
    """The test driver cannot take an upload stream: a clean image gets past the check to
    the host, which refuses the stream; the volume stays usable (the lab test uploads)."""
    clean = tmp_path / "clean.qcow2"
    hostile.qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", str(clean), "16M")
    vol = _demo_volume(operator_client, demo, "clean.qcow2", "qcow2")
    answer = put(operator_client, f"/api/v1/volumes/{vol['id']}/content/", clean.read_bytes())
    assert answer.status_code == 409 and "virStorageVolUpload" in answer.json()["error"]
    volume = Volume.objects.get(pk=vol["id"])
    assert volume.content_state == "ready" and volume.content_job is None


# -- nothing opens a volume that is being written or changed format ---------------------


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["writing", "changed"])
def test_an_unchecked_volume_is_never_attached_cloned_started_or_a_new_guests_disk(
        operator_client: Client, demo: Host, state: str) -> None:
    vol = _demo_volume(operator_client, demo, f"half-{state}.img", "raw")
    Volume.objects.filter(pk=vol["id"]).update(content_state=state)
    says = "being written" if state == "writing" else "otherwise than as the"
    mail = Guest.objects.get(name="mail01")  # shut off
    attach = post(operator_client, f"/api/v1/guests/{mail.pk}/disks/", {"volume": vol["id"]})
    assert attach.status_code == 409 and says in attach.json()["detail"]
    clone = post(operator_client, f"/api/v1/volumes/{vol['id']}/clone/", {"name": "c.img"})
    assert clone.status_code == 409 and "cannot be cloned" in clone.json()["detail"]
    created = post(operator_client, "/api/v1/guests/", {
        "name": f"g-{state}", "host": demo.pk, "type": "pv", "memory_mib": 256,
        "bootloader": "pygrub", "disks": [{"volume": vol["id"]}]})
    assert created.status_code in (400, 409) and says in json.dumps(created.json())

    # A guest that has the volume already (attached while it was ready) does not start.
    Volume.objects.filter(pk=vol["id"]).update(content_state="ready")
    assert post(operator_client, f"/api/v1/guests/{mail.pk}/disks/",
                {"volume": vol["id"]}).status_code == 200
    Volume.objects.filter(pk=vol["id"]).update(content_state=state)
    start = post(operator_client, f"/api/v1/guests/{mail.pk}/start/")
    assert start.status_code == 409 and says in start.json()["detail"]
    assert Guest.objects.get(pk=mail.pk).state == "shutoff"


@pytest.mark.django_db
def test_a_clone_job_rechecks_its_source(operator_client: Client, demo: Host) -> None:
    """The state may change between the request and the worker: the job checks again."""
    vol = _demo_volume(operator_client, demo, "src.qcow2", "qcow2")
    clone = post(operator_client, f"/api/v1/volumes/{vol['id']}/clone/", {"name": "c.qcow2"})
    assert clone.status_code == 202
    Volume.objects.filter(pk=vol["id"]).update(content_state="writing")
    run_job(clone.json()["id"], clone_body, task_id="t", worker="w")
    job = Job.objects.get(pk=clone.json()["id"])
    assert job.state == "failed" and "being written" in job.error
    assert not Volume.objects.filter(name="c.qcow2").exists()


@pytest.mark.django_db
def test_a_format_libvirt_reads_differently_marks_the_volume_changed(
        operator_client: Client, demo: Host) -> None:
    """A pool refresh that reads a raw disk as qcow2 (a guest wrote a qcow2 header into
    it) does not turn it into a qcow2 volume: it stays raw in the cache, unusable."""
    vol = _demo_volume(operator_client, demo, "guestdisk.img", "raw")
    row = Volume.objects.get(pk=vol["id"])
    content.store(row.pool, VolumeInfo(name=row.name, path=row.path, format="qcow2",
                                       capacity=row.capacity, allocation=0))
    row.refresh_from_db()
    assert (row.format, row.content_state) == ("raw", "changed")
    # The next reconcile keeps it so; only a wipe or a new upload makes it ready again.
    content.store(row.pool, VolumeInfo(name=row.name, path=row.path, format="raw",
                                       capacity=row.capacity, allocation=0))
    row.refresh_from_db()
    assert row.content_state == "changed"  # a wipe or an upload makes it ready (lab test)


@pytest.mark.django_db
def test_the_clone_adapter_refuses_a_source_libvirt_reads_otherwise(demo: Host) -> None:
    from hosts.virt import VirtError
    from hosts.virt import volumes as virt

    pool = Pool.objects.get(host=demo, name="default")
    info = virt.create_volume(VirtTarget(demo.uri), pool.name, "fmt.qcow2", MIB, "qcow2")
    with pytest.raises(VirtError, match=r"reads volume .fmt\.qcow2. as qcow2, not as the raw"):
        virt.clone_volume(VirtTarget(demo.uri), info.path, "fmt-copy.img", source_format="raw")


@pytest.mark.django_db
def test_a_volume_libvirt_reads_with_a_backing_file_is_never_ready(demo: Host) -> None:
    """Found on the host (or re-probed) with a backing file: never an image the app made
    or accepted, so nothing attaches or clones it; block pools' snapshot volumes (raw,
    their origin as backing store) stay usable."""
    pool = Pool.objects.get(host=demo, name="default")
    found = content.store(pool, VolumeInfo(name="overlay.qcow2", path="/x/overlay.qcow2",
                                           format="qcow2", capacity=MIB, allocation=0,
                                           backing="/etc/shadow"))
    assert found.content_state == "changed"
    assert "backing file" in content.why_unusable(found)
    snapshot = content.store(pool, VolumeInfo(name="snap", path="/dev/vg/snap", format="",
                                              capacity=MIB, allocation=0,
                                              backing="/dev/vg/origin"))
    assert snapshot.content_state == "ready"
