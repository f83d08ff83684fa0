"""Hostile guest file systems through the import API, on the demo host: a VMware VM (.vmx
and a monolithicSparse .vmdk) whose disk holds a file system built to trip a reader, or is
cut short, is previewed and imported. Each ends with a clear refusal naming what stopped
the inspection (a note, where inspection merely cannot read the guest), and nothing is
made: no volume, no guest, no job, no scratch file. The readers' CPU time and peak memory
are measured in a child interpreter (tests/conversions/inspection/measure.py) and are
within the product's limits: those limits, not the clock, are what stopped them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.inspection import run
from conversions.inspection.kernel import MAX_KERNEL_IMAGE
from conversions.v2v import import_job
from guests.models import Guest
from hosts.models import Host
from storage.models import Pool, Volume
from tests.conversions.inspection import hostile
from tests.conversions.inspection.diskmaker import MIB, ext4, root_tree
from tests.conversions.inspection.measure import inspect_measured
from tests.conversions.v2v.conftest import make_vmdk
from tests.conversions.v2v.test_guest_devices import _vm
from tests.conversions.v2v.test_import_api import post
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import ACTIVE_STATES, Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db
DISK = "vm/disk0.vmdk"
CPU_SECONDS = 2  # the readers' CPU limit where a reader must meet it (20 s in production)


@dataclass(frozen=True)
class Hostile:
    build: Callable[[Path], Path]  # a raw disk image
    refusal: str  # what the refusal says
    cpu_seconds: int | None = None  # the readers' CPU limit for this image


def _in_disk(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    return lambda base: hostile.in_mbr_disk(base, build(base))


def _xfs_disk(base: Path) -> Path:
    fs = base / "xfs.img"
    with open(fs, "wb") as image:
        image.truncate(4 * MIB)
        image.write(b"XFSB")
    return hostile.in_mbr_disk(base, fs)


REFUSED = {
    "truncated-ext4": Hostile(
        hostile.truncated_fs, "the disk's file system: the ext4 file system spans 16777216 "
        "bytes but the disk holds 65536: the image is truncated"),
    "ext4-cut-in-its-partition": Hostile(
        _in_disk(lambda base: hostile.truncated_fs(base, keep=8 * MIB)),
        "partition 1: the ext4 file system spans 16777216 bytes but its partition holds "
        "8388608"),
    "damaged-ext4": Hostile(_in_disk(hostile.damaged_fs),
                            "partition 1: the file system is damaged or unreadable"),
    "huge-directory": Hostile(_in_disk(hostile.huge_directory_fs),
                              "partition 1: the directory /boot holds more than 10000 "
                              "entries: refused."),
    "endless-root-directory": Hostile(
        _in_disk(hostile.spinning_root_fs), "partition 1: reading the file system was "
        f"stopped (debugfs hit its CPU time limit of {CPU_SECONDS} s): it is damaged or "
        "built to trip its reader.", cpu_seconds=CPU_SECONDS),
    "gigabytes-to-open": Hostile(
        _in_disk(hostile.giant_geometry_fs), "partition 1: reading the file system was "
        "stopped (debugfs hit its memory limit of 512 MiB)"),
    "looping-partition-chain": Hostile(
        hostile.looping_extended_disk,
        "The partition table is damaged: the extended partition's chain loops."),
}


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where inspection makes its temporary files during the test (empty after it)."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _made(demo: Host) -> tuple[int, int, int]:
    return (Volume.objects.filter(pool__host=demo).count(),
            Guest.objects.filter(host=demo).count(), Job.objects.count())


def _import(client: Client, demo: Host) -> Any:
    pool = Pool.objects.get(host=demo, name="default")
    return post(client, "/api/v1/imports/", {"source": "vm/vm.vmx", "host": demo.pk,
                                             "pool": pool.pk, "format": "raw"})


def _check_readers(area: Path, case: Hostile) -> None:
    """The same inspection in a child interpreter: stopped by the product's bounds."""
    measured = inspect_measured(area / DISK, "vmdk", cpu_seconds=case.cpu_seconds)
    assert measured.error == "DamagedImage" and case.refusal in measured.message
    assert measured.readers_peak_bytes < run.READER_ADDRESS_SPACE
    assert measured.inspector_peak_bytes < MAX_KERNEL_IMAGE  # the largest read it keeps
    cpu_limit = case.cpu_seconds or run.READER_CPU_SECONDS
    assert measured.readers_cpu_seconds <= cpu_limit + 1


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_hostile_guest_is_refused_and_nothing_is_made(
        name: str, operator_client: Client, demo: Host, area: Path, tmp_path: Path,
        scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = REFUSED[name]
    if case.cpu_seconds:
        monkeypatch.setattr(run, "READER_CPU_SECONDS", case.cpu_seconds)
    built = tmp_path / "built"
    built.mkdir()
    _vm(area, case.build(built))
    before = _made(demo)
    preview = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
    assert preview.status_code == 422, preview.json()
    detail = preview.json()["detail"]
    assert detail.startswith(f"Inspecting {DISK}: ") and case.refusal in detail
    assert detail.endswith("Nothing was imported.")
    started = _import(operator_client, demo)
    assert started.status_code == 422 and started.json()["detail"] == detail
    assert _made(demo) == before
    assert not Job.objects.filter(state__in=ACTIVE_STATES).exists()
    assert list(scratch.iterdir()) == []
    for action in ("import.inspect", "guest.import"):
        assert AuditRecord.objects.get(action=action, result="failed").message == detail
    _check_readers(area, case)


def _cut_vmdk(area: Path, tmp_path: Path) -> None:
    """A bootable-shaped disk whose VMDK lost its last grain: qemu-img would read the
    missing grain as zeros and convert it without a word."""
    root = root_tree(tmp_path, fstab="/dev/sda1 / ext4 defaults 0 1\n")
    _vm(area, hostile.in_mbr_disk(tmp_path, ext4(tmp_path / "fs.img", root, 16)))
    os.truncate(area / DISK, os.path.getsize(area / DISK) - 4096)


def test_a_vmdk_cut_short_is_refused_before_inspection(
        operator_client: Client, demo: Host, area: Path, tmp_path: Path) -> None:
    _cut_vmdk(area, tmp_path)
    before = _made(demo)
    for answer in (post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"}),
                   _import(operator_client, demo)):
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("'disk0.vmdk' is truncated: its grain "
                                                  "tables name data up to byte ")
    assert _made(demo) == before


@pytest.mark.parametrize(("build", "note"), [
    (_xfs_disk, f"Inspection: {DISK} was not inspected: No Linux root file system was found "
                "(partition 1: file system xfs is not readable here.). Its disks and NICs "
                "get the target's defaults."),
    (_in_disk(hostile.looping_links_fs),
     "Inspection: partition 1: /etc/hostname is a loop of symbolic links."),
])
def test_what_inspection_cannot_read_is_a_note(
        build: Callable[[Path], Path], note: str, operator_client: Client, demo: Host,
        area: Path, tmp_path: Path, scratch: Path) -> None:
    """Not hostile, only unreadable (here): the preview says why, the import goes ahead."""
    _vm(area, build(tmp_path))
    preview = post(operator_client, "/api/v1/imports/inspect/", {"source": "vm/vm.vmx"})
    assert preview.status_code == 200, preview.json()
    assert note in preview.json()["warnings"]
    started = _import(operator_client, demo)
    assert started.status_code == 202, started.json()
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("turn_hostile", ["huge-directory", "cut-vmdk"])
def test_a_source_made_hostile_after_the_start_fails_its_job(
        turn_hostile: str, operator_client: Client, demo: Host, area: Path,
        tmp_path: Path) -> None:
    """The job inspects afresh: a disk swapped after the request was accepted fails the
    job with the same refusal, before any volume is made."""
    _vm(area, _xfs_disk(tmp_path))
    started = _import(operator_client, demo)
    assert started.status_code == 202, started.json()
    volumes, guests = _made(demo)[:2]
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    if turn_hostile == "cut-vmdk":
        (swapped / "area").mkdir()
        _cut_vmdk(swapped / "area", swapped)
        os.replace(swapped / "area" / DISK, area / DISK)
        expected = "'disk0.vmdk' is truncated"
    else:
        make_vmdk(area / "vm", "disk0", "monolithicSparse",
                  _in_disk(hostile.huge_directory_fs)(swapped))
        expected = (f"Inspecting {DISK}: partition 1: the directory /boot holds more than "
                    "10000 entries: refused. Nothing was imported.")
    run_job(started.json()["id"], import_job.run_import, task_id="t", worker="w")
    job = Job.objects.get(pk=started.json()["id"])
    assert job.state == "failed" and job.error.startswith(expected)
    assert job.error.endswith("Nothing of the import was kept.")
    assert _made(demo)[:2] == (volumes, guests)
    assert not AuditRecord.objects.filter(action="volume.create").exists()
