"""The export job: a shut-off guest to an XVA, or one of its disks to raw/qcow2/vmdk.

The file is written into `$XENWEB_DATA_DIR/export/`; the job's result names the URL
that streams it to an authenticated client. Disks are read where this machine can read
them (local hosts, ``Host.files_local`` hosts); a half-written file is removed on failure
or cancel.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.urls import reverse

from conversions.v2v import qemu
from conversions.v2v.import_job import _reachable
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.sources import work_dir
from conversions.v2v.xva_writer import ExportDisk, ExportVm, write_xva
from guests.export_formats import EXPORT_FORMATS
from guests.models import Guest
from hosts.virt import VirtError, domains
from storage.content import unusable, why_unusable
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.selectors import require_target

FORMATS = tuple(EXPORT_FORMATS)
SUFFIX = {"xva": ".xva", "ova": ".ova", "raw": ".img", "qcow2": ".qcow2", "vmdk": ".vmdk"}


def export_dir() -> Path:
    path = Path(settings.DATA_DIR) / "export"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def export_file(job: Job) -> Path | None:
    name = (job.result or {}).get("file", "")
    path = export_dir() / name
    return path if name and "/" not in name and path.is_file() else None


def _disks(guest: Guest) -> tuple[Any, list[Any]]:
    host = guest.host
    try:
        info = domains.get_domain(host.virt_target, str(guest.uuid))
    except VirtError as exc:
        raise ImportRefused(str(exc)) from exc
    if info.state != "shutoff":
        raise ImportRefused(f"Guest '{guest.name}' is {info.state}: shut it down before "
                            "exporting it (a running guest's disks are not consistent).")
    disks = [d for d in info.xml.disks if d.device == "disk"]
    for volume in unusable(host, [d.source for d in disks]):
        raise ImportRefused(f"{why_unusable(volume)} It cannot be exported.")
    for disk in disks:
        if not _reachable(host, disk.source):
            raise ImportRefused(f"The disk {disk.source} is not readable from this appliance "
                                "(only file volumes of hosts whose files are on this machine "
                                "are exported).")
    return info, disks


def check_export(guest: Guest, fmt: str, disk_index: int) -> None:
    if fmt not in FORMATS:
        raise ImportRefused(f"Export formats are {', '.join(FORMATS)}.")
    _info, disks = _disks(guest)
    if not disks:
        raise ImportRefused(f"Guest '{guest.name}' has no disk to export.")
    if fmt not in ("xva", "ova") and not 0 <= disk_index < len(disks):
        raise ImportRefused(f"Guest '{guest.name}' has {len(disks)} disks; there is no disk "
                            f"{disk_index}.")


@contextlib.contextmanager
def _as_raw(disk: Any, size: int, reporter: ProgressReporter) -> Iterator[str]:
    fmt = disk.format or "raw"
    if fmt == "raw":
        yield disk.source
        return
    scratch = work_dir() / f"export-{uuid.uuid4().hex}.raw"
    try:
        qemu.convert(qemu.Image(disk.source, fmt), str(scratch), "raw", virtual_size=size,
                     existing=False, on_progress=lambda f: reporter.update(
                         reporter.job.done, message=f"Reading {os.path.basename(disk.source)}"
                         f" ({int(f * 100)} %)"))
        yield str(scratch)
    finally:
        scratch.unlink(missing_ok=True)


def _size(disk: Any) -> int:
    return qemu.info(qemu.Image(disk.source, disk.format or "raw")).virtual_size


def _write_ova(guest: Guest, info: Any, disks: list[Any], sizes: list[int], target: Path,
               reporter: ProgressReporter) -> None:
    """Each disk as a streamOptimized VMDK (scratch), then the OVF, manifest and tar."""
    from conversions.v2v.ova_writer import OvaDisk, envelope, write_ova

    reporter.update(0, total=sum(sizes) or 1, unit=Job.Unit.BYTES, force=True)
    scratch = work_dir() / f"ova-{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        parts, done = [], 0
        for index, (disk, size) in enumerate(zip(disks, sizes, strict=True)):
            vmdk = scratch / f"{guest.name}-disk{index + 1}.vmdk"
            qemu.convert(qemu.Image(disk.source, disk.format or "raw"), str(vmdk), "vmdk",
                         virtual_size=size, existing=False,
                         on_progress=lambda f, base=done, size=size: reporter.update(
                             base + int(f * size), message="Writing streamOptimized VMDKs"),
                         options=["-o", "subformat=streamOptimized"])
            done += size
            parts.append(OvaDisk(vmdk=vmdk, capacity=size))
        reporter.update(done, message="Packing the OVA", force=True)
        ovf = envelope(guest.name, info.xml.description, info.xml.vcpus, info.xml.memory_mib,
                       parts, [n.mac for n in info.xml.nics])
        write_ova(target, guest.name, ovf, parts)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()


def run_export(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    guest = require_target(job, Guest.objects.select_related("host"),
                           gone="The guest no longer exists.")
    fmt, compress = job.params["format"], job.params.get("compress", "")
    reporter.configure(cancellable=True)
    suffix = SUFFIX[fmt] + {"gzip": ".gz", "zstd": ".zst"}.get(compress, "")
    target = export_dir() / f"{job.pk}-{guest.name}{suffix}"
    try:
        info, disks = _disks(guest)
        sizes = [_size(d) for d in disks]
        if fmt == "xva":
            reporter.update(0, total=sum(sizes) or 1, unit=Job.Unit.BYTES, force=True)
            with contextlib.ExitStack() as stack:
                paths = [stack.enter_context(_as_raw(d, s, reporter))
                         for d, s in zip(disks, sizes, strict=True)]
                vm = ExportVm(name=guest.name, description=info.xml.description,
                              vcpus=info.xml.vcpus, memory_mib=info.xml.memory_mib,
                              hvm=info.xml.os_type == "hvm", uuid=str(guest.uuid),
                              disks=[ExportDisk(p, s) for p, s in zip(paths, sizes,
                                                                       strict=True)],
                              macs=[n.mac for n in info.xml.nics])
                written = 0

                def counted(size: int) -> None:
                    nonlocal written
                    written += size
                    reporter.update(written, message="Writing the XVA")

                write_xva(vm, target, compress=compress, on_bytes=counted)
        elif fmt == "ova":
            _write_ova(guest, info, disks, sizes, target, reporter)
        else:
            index = int(job.params.get("disk", 0))
            disk, size = disks[index], sizes[index]
            reporter.update(0, total=size or 1, unit=Job.Unit.BYTES, force=True)
            options = ["-o", "subformat=streamOptimized"] if fmt == "vmdk" else []
            image = qemu.Image(disk.source, disk.format or "raw")
            qemu.convert(image, str(target), fmt, virtual_size=size, existing=False,
                         on_progress=lambda f: reporter.update(int(f * size),
                                                               message="Converting"),
                         options=options)
    except (ImportRefused, VirtError, JobCancelled, OSError) as exc:
        target.unlink(missing_ok=True)
        record("guest.export", user=job.owner, target=guest, result="failed",
               message="cancelled" if isinstance(exc, JobCancelled) else str(exc),
               format=fmt)
        if isinstance(exc, JobCancelled):
            raise
        raise JobError(str(exc)) from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    record("guest.export", user=job.owner, target=guest, format=fmt, file=target.name)
    return {"download": reverse("api:export-download", args=[job.pk]), "file": target.name,
            "bytes": target.stat().st_size, "format": fmt}
