"""Starting a P2V job, and its body: copy every chosen disk, verify it, define the guest.

guests.provisioning makes the volumes and defines the guest; the copy is its fill. Nothing
is defined until every disk is verified; the guest is not started. On failure the volumes
that are not verified are removed; on cancel every volume the job made is removed. A login
password never enters the job's params: it travels through handoff.py.

qcow2 volumes: the stream from the source can only be written as raw bytes (a libvirt
upload writes a volume's file as it is, and a qcow2 file cannot be laid out before its
data is known without writing a qcow2 encoder of our own). So a qcow2 disk is copied into
a sparse raw staging volume first, then the host converts it (``virStorageVolCreateXMLFrom``
with format qcow2: libvirt runs ``qemu-img convert`` there, no byte passes through this
process) and the staging volume is deleted. That is a second copy on the host while the
conversion runs: the pool must hold the raw disk and its qcow2 form at once (checked
before the start). Only the qcow2 volume is verified, through its guest view (qcow2.py)
against the source's checksums, which covers the copy and the conversion in one read.

The guest's devices: once the first disk's copy is verified, it is inspected where this
machine holds its file (as a V2V import inspects its converted disk, through the same
conversions.v2v.guest_devices), and the guest gets the disk bus and NIC model its drivers
and its root's name allow: a server whose fstab says ``/dev/sda2`` must see SATA disks, not
virtio ones. A damaged partition table or file system fails the job before that copy is
kept: nothing of it stays. Elsewhere (a remote host) the guest gets the target's defaults.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.urls import reverse

from conversions.p2v import handoff
from conversions.p2v.address import checked
from conversions.p2v.copy import RETRIES, DiskCopy, Target, copy_disk, digest_list
from conversions.p2v.inventory import Disk, Inventory, propose, read_inventory
from conversions.p2v.ssh import P2VError, Secret, Source, confirm_host_key
from conversions.p2v.verify import verify_disk
from conversions.v2v import guest_devices
from conversions.v2v.proposal import ImportRefused
from guests.create import plan
from guests.create_request import RequestRefused, checked_request
from guests.errors import GuestError
from guests.provisioning import GuestPlan, NewVolume, Provisioning
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage.access import is_boot_pool
from storage.content import mark_ready, store
from storage.errors import StorageError
from storage.models import Pool, Volume
from storage.services import discard_new_volume, resync_pool
from storage.volume_io import direct_path
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.services import start_job

KIND = "p2v"
P2V_TASK = "storage.tasks.p2v"  # the name it had before conversions/ (stored in job rows)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    """A checked P2V request (see api.P2VStartSerializer)."""

    source: Source
    fingerprint: str
    disks: list[str]
    host: Host
    pool: Pool
    name: str
    format: str = "raw"
    vcpus: int | None = None
    memory_mib: int | None = None
    network: str = "default"
    keep_macs: bool = True
    bwlimit: int = 0  # bytes per second read from the source; 0: no limit


FORMATS = ("raw", "qcow2")
SUFFIX = {"raw": ".img", "qcow2": ".qcow2"}


def volume_name(name: str, index: int, fmt: str = "raw") -> str:
    return f"{name}-p2v-disk{index}{SUFFIX[fmt]}"


def staging_name(name: str, index: int) -> str:
    """The raw volume a disk is copied into before the host converts it to qcow2."""
    return f"{name}-p2v-disk{index}.part"


def _names(request: Request, index: int) -> list[str]:
    names = [volume_name(request.name, index, request.format)]
    return [*names, staging_name(request.name, index)] if request.format != "raw" else names


def _guest(request: Request, inventory: Inventory) -> GuestPlan:
    """The guest P2V defines, checked by the rules of a guest created from the API (its
    disks are the volumes the copy makes)."""
    nics = [{"network": request.network, **({"mac": nic.mac} if request.keep_macs else {})}
            for nic in inventory.nics]
    try:
        data = checked_request({
            "name": request.name, "host": request.host.pk, "type": "hvm",
            "vcpus": request.vcpus or min(inventory.cpu.count, 64),
            "memory_mib": request.memory_mib or max(256, inventory.memory_bytes // MIB),
            "nics": nics, "vnc": True,
            "description": f"P2V of {inventory.hostname} ({inventory.os_name})",
        })
    except RequestRefused as exc:
        raise P2VError(f"The proposed guest is not valid: {exc.field}: {exc}") from exc
    guest, _none = plan(data)
    return guest


def _chosen_disks(request: Request, inventory: Inventory) -> list[dict[str, Any]]:
    if not request.disks:
        raise P2VError("Choose at least one disk to copy.")
    disks = []
    for path in request.disks:
        disk = inventory.disk(path)
        if disk is None:
            raise P2VError(f"The source has no disk {path}.")
        disks.append({"device": path, "size": disk.size})
    return disks


def _check_pool(request: Request, disks: list[dict[str, Any]]) -> None:
    """The pool is on the host, has room, and none of the volume names is taken."""
    pool = request.pool
    if pool.host_id != request.host.pk:
        raise P2VError(f"Pool '{pool.name}' is not on host '{request.host}'.")
    if is_boot_pool(pool):
        raise P2VError(f"Pool '{pool.name}' serves the boot files directory of host "
                       f"'{request.host}': it holds no disks.")
    needed = sum(disk["size"] for disk in disks)
    why = ""
    if request.format == "qcow2":  # the staging copy and its qcow2 form exist together
        needed += max(disk["size"] for disk in disks)
        why = " (a qcow2 disk is converted from a raw copy on the host)"
    if pool.available < needed:
        raise P2VError(f"Pool '{pool.name}' has {pool.available // MIB} MiB free; the disks "
                       f"need {needed // MIB} MiB{why}.")
    for index in range(len(disks)):
        for name in _names(request, index):
            if Volume.objects.filter(pool=pool, name=name).exists():
                raise P2VError(f"Pool '{pool.name}' has a volume named {name} already.")


def start_p2v(request: Request, *, user: Any, http_request: Any = None,
              enqueue: bool = True) -> Job:
    """Check everything that can be checked before copying, then queue the job (without
    ``enqueue`` the caller runs it)."""
    try:
        if request.format not in FORMATS:
            raise P2VError(f"P2V writes raw or qcow2 volumes, not '{request.format}'.")
        request = dataclasses.replace(request, source=checked(request.source))
        confirm_host_key(request.source, request.fingerprint)
        inventory = read_inventory(request.source)
        disks = _chosen_disks(request, inventory)
        if "python3" not in inventory.tools:
            raise P2VError("The source has no python3, which streams its disks.")
        _check_pool(request, disks)
        _guest(request, inventory)  # host, name, type and NICs are fine
    except (P2VError, GuestError) as exc:
        record("p2v.start", user=user, request=http_request, target_type="p2v",
               target_label=request.source.label, result="failed", message=str(exc))
        raise P2VError(str(exc)) from exc
    needed = sum(disk["size"] for disk in disks)
    params = _params(request, disks)
    try:
        return _create_job(request, params, needed, user=user, http_request=http_request,
                           enqueue=enqueue)
    except handoff.HandoffError as exc:
        record("p2v.start", user=user, request=http_request, target_type="p2v",
               target_label=request.source.label, result="failed", message=str(exc))
        raise


def _params(request: Request, disks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the job row keeps: everything but a password (only whether one is used, and
    the name its handoff goes by)."""
    password = request.source.password is not None
    return {
        "source": {"address": request.source.address, "port": request.source.port,
                   "username": request.source.username},
        "login": "password" if password else "key",
        "password_handoff": uuid.uuid4().hex if password else "",
        "fingerprint": request.fingerprint, "disks": disks, "host": request.host.pk,
        "pool": request.pool.pk, "name": request.name, "format": request.format,
        "vcpus": request.vcpus, "memory_mib": request.memory_mib, "network": request.network,
        "keep_macs": request.keep_macs, "bwlimit": request.bwlimit,
    }


def _create_job(request: Request, params: dict[str, Any], needed: int, *, user: Any,
                http_request: Any, enqueue: bool) -> Job:
    """The job row, its password handed over, queued once both are in place (on commit)."""

    with transaction.atomic():
        job = start_job(P2V_TASK, kind=KIND, owner=user, title=f"P2V {request.source.address} "
                        f"→ {request.name}", params=params, unit=Job.Unit.BYTES, total=needed,
                        request=http_request, in_process=request.host.in_process_only,
                        enqueue=enqueue)
        if request.source.password is not None:
            handoff.hand_over(request.source.password, params["password_handoff"])
        record("p2v.start", user=user, request=http_request, target=job,
               source=request.source.label, login=params["login"],
               disks=[disk["device"] for disk in params["disks"]], host=request.host.name,
               pool=request.pool.name, name=request.name)
    return job


def _password(job: Job) -> Secret | None:
    """The job's login password, taken from its handoff (once), or None for a key login."""
    if job.params.get("login") != "password":
        return None
    try:
        return handoff.take(job.params.get("password_handoff", ""))
    except handoff.HandoffError as exc:
        record("p2v.run", user=job.owner, target=job, result="failed", message=str(exc))
        raise JobError(str(exc)) from exc


def _load(job: Job) -> tuple[Request, list[dict[str, Any]]]:
    params = job.params
    password = _password(job)  # first: taken from Redis whatever happens next
    host = Host.objects.filter(pk=params["host"]).first()
    pool = Pool.objects.filter(pk=params["pool"]).first()
    if host is None or pool is None:
        raise JobError("The target host or pool no longer exists.")
    source = Source(**params["source"], password=password)
    return Request(source=source, fingerprint=params["fingerprint"],
                   disks=[disk["device"] for disk in params["disks"]], host=host, pool=pool,
                   name=params["name"], format=params["format"], vcpus=params["vcpus"],
                   memory_mib=params["memory_mib"], network=params["network"],
                   keep_macs=params["keep_macs"], bwlimit=params["bwlimit"]), params["disks"]


def _rate(mib: float) -> str:
    return f"{mib:.1f} MiB/s"


class _Progress:
    """Overall bytes on the job row; the current disk's numbers in the message."""

    def __init__(self, reporter: ProgressReporter, total: int, count: int) -> None:
        self.reporter = reporter
        self.total = total
        self.count = count
        self.before = 0  # bytes of the disks already done
        self.started = time.monotonic()
        self.disk_started = self.started

    def start_disk(self, done_before: int) -> None:
        self.before = done_before
        self.disk_started = time.monotonic()

    def copied(self, index: int, disk: DiskCopy, position: int) -> None:
        elapsed = max(time.monotonic() - self.disk_started, 1e-3)
        rate = position / elapsed / MIB
        eta = (disk.size - position) / (rate * MIB) if rate else 0
        self.reporter.update(self.before + position, message=(
            f"Copying disk {index + 1} of {self.count} ({disk.device}): "
            f"{position // MIB} of {disk.size // MIB} MiB, {_rate(rate)}, ETA {eta:.0f} s, "
            f"{disk.wire_bytes // MIB} MiB sent"))

    def converting(self, index: int, disk: DiskCopy, written: int, *,
                   force: bool = False) -> None:
        self.reporter.update(self.before + disk.size, message=(
            f"Converting disk {index + 1} of {self.count} ({disk.device}) to qcow2 on the "
            f"host: {written // MIB} MiB written (this step cannot be cancelled)"), force=force)

    def verifying(self, index: int, disk: DiskCopy, position: int) -> None:
        self.reporter.update(self.total, message=(
            f"Verifying disk {index + 1} of {self.count} ({disk.device}): "
            f"{position // MIB} of {disk.size // MIB} MiB"))


@dataclass
class _Run:
    """One run of a P2V job: what it was asked, how it reports, what it verified."""

    request: Request
    reporter: ProgressReporter
    progress: _Progress
    owner: Any = None
    verified: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # how the guest sees its disks and NICs

    def target(self, path: str, fmt: str = "raw") -> Target:
        host = self.request.host
        return Target(host.uri, path, host.allow_insecure_transport, fmt,
                      files_local=host.files_local)


def _source_disk(inventory: Inventory, wanted: dict[str, Any]) -> Disk:
    """The source disk the job was started for, as it is now (refused if it changed)."""
    disk = inventory.disk(wanted["device"])
    if disk is None:
        raise P2VError(f"The source no longer has the disk {wanted['device']}.")
    if disk.size != wanted["size"]:
        raise P2VError(f"{disk.path} is now {disk.size} bytes, not {wanted['size']}.")
    return disk


def _new_volumes(request: Request, sources: list[Disk]) -> list[NewVolume]:
    """A raw volume per disk: the guest's, or the staging copy of a qcow2 one."""
    return [NewVolume(pool=request.pool, capacity=disk.size, format="raw",
                      name=volume_name(request.name, index) if request.format == "raw"
                      else staging_name(request.name, index))
            for index, disk in enumerate(sources)]


def _copy(run: _Run, index: int, disk: Disk, volume: Volume) -> tuple[DiskCopy, float]:
    """The source disk copied into its new raw volume: the copy's record and the seconds
    it took."""
    request = run.request
    copy = DiskCopy(device=disk.path, size=disk.size)
    started = time.monotonic()
    copy_disk(request.source, copy, run.target(volume.path), retries=RETRIES,
              progress=lambda c, pos: run.progress.copied(index, c, pos),
              bwlimit=request.bwlimit,
              on_retry=lambda line: (run.reporter.log(line), run.reporter.flush()))
    return copy, time.monotonic() - started


def _convert(run: _Run, work: Provisioning, index: int, copy: DiskCopy) -> Volume:
    """The qcow2 volume the host makes from the raw copy, which is then deleted; it takes
    the raw copy's place among the guest's disks. libvirt cannot abort a conversion: a
    cancel asked meanwhile takes effect once it has finished."""
    host = run.request.host
    raw = work.volumes[index]
    run.reporter.configure(cancellable=False)
    run.progress.converting(index, copy, 0, force=True)
    cancelled = False

    def converting(written: int) -> None:
        nonlocal cancelled
        try:
            run.progress.converting(index, copy, written)
        except JobCancelled:
            cancelled = True

    info = virt.clone_volume(host.virt_target, raw.path,
                             volume_name(run.request.name, index, "qcow2"),
                             fmt="qcow2", progress=converting, source_format="raw")
    work.replace(index, store(run.request.pool, info))
    discard_new_volume(raw, user=run.owner)
    run.reporter.configure(cancellable=True)
    if cancelled:
        raise JobCancelled()
    return work.volumes[index]


def _adjust_devices(run: _Run, work: Provisioning, disk: Disk, volume: Volume) -> None:
    """The verified copy of the first disk inspected (where this machine holds its file);
    the guest's disk bus and NIC model follow what it finds. A damaged copy: P2VError."""
    request = run.request
    label = f"the copy of {disk.path}"
    path = direct_path(request.host, volume.path)
    if path is not None:
        run.reporter.update(run.reporter.job.done, message=f"Inspecting {label}", force=True)
    try:
        _, devices = guest_devices.adjust_to_copy(work, request.name, path, request.format,
                                                  label)
    except ImportRefused as exc:
        raise P2VError(str(exc)) from exc
    notes = list(devices.notes)
    for note in notes:
        run.reporter.log(note)
    run.devices.extend(notes)


def _transfer(run: _Run, work: Provisioning, index: int, disk: Disk) -> dict[str, Any]:
    """Copy one disk, convert it if asked, verify what the guest will see, inspect the
    first one, keep the volume."""
    request = run.request
    copy, seconds = _copy(run, index, disk, work.volumes[index])
    if request.format == "qcow2":
        _convert(run, work, index, copy)
    volume = work.volumes[index]
    verify_disk(copy, run.target(volume.path, request.format),
                lambda pos: run.progress.verifying(index, copy, pos))
    if index == 0:
        _adjust_devices(run, work, disk, volume)  # before it is kept: a refusal removes it
    mark_ready(volume)
    work.keep(volume)  # verified: kept if a later disk fails (not on a cancel)
    run.verified.append(volume.path)
    run.reporter.log(f"{disk.path}: {disk.size} bytes copied in {seconds:.1f} s "
                     f"({copy.wire_bytes} bytes sent, {copy.attempts} attempt(s)); "
                     f"{'converted to qcow2, ' if request.format == 'qcow2' else ''}verified")
    host = request.host
    details = virt.volume_details(host.virt_target, volume.path)
    volume = store(request.pool, details)
    return {"device": disk.path, "size": disk.size, "volume": volume.pk, "path": volume.path,
            "format": request.format, "bytes_sent": copy.wire_bytes,
            "attempts": copy.attempts, "seconds": round(seconds, 2),
            "allocation": details.allocation, "sha256_of_regions": digest_list(copy)}


def p2v_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    request, disks = _load(job)
    reporter.configure(cancellable=True)
    reporter.update(0, message=f"Connecting to {request.source.label}", force=True)
    run = _Run(request, reporter, _Progress(reporter, job.total or 0, len(disks)), job.owner)
    results: list[dict[str, Any]] = []
    work: Provisioning | None = None
    try:
        # Resolved and checked again: an enrolled host or a DNS answer may have changed
        # since the start; every connection of this run goes to this one checked address.
        request = dataclasses.replace(request, source=checked(request.source))
        run.request = request
        confirm_host_key(request.source, request.fingerprint)
        inventory = read_inventory(request.source)
        sources = [_source_disk(inventory, wanted) for wanted in disks]
        guest_plan = _guest(request, inventory)

        def fill(work: Provisioning) -> None:
            for index, disk in enumerate(sources):
                run.progress.start_disk(sum(wanted["size"] for wanted in disks[:index]))
                results.append(_transfer(run, work, index, disk))
            resync_pool(request.pool)
            reporter.update(job.total or 0, message="Defining the guest", force=True)

        work = Provisioning(guest_plan, _new_volumes(request, sources), user=job.owner,
                            job=job)
        guest = work.run(fill)
    except JobCancelled:
        record("p2v.run", user=job.owner, target=job, result="failed", message="cancelled",
               removed=work.removed if work is not None else [])
        raise
    except (P2VError, GuestError, VirtError, StorageError) as exc:
        record("p2v.run", user=job.owner, target=job, result="failed", message=str(exc))
        verified = run.verified
        kept = f" The verified volumes were kept: {', '.join(verified)}." if verified else ""
        raise JobError(f"{exc}{kept}") from exc
    record("p2v.run", user=job.owner, target=guest, source=request.source.label,
           disks=[result["device"] for result in results], format=request.format)
    return {"guest": guest.pk, "guest_name": guest.name,
            "guest_url": reverse("guests:detail", args=[guest.pk]), "disks": results,
            "devices": run.devices, "checks": _checks(inventory)}


def _checks(inventory: Inventory) -> list[str]:
    proposal = propose(inventory)
    return [*proposal["checks"], *proposal["warnings"]]
