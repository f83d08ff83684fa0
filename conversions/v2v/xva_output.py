"""The seed's V2V in one action: a VMware (or OVA/OVF) source straight into an XVA file.

No guest is defined and no volume made: every disk is converted to a raw scratch file, the
XVA is written into the export area (`$XENWEB_DATA_DIR/export/`) and the job's result names
the URL that streams it, like an export's. The XVA can then be imported here (or into
XenServer/XCP-ng) like any other.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

from django.urls import reverse

from conversions.v2v import qemu
from conversions.v2v.export_job import export_dir
from conversions.v2v.failures import fail
from conversions.v2v.import_job import source_image, verify_manifest
from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused, Proposal
from conversions.v2v.sources import work_dir
from conversions.v2v.xva_writer import ExportDisk, ExportVm, write_xva
from hosts.virt import domain_xml as dx
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter

XVA_KIND = "import.xva"


def check_xva_output(proposal: Proposal, params: dict[str, Any]) -> str:
    """The XVA's VM name; refuses what cannot become an XVA, before the job starts."""
    if proposal.kind == "xva":
        raise ImportRefused(f"{proposal.source} is an XVA already: import it as a guest.")
    if not proposal.images:
        raise ImportRefused(f"{proposal.source} has no disk image to convert.")
    name = params.get("name") or proposal.name
    name = "".join(c if c.isalnum() or c in "_.+-" else "-" for c in name).strip("-.+_")[:64]
    if not dx.NAME_RE.match(name or ""):
        raise ImportRefused("Give the VM a name: letters, digits and _ . + - (1 to 64).")
    return name


def _vm(proposal: Proposal, params: dict[str, Any], name: str,
        disks: list[ExportDisk]) -> ExportVm:
    keep = params.get("keep_macs", True)
    return ExportVm(name=name, description=proposal.description[:1000],
                    vcpus=int(params.get("vcpus") or proposal.vcpus),
                    memory_mib=int(params.get("memory_mib") or proposal.memory_mib),
                    hvm=(params.get("type") or proposal.type) != "pv",
                    uuid=str(uuid.uuid4()), disks=disks,
                    macs=[nic.mac if keep and nic.mac else "" for nic in proposal.nics])


def _write(job: Job, proposal: Proposal, name: str, target: Path,
           reporter: ProgressReporter) -> None:
    """Each disk to raw scratch (the first half of the progress), then the XVA."""
    sizes = [disk.virtual_size for disk in proposal.images]
    total = 2 * sum(sizes) or 1
    reporter.update(0, total=total, unit=Job.Unit.BYTES, force=True)
    if proposal.kind == "ova":
        verify_manifest(proposal, reporter)
    with contextlib.ExitStack() as stack:
        disks, done = [], 0
        for number, disk in enumerate(proposal.images, start=1):
            message = f"Converting disk {number} of {len(sizes)}"

            def progress(fraction: float, base: int = done, size: int = disk.virtual_size,
                         message: str = message) -> None:
                reporter.update(base + int(fraction * size), message=message)

            scratch = work_dir() / f"xva-out-{uuid.uuid4().hex}.raw"
            stack.callback(scratch.unlink, missing_ok=True)
            with source_image(proposal, disk, lambda f: None) as image:
                qemu.convert(image, str(scratch), "raw", virtual_size=disk.virtual_size,
                             existing=False, on_progress=progress)
            done += disk.virtual_size
            disks.append(ExportDisk(str(scratch), disk.virtual_size))
        written = done

        def counted(size: int) -> None:
            nonlocal written
            written += size
            reporter.update(min(written, total), message="Writing the XVA")

        write_xva(_vm(proposal, job.params, name, disks), target,
                  compress=job.params.get("compress", ""), on_bytes=counted)


def run_convert_to_xva(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    params = job.params
    reporter.configure(cancellable=True)
    target: Path | None = None
    try:
        reporter.update(0, message=f"Inspecting {params['source']}", force=True)
        proposal = inspect(params["source"])
        name = check_xva_output(proposal, params)
        target = export_dir() / f"{job.pk}-{name}.xva"
        _write(job, proposal, name, target, reporter)
    except (ImportRefused, JobCancelled, JobError, OSError) as exc:
        if target is not None:
            target.unlink(missing_ok=True)
        fail(job, "import.xva", exc, "No XVA was written.", source=params.get("source"))
    except BaseException:
        if target is not None:
            target.unlink(missing_ok=True)
        raise
    record("import.xva", user=job.owner, target=job, source=params["source"],
           file=target.name, disks=len(proposal.images))
    return {"download": reverse("api:export-download", args=[job.pk]), "file": target.name,
            "bytes": target.stat().st_size, "format": "xva", "name": name,
            "warnings": proposal.warnings}
