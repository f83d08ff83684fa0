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

from conversions.inspection.result import Inspection
from conversions.rewrite.convert import ConversionFailed, convert_guest
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
from storage import content, volume_io
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
    files are this machine's, ``Host.files_local``, where this process may write it)."""
    from urllib.parse import urlsplit

    local = host.files_local or not urlsplit(host.uri).hostname
    return (local and not host.in_process_only and os.path.isfile(path)
            and volume_io.may_read_and_write(path))


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


# finish(path, fmt): the converted disk as a file on this machine, before its volume (or,
# for a host this machine cannot write, the upload) gets it.
Finish = Callable[[str, str], None]


def _convert(plan: ImportPlan, image: qemu.Image, disk: ProposedDisk, volume_path: str,
             on_progress: Any, finish: Finish | None = None, *, raw_copy: bool = False) -> None:
    """Convert into the volume; `raw_copy`: `finish` needs the copy as a raw file (a guest
    conversion edits it), so a qcow2 target is written from a raw scratch copy."""
    reachable = _reachable(plan.host, volume_path)
    staged = "raw" if raw_copy and finish is not None else plan.format
    if reachable and staged == plan.format:
        qemu.convert(image, volume_path, plan.format, virtual_size=disk.virtual_size,
                     existing=True, on_progress=on_progress)
        if finish is not None:
            finish(volume_path, plan.format)
        return
    with _scratch(staged) as scratch:
        qemu.convert(image, scratch, staged, virtual_size=disk.virtual_size,
                     existing=False, on_progress=on_progress)
        if finish is not None:
            finish(scratch, staged)
        if reachable:
            qemu.convert(qemu.Image(scratch, staged), volume_path, plan.format,
                         virtual_size=disk.virtual_size, existing=True,
                         on_progress=lambda fraction: None)
        elif staged == plan.format:
            _upload_file(plan.host, volume_path, Path(scratch))
        else:
            with _scratch(plan.format) as final:
                qemu.convert(qemu.Image(scratch, staged), final, plan.format,
                             virtual_size=disk.virtual_size, existing=False,
                             on_progress=lambda fraction: None)
                _upload_file(plan.host, volume_path, Path(final))


@contextlib.contextmanager
def _scratch(fmt: str) -> Iterator[str]:
    path = work_dir() / f"out-{uuid.uuid4().hex}.{fmt}"
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


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


def guest_for(plan: ImportPlan, proposal: Proposal) -> GuestPlan:
    """The guest as the source describes it; its disks are the volumes the import makes."""
    try:
        domain_type = domain_type_for(plan.host, plan.os_type)
    except CapabilityError as exc:
        raise ImportRefused(str(exc)) from exc
    nics = tuple(dx.NicSpec(mac=n["mac"], bridge=n.get("bridge", ""),
                            network=n.get("network", "")) for n in plan.nics)
    spec = dx.DomainSpec(
        name=plan.name, domain_type=domain_type, os_type=plan.os_type,
        memory_mib=plan.memory_mib, vcpus=plan.vcpus, nics=nics,
        vnc=plan.os_type != dx.PV,  # PV: the hvc0 console; a framebuffer needs qemu in dom0
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


@dataclass
class Notes:
    """What the import chose and changed: the job's log, as it happens, and its result."""

    reporter: ProgressReporter
    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            self.reporter.log(line)


@dataclass
class FirstDisk:
    """What happens to the converted first disk before its volume gets it: the inspection
    of a source that could not be inspected in place (OVA, XVA), and the guest conversion
    its device plan asks for (conversions.rewrite)."""

    plan: ImportPlan
    proposal: Proposal
    reporter: ProgressReporter
    notes: Notes
    found: Inspection | None = None
    devices: guest_devices.DevicePlan | None = None

    @property
    def raw_copy(self) -> bool:
        """A Xen PV guest is converted: the conversion edits a raw copy."""
        return self.plan.os_type == dx.PV

    def __call__(self, work: Provisioning, path: str, fmt: str) -> None:
        if self.devices is None:
            self._status("Inspecting the converted disk")
            self.found, self.devices = guest_devices.adjust_to_copy(
                work, self.plan.name, path, fmt, "the converted disk")
            self.notes.add(*self.devices.notes)
        target = self.devices.rewrite
        if target is None or self.found is None:
            return
        if fmt != "raw":  # pragma: no cover - raw_copy gives the conversion a raw file
            raise ImportRefused(f"The guest conversion needs a raw copy, not {fmt}.")
        self._status(f"Converting the guest for {target.label}")
        try:
            changes = convert_guest(path, self.found, target)
        except ConversionFailed as exc:
            raise ImportRefused(f"Converting the guest for {target.label}: {exc} Nothing "
                                "was imported.") from exc
        self.notes.add(*(f"Conversion: {change}" for change in changes))

    def _status(self, message: str) -> None:
        self.reporter.update(self.reporter.job.done, message=message, force=True)


def _converter(plan: ImportPlan, proposal: Proposal, reporter: ProgressReporter,
               first: FirstDisk) -> Callable[[Provisioning], None]:
    """The provisioning's fill: every disk converted into its volume and checked; the first
    one inspected (where it was not before) and converted for the target on the way."""

    def fill(work: Provisioning) -> None:
        done = 0
        count = len(proposal.images)
        for number, (disk, output) in enumerate(zip(proposal.images, work.volumes,
                                                    strict=True)):
            message = f"Converting disk {number + 1} of {count}"

            def progress(fraction: float, base: int = done, size: int = disk.virtual_size,
                         message: str = message) -> None:
                reporter.update(base + int(fraction * size), message=message)

            def finish(path: str, fmt: str) -> None:
                first(work, path, fmt)

            # An XVA disk is rebuilt (a gzipped OVA disk unpacked) first, for half of its
            # share, then converted.
            staged = proposal.kind == "xva" or disk.compression == "gzip"
            with source_image(proposal, disk, lambda f: progress(f / 2)) as image:
                reporter.update(done, message=message, force=True)
                _convert(plan, image, disk, output.path,
                         (lambda f: progress(0.5 + f / 2)) if staged else progress,
                         finish if number == 0 else None, raw_copy=first.raw_copy)
            _check_output(plan, output)
            done += disk.virtual_size
            reporter.update(done, message=message, force=True)
        reporter.update(done, message="Defining the guest", force=True)

    return fill


def settle_type(plan: ImportPlan, proposal: Proposal, found: Inspection | None,
                params: dict[str, Any]) -> str:
    """The guest type where the request names none (guest_devices.choose_type); the note
    saying why, "" where it was asked for."""
    os_type, why = guest_devices.choose_type(plan.host, plan.name, proposal.type, found,
                                             params.get("type") or "")
    plan.os_type = os_type or plan.os_type
    return why


def run_import(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    params = job.params
    reporter.configure(cancellable=True)
    try:
        reporter.update(0, message=f"Inspecting {params['source']}", force=True)
        proposal = inspect(params["source"])
        plan = plan_import(proposal, params)
        notes = Notes(reporter)
        found = guest_devices.inspect_source(proposal)
        if why := settle_type(plan, proposal, found, params):
            notes.add(why)
        guest_plan = guest_for(plan, proposal)
        first = FirstDisk(plan, proposal, reporter, notes, found)
        if found is not None:  # inspected before anything is copied
            proposal.inspection = found.as_dict()
            first.devices = guest_devices.plan_devices(
                plan.name, found, guest_plan.spec.domain_type, plan.os_type)
            notes.add(*first.devices.notes)
        total = sum(d.virtual_size for d in proposal.images) or 1
        reporter.update(0, total=total, unit=Job.Unit.BYTES, force=True)
        if proposal.kind == "ova":
            verify_manifest(proposal, reporter)
        work = Provisioning(guest_plan, _volumes(plan, proposal), user=job.owner, job=job)
        if first.devices is not None:
            work.adjust(disk_layout=first.devices.layout, nic_model=first.devices.nic_model)
        guest = work.run(_converter(plan, proposal, reporter, first))
    except (ImportRefused, VirtError, GuestError, StorageError, JobCancelled, JobError,
            OSError) as exc:
        fail(job, "guest.import", exc, "Nothing of the import was kept.",
             source=params.get("source"))
    resync_pool(plan.pool)
    made = [volume.path for volume in work.volumes]
    record("guest.import", user=job.owner, target=guest, source=params["source"],
           disks=len(made), format=plan.format)
    return {"guest": guest.pk, "name": guest.name, "type": plan.os_type, "volumes": made,
            "warnings": proposal.warnings, "devices": notes.lines}
