"""The import job: inspect again, convert every disk into a new volume, define the guest.

guests.provisioning makes the volumes and defines the guest; the conversion is its fill.
Nothing is defined until every disk converted; on failure or cancel, every volume made
so far and every scratch file are removed. Progress is bytes of virtual disk converted.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversions.v2v import guest_devices, qemu
from conversions.v2v.failures import fail
from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused, Proposal, ProposedDisk
from conversions.v2v.sources import import_root, work_dir
from guests.errors import GuestError
from guests.models import Guest
from guests.provisioning import GuestPlan, NewVolume, Provisioning
from guests.services import random_mac
from hosts.capabilities import CapabilityError, domain_type_for
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import domain_xml as dx
from hosts.virt import volumes as virt
from storage import content
from storage.access import is_boot_pool
from storage.errors import ImageRefused, StorageError
from storage.images import check_file, check_libvirt_report
from storage.models import Pool, Volume
from storage.services import resync_pool
from storage.transfers import CHUNK
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter

FORMATS = ("raw", "qcow2")


@dataclass
class ImportPlan:
    """The checked request: where the guest goes and how it looks."""

    host: Host
    pool: Pool
    format: str
    name: str
    os_type: str
    vcpus: int
    memory_mib: int
    nics: list[dict[str, str]] = field(default_factory=list)


def plan_import(proposal: Proposal, params: dict[str, Any]) -> ImportPlan:
    """Refuse (ImportRefused) what cannot be imported, before anything is created."""
    host = Host.objects.filter(pk=params.get("host")).first()
    if host is None:
        raise ImportRefused(f"There is no host with id {params.get('host')}.")
    pool = Pool.objects.filter(pk=params.get("pool"), host=host).first()
    if pool is None:
        raise ImportRefused(f"Pool {params.get('pool')} is not on host '{host}'.")
    if not pool.active:
        raise ImportRefused(f"Pool '{pool.name}' is not active: start it first.")
    if is_boot_pool(pool):
        raise ImportRefused(f"Pool '{pool.name}' serves the boot files directory of host "
                            f"'{host}': it holds no disks.")
    fmt = params.get("format", "qcow2")
    if fmt not in FORMATS:
        raise ImportRefused(f"Volumes are created as raw or qcow2, not '{fmt}'.")
    name = params.get("name") or proposal.name
    name = "".join(c if c.isalnum() or c in "_.+-" else "-" for c in name).strip("-.+_")[:64]
    if not dx.NAME_RE.match(name or ""):
        raise ImportRefused("Give the guest a name: letters, digits and _ . + - (1 to 64).")
    if Guest.objects.filter(host=host, name=name).exists():
        raise ImportRefused(f"Host '{host}' has a guest named '{name}' already.")
    os_type = dx.GUEST_TYPES.get(params.get("type") or proposal.type)
    if os_type is None:
        raise ImportRefused(f"Unknown guest type '{params.get('type')}': use hvm or pv.")
    vcpus = int(params.get("vcpus") or proposal.vcpus)
    memory = int(params.get("memory_mib") or proposal.memory_mib)
    if not 1 <= vcpus <= 512 or not 16 <= memory <= 16 * 1024 * 1024:
        raise ImportRefused("vCPUs must be 1 to 512 and memory 16 MiB to 16 TiB.")
    needed = sum(d.virtual_size for d in proposal.images)
    if pool.available and fmt == "raw" and needed > pool.available:
        raise ImportRefused(f"Pool '{pool.name}' has {pool.available} bytes free; the disks "
                            f"need up to {needed}.")
    mapping = params.get("nics") or []
    default = {k: params[k] for k in ("bridge", "network") if params.get(k)} or \
        {"network": "default"}
    nics = []
    for index, nic in enumerate(proposal.nics):
        target = mapping[index] if index < len(mapping) and mapping[index] else default
        mac = nic.mac if nic.mac and params.get("keep_macs", True) else random_mac()
        nics.append({"mac": mac, **{k: v for k, v in target.items() if k in ("bridge",
                                                                             "network")}})
    return ImportPlan(host=host, pool=pool, format=fmt, name=name, os_type=os_type,
                      vcpus=vcpus, memory_mib=memory, nics=nics)


def _reachable(host: Host, path: str) -> bool:
    """Whether this machine writes the volume's file itself (local hosts and hosts whose
    files are this machine's, ``Host.files_local``)."""
    from urllib.parse import urlsplit

    local = host.files_local or not urlsplit(host.uri).hostname
    return local and not host.in_process_only and os.path.isfile(path)


@contextlib.contextmanager
def source_image(proposal: Proposal, disk: ProposedDisk,
                  on_progress: Any) -> Iterator[qemu.Image]:
    """What qemu-img reads for a disk; XVA disks are first rebuilt into a scratch file."""
    root = import_root()
    if proposal.kind == "xva":
        from conversions.v2v.xva import rebuild_disk

        scratch = work_dir() / f"xva-{uuid.uuid4().hex}.raw"
        try:
            rebuild_disk(root / proposal.source, disk, scratch, on_progress)
            yield qemu.Image(str(scratch), "raw")
        finally:
            scratch.unlink(missing_ok=True)
        return
    if disk.member and disk.compression == "gzip":
        from conversions.v2v.ova import unpack_member

        scratch = work_dir() / f"ova-{uuid.uuid4().hex}.{disk.format}"
        try:
            unpack_member(root / proposal.source, proposal.extra["members"][disk.member],
                          disk, scratch, on_progress)
            yield qemu.Image(str(scratch), disk.format)
        finally:
            scratch.unlink(missing_ok=True)
        return
    if disk.member:
        ova = root / proposal.source
        yield qemu.Image(str(ova), disk.format, offset=int(proposal.extra["members"][
            disk.member]["offset"]), size=int(proposal.extra["members"][disk.member]["size"]))
        return
    yield qemu.Image(str(root / disk.path), disk.format)


def verify_manifest(proposal: Proposal, reporter: ProgressReporter) -> None:
    from conversions.v2v.ova import verify_digests

    checked = 0

    def counted(size: int) -> None:
        nonlocal checked
        checked += size
        reporter.update(0, message=f"Verifying the manifest checksums ({checked} bytes)")

    verify_digests(import_root() / proposal.source, proposal, counted)


def _upload_file(host: Host, volume_path: str, scratch: Path) -> None:
    """Stream a converted scratch file into a volume on a host this machine cannot write."""
    with (virt.VolumeUpload(host.virt_target, volume_path, sparse=True) as upload,
          open(scratch, "rb") as f):
        while chunk := f.read(CHUNK):
            upload.write(chunk)


def _convert(plan: ImportPlan, image: qemu.Image, disk: ProposedDisk, volume_path: str,
             on_progress: Any) -> None:
    if _reachable(plan.host, volume_path):
        qemu.convert(image, volume_path, plan.format, virtual_size=disk.virtual_size,
                     existing=True, on_progress=on_progress)
        return
    scratch = work_dir() / f"out-{uuid.uuid4().hex}.{plan.format}"
    try:
        qemu.convert(image, str(scratch), plan.format, virtual_size=disk.virtual_size,
                     existing=False, on_progress=on_progress)
        _upload_file(plan.host, volume_path, scratch)
    finally:
        scratch.unlink(missing_ok=True)


def _check_output(plan: ImportPlan, volume: Volume) -> None:
    """The converted volume as a whole, before anything may use it (storage.content)."""
    try:
        if _reachable(plan.host, volume.path):
            check_file(volume.path, plan.format)
        reported, backing = virt.content_report(plan.host.virt_target, volume.path)
        check_libvirt_report(plan.format, reported, backing)
    except ImageRefused as exc:
        raise ImportRefused(f"The converted disk was refused: {exc}") from exc
    content.mark_ready(volume)


def domain_type_or_empty(plan: ImportPlan) -> str:
    """The driver the guest would run on, "" where the host cannot run that type (the
    import refuses that itself, with the capability's message)."""
    try:
        return domain_type_for(plan.host, plan.os_type)
    except CapabilityError:
        return ""


def _guest(plan: ImportPlan, proposal: Proposal) -> GuestPlan:
    """The guest as the source describes it; its disks are the volumes the import makes."""
    try:
        domain_type = domain_type_for(plan.host, plan.os_type)
    except CapabilityError as exc:
        raise ImportRefused(str(exc)) from exc
    nics = tuple(dx.NicSpec(mac=n["mac"], bridge=n.get("bridge", ""),
                            network=n.get("network", "")) for n in plan.nics)
    spec = dx.DomainSpec(
        name=plan.name, domain_type=domain_type, os_type=plan.os_type,
        memory_mib=plan.memory_mib, vcpus=plan.vcpus, nics=nics, vnc=True,
        description=proposal.description[:1000],
        bootloader="pygrub" if plan.os_type == dx.PV else "",
        firmware=proposal.firmware if plan.os_type == dx.HVM else "bios")
    try:
        dx.validate(spec)
    except dx.SpecError as exc:
        raise ImportRefused(str(exc)) from exc
    return GuestPlan(host=plan.host, spec=spec)


def _volumes(plan: ImportPlan, proposal: Proposal) -> list[NewVolume]:
    ext = "img" if plan.format == "raw" else "qcow2"
    return [NewVolume(pool=plan.pool, name=f"{plan.name}-disk{number}.{ext}",
                      capacity=max(disk.virtual_size, 512), format=plan.format)
            for number, disk in enumerate(proposal.images)]


def _inspect_copy(plan: ImportPlan, proposal: Proposal, work: Provisioning,
                  reporter: ProgressReporter) -> list[str]:
    """A source inspection could not read in place (OVA, XVA): its converted first disk,
    where this machine holds it; the guest's devices follow what it finds."""
    volume = work.volumes[0]
    if not _reachable(plan.host, volume.path):
        return ["The guest was not inspected (its disk is not on this machine): the disks "
                "and NICs get the target's defaults."]
    reporter.update(reporter.job.done, message="Inspecting the converted disk", force=True)
    why_not: list[str] = []
    found = guest_devices.inspect_disk(volume.path, plan.format, "the converted disk",
                                       why_not)
    devices = guest_devices.plan_devices(proposal, found, work.plan.spec.domain_type,
                                         plan.os_type)
    work.adjust(disk_layout=devices.layout, nic_model=devices.nic_model)
    return why_not or list(devices.notes)


def _converter(plan: ImportPlan, proposal: Proposal, reporter: ProgressReporter,
               notes: list[str]) -> Callable[[Provisioning], None]:
    """The provisioning's fill: every disk converted into its volume and checked; an
    uninspected source's first disk inspected once converted."""

    def fill(work: Provisioning) -> None:
        done = 0
        count = len(proposal.images)
        for number, (disk, output) in enumerate(zip(proposal.images, work.volumes,
                                                    strict=True)):
            message = f"Converting disk {number + 1} of {count}"

            def progress(fraction: float, base: int = done, size: int = disk.virtual_size,
                         message: str = message) -> None:
                reporter.update(base + int(fraction * size), message=message)

            # An XVA disk is rebuilt (a gzipped OVA disk unpacked) first, for half of its
            # share, then converted.
            staged = proposal.kind == "xva" or disk.compression == "gzip"
            with source_image(proposal, disk, lambda f: progress(f / 2)) as image:
                reporter.update(done, message=message, force=True)
                _convert(plan, image, disk, output.path,
                         (lambda f: progress(0.5 + f / 2)) if staged else progress)
            _check_output(plan, output)
            done += disk.virtual_size
            reporter.update(done, message=message, force=True)
            if number == 0 and proposal.kind in ("ova", "xva"):
                notes.extend(_inspect_copy(plan, proposal, work, reporter))
        reporter.update(done, message="Defining the guest", force=True)

    return fill


def run_import(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    params = job.params
    reporter.configure(cancellable=True)
    try:
        reporter.update(0, message=f"Inspecting {params['source']}", force=True)
        proposal = inspect(params["source"])
        plan = plan_import(proposal, params)
        guest_plan = _guest(plan, proposal)
        notes: list[str] = []
        devices = None
        found = guest_devices.inspect_source(proposal)
        if found is not None:  # inspected before anything is copied
            proposal.inspection = found.as_dict()
            devices = guest_devices.plan_devices(proposal, found,
                                                 guest_plan.spec.domain_type, plan.os_type)
            notes.extend(devices.notes)
        total = sum(d.virtual_size for d in proposal.images) or 1
        reporter.update(0, total=total, unit=Job.Unit.BYTES, force=True)
        if proposal.kind == "ova":
            verify_manifest(proposal, reporter)
        work = Provisioning(guest_plan, _volumes(plan, proposal), user=job.owner, job=job)
        if devices is not None:
            work.adjust(disk_layout=devices.layout, nic_model=devices.nic_model)
        guest = work.run(_converter(plan, proposal, reporter, notes))
    except (ImportRefused, VirtError, GuestError, StorageError, JobCancelled, JobError,
            OSError) as exc:
        fail(job, "guest.import", exc, "Nothing of the import was kept.",
             source=params.get("source"))
    resync_pool(plan.pool)
    made = [volume.path for volume in work.volumes]
    record("guest.import", user=job.owner, target=guest, source=params["source"],
           disks=len(made), format=plan.format)
    return {"guest": guest.pk, "name": guest.name, "volumes": made,
            "warnings": proposal.warnings, "devices": notes}
