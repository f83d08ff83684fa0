"""Starting a P2V job, and its body: copy every chosen disk, verify it, define the guest.

Nothing is defined until every disk is verified; the guest is not started. On failure the
volumes that are not verified are removed; on cancel every volume the job made is removed.
A login password never enters the job's params: it travels through handoff.py.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.urls import reverse

from guests.create import CreateGuestSerializer, plan
from guests.create import create as create_guest
from guests.errors import GuestError
from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage.models import Pool, Volume
from storage.p2v import handoff
from storage.p2v.copy import RETRIES, DiskCopy, Target, copy_disk, digest_list
from storage.p2v.inventory import Inventory, propose, read_inventory
from storage.p2v.ssh import P2VError, Secret, Source, confirm_host_key
from storage.p2v.verify import verify_disk
from storage.services import _store_volume, resync_pool
from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.services import start_job

KIND = "p2v"
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


def volume_name(name: str, index: int) -> str:
    return f"{name}-p2v-disk{index}.img"


def _guest_data(request: Request, inventory: Inventory, volume_ids: list[int]) -> dict[str, Any]:
    nics = [{"network": request.network, **({"mac": nic.mac} if request.keep_macs else {})}
            for nic in inventory.nics]
    data = CreateGuestSerializer(data={
        "name": request.name, "host": request.host.pk, "type": "hvm",
        "vcpus": request.vcpus or min(inventory.cpu.count, 64),
        "memory_mib": request.memory_mib or max(256, inventory.memory_bytes // MIB),
        "disks": [{"volume": pk} for pk in volume_ids], "nics": nics,
        "vnc": True, "description": f"P2V of {inventory.hostname} ({inventory.os_name})",
    })
    if not data.is_valid():
        raise P2VError(f"The proposed guest is not valid: {data.errors}")
    return dict(data.validated_data)


def start_p2v(request: Request, *, user: Any, http_request: Any = None,
              enqueue: bool = True) -> Job:
    """Check everything that can be checked before copying, then queue the job (without
    ``enqueue`` the caller runs it)."""
    try:
        confirm_host_key(request.source, request.fingerprint)
        inventory = read_inventory(request.source)
        if request.format != "raw":
            raise P2VError("Only raw volumes are written by P2V for now.")
        if not request.disks:
            raise P2VError("Choose at least one disk to copy.")
        disks = []
        for path in request.disks:
            disk = inventory.disk(path)
            if disk is None:
                raise P2VError(f"The source has no disk {path}.")
            disks.append({"device": path, "size": disk.size})
        if "python3" not in inventory.tools:
            raise P2VError("The source has no python3, which streams its disks.")
        if request.pool.host_id != request.host.pk:
            raise P2VError(f"Pool '{request.pool.name}' is not on host '{request.host}'.")
        needed = sum(disk["size"] for disk in disks)
        if request.pool.available < needed:
            raise P2VError(f"Pool '{request.pool.name}' has {request.pool.available // MIB} "
                           f"MiB free; the disks need {needed // MIB} MiB.")
        taken = [volume_name(request.name, index) for index in range(len(disks))
                 if Volume.objects.filter(pool=request.pool,
                                          name=volume_name(request.name, index)).exists()]
        if taken:
            raise P2VError(f"Pool '{request.pool.name}' has a volume named {taken[0]} already.")
        plan(_guest_data(request, inventory, []))  # host, name, type and NICs are fine
    except (P2VError, GuestError) as exc:
        record("p2v.start", user=user, request=http_request, target_type="p2v",
               target_label=request.source.label, result="failed", message=str(exc))
        raise P2VError(str(exc)) from exc
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
    from storage.tasks import p2v_task

    with transaction.atomic():
        job = start_job(p2v_task, kind=KIND, owner=user, title=f"P2V {request.source.address} "
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

    def verifying(self, index: int, disk: DiskCopy, position: int) -> None:
        self.reporter.update(self.total, message=(
            f"Verifying disk {index + 1} of {self.count} ({disk.device}): "
            f"{position // MIB} of {disk.size // MIB} MiB"))


def _discard(request: Request, paths: list[str]) -> None:
    host = request.host
    for path in paths:
        try:
            virt.delete_volume(host.uri, path, allow_insecure=host.is_lab)
        except VirtError:
            pass
        Volume.objects.filter(pool=request.pool, path=path).delete()
    resync_pool(request.pool)


def p2v_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    request, disks = _load(job)
    reporter.configure(cancellable=True)
    reporter.update(0, message=f"Connecting to {request.source.label}", force=True)
    made: list[str] = []
    verified: list[str] = []
    results: list[dict[str, Any]] = []
    try:
        confirm_host_key(request.source, request.fingerprint)
        inventory = read_inventory(request.source)
        host, pool = request.host, request.pool
        progress = _Progress(reporter, job.total or 0, len(disks))
        volume_ids = []
        done_before = 0
        for index, wanted in enumerate(disks):
            disk = inventory.disk(wanted["device"])
            if disk is None:
                raise P2VError(f"The source no longer has the disk {wanted['device']}.")
            if disk.size != wanted["size"]:
                raise P2VError(f"{disk.path} is now {disk.size} bytes, not {wanted['size']}.")
            info = virt.create_volume(host.uri, pool.name, volume_name(request.name, index),
                                      disk.size, "raw", allow_insecure=host.is_lab)
            made.append(info.path)
            target = Target(host.uri, info.path, host.is_lab)
            copy = DiskCopy(device=disk.path, size=disk.size)
            progress.start_disk(done_before)
            started = time.monotonic()
            copy_disk(request.source, copy, target, retries=RETRIES,
                      progress=lambda c, pos, i=index: progress.copied(i, c, pos),
                      bwlimit=request.bwlimit,
                      on_retry=lambda line: (reporter.log(line), reporter.flush()))
            copied_in = time.monotonic() - started
            verify_disk(copy, target, lambda pos, i=index, c=copy: progress.verifying(i, c, pos))
            verified.append(info.path)
            reporter.log(f"{disk.path}: {disk.size} bytes copied in {copied_in:.1f} s "
                         f"({copy.wire_bytes} bytes sent, {copy.attempts} attempt(s)); verified")
            details = virt.volume_details(host.uri, info.path, allow_insecure=host.is_lab)
            volume = _store_volume(pool, details)  # type: ignore[arg-type]
            volume_ids.append(volume.pk)
            done_before += disk.size
            results.append({"device": disk.path, "size": disk.size, "volume": volume.pk,
                            "path": info.path, "bytes_sent": copy.wire_bytes,
                            "attempts": copy.attempts, "seconds": round(copied_in, 2),
                            "allocation": details.allocation,
                            "sha256_of_regions": digest_list(copy)})
        resync_pool(pool)
        reporter.update(job.total or 0, message="Defining the guest", force=True)
        guest = create_guest(_guest_data(request, inventory, volume_ids), user=job.owner)
    except JobCancelled:
        _discard(request, made)
        record("p2v.run", user=job.owner, target=job, result="failed", message="cancelled",
               removed=made)
        raise
    except (P2VError, GuestError, VirtError) as exc:
        _discard(request, [path for path in made if path not in verified])
        record("p2v.run", user=job.owner, target=job, result="failed", message=str(exc))
        kept = f" The verified volumes were kept: {', '.join(verified)}." if verified else ""
        raise JobError(f"{exc}{kept}") from exc
    record("p2v.run", user=job.owner, target=guest, source=request.source.label,
           disks=[result["device"] for result in results])
    return {"guest": guest.pk, "guest_name": guest.name,
            "guest_url": reverse("guests:detail", args=[guest.pk]), "disks": results,
            "checks": _checks(inventory)}


def _checks(inventory: Inventory) -> list[str]:
    proposal = propose(inventory)
    return [*proposal["checks"], *proposal["warnings"]]
