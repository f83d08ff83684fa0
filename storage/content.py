"""Whether a hypervisor may open a volume's content, and what a dead writer leaves behind.

A volume whose bytes are being written (an upload, an import's conversion) is WRITING
until its content was checked as a whole (storage.images); one whose format libvirt now
reads differently from the one checked is CHANGED. Neither is attached, cloned, used by a
guest that starts, or exported: `refuse_unusable` / `refuse_unusable_paths` say why.

If the process writing a volume dies (a web process killed mid-upload), its job stops
sending heartbeats and the reaper marks it interrupted; `recover_abandoned` then empties
the volume (an upload: re-created empty at its former size) or deletes it (a volume an
import made), so nothing half-written is left, also after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from hosts.models import Host
from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage.errors import StorageError
from storage.models import Volume
from xenweb.jobs.models import ACTIVE_STATES, Job
from xenweb.jobs.signals import job_interrupted

log = logging.getLogger(__name__)
Content = Volume.Content
UPLOAD_KIND = "volume.upload"


def why_unusable(volume: Volume) -> str:
    """"" when a hypervisor may open the volume, else why not (for humans)."""
    if volume.content_state == Content.WRITING:
        return (f"Volume '{volume.name}' is being written and its content was not checked "
                "yet (or its writer died and it waits to be emptied).")
    if volume.content_state == Content.CHANGED:
        return (f"libvirt reads volume '{volume.name}' otherwise than as the "
                f"{volume.format or 'raw'} image its content was checked as (another format, "
                "or a backing file): wipe it or upload its image again before using it.")
    return ""


def refuse_unusable(volume: Volume, doing: str) -> None:
    reason = why_unusable(volume)
    if reason:
        raise StorageError(f"{reason} It cannot be {doing}.")


def unusable(host: Host | int, paths: Iterable[str]) -> list[Volume]:
    wanted = [p for p in paths if p]
    if not wanted:
        return []
    return list(Volume.objects.filter(pool__host=host, path__in=wanted)
                .exclude(content_state=Content.READY))


def refuse_unusable_paths(host: Host | int, paths: Iterable[str], doing: str) -> None:
    """StorageError if a volume of `host` at one of `paths` may not be opened."""
    for volume in unusable(host, paths):
        refuse_unusable(volume, doing)


def state_after_sync(previous_format: str | None, previous_state: str,
                     reported_format: str, backing: str = "") -> str:
    """The content state once libvirt reports `reported_format` (and `backing`) for a
    cached volume.

    libvirt's pool refresh probes file formats: a raw disk whose guest wrote a qcow2
    header into it is then reported as qcow2 with that header's backing file. The
    content is no longer what was checked. A file image with a backing file is never
    one the app made or accepted (block pools' snapshot volumes, raw, are not images)."""
    if previous_format and reported_format and previous_format != reported_format:
        return Content.CHANGED
    if backing and reported_format not in ("", "raw"):
        return Content.CHANGED
    return previous_state


def store(pool: Any, info: Any) -> Volume:
    """Create or update the cached volume from libvirt's VolumeInfo. A format that changed
    under a cached volume makes a ready one CHANGED (see state_after_sync) and is not
    taken over: the cache keeps the format its content was checked as. The content state
    is written only for that change, so a concurrent upload's WRITING mark is never lost.
    A volume in which libvirt reads a backing file is CHANGED from the start."""
    defaults = {"path": info.path, "format": info.format, "capacity": info.capacity,
                "allocation": info.allocation}
    backing = getattr(info, "backing", "")
    changed = 0
    existing = Volume.objects.filter(pool=pool, name=info.name).first()
    if existing is None:
        state = state_after_sync(None, Content.READY, info.format, backing)
        volume, _ = Volume.objects.get_or_create(pool=pool, name=info.name,
                                                 defaults={**defaults, "content_state": state})
        return volume
    if state_after_sync(existing.format, Content.READY, info.format,
                        backing) == Content.CHANGED:
        # The cache keeps the format the content was checked as (what attaching uses).
        if existing.format:
            defaults.pop("format")
        changed = Volume.objects.filter(pk=existing.pk, content_state=Content.READY).update(
            content_state=Content.CHANGED)
        if changed:
            log.warning("volume %s now reads as %s, not %s: marked changed", existing,
                        info.format, existing.format)
    Volume.objects.filter(pk=existing.pk).update(**defaults, updated_at=timezone.now())
    for key, value in defaults.items():
        setattr(existing, key, value)
    if changed:
        existing.content_state = Content.CHANGED
    return existing


def mark_writing(volume: Volume, job: Job | int) -> None:
    job_id = job if isinstance(job, int) else job.pk
    Volume.objects.filter(pk=volume.pk).update(content_state=Content.WRITING,
                                               content_job=job_id)
    volume.content_state, volume.content_job = Content.WRITING, job_id


def mark_ready(volume: Volume, fmt: str | None = None) -> None:
    """The content was checked (or is empty): as `fmt` when given (libvirt's format of a
    volume just wiped or re-created), else as the cached format."""
    changes: dict[str, Any] = {"content_state": Content.READY, "content_job": None}
    if fmt:
        changes["format"] = volume.format = fmt
    Volume.objects.filter(pk=volume.pk).update(**changes)
    volume.content_state, volume.content_job = Content.READY, None


def _empty(volume: Volume) -> None:
    pool = volume.pool
    host = pool.host
    virt.delete_volume(host.virt_target, volume.path)
    info = virt.create_volume(host.virt_target, pool.name, volume.name, max(volume.capacity, 1),
                              volume.format or "raw")
    Volume.objects.filter(pk=volume.pk).update(
        path=info.path, format=info.format, capacity=info.capacity,
        allocation=info.allocation, content_state=Content.READY, content_job=None)


def _delete(volume: Volume) -> None:
    host = volume.pool.host
    try:
        virt.delete_volume(host.virt_target, volume.path)
    except VirtError as exc:
        if "no storage vol" not in str(exc).lower() and "not found" not in str(exc).lower():
            raise
    volume.delete()


def recover_abandoned() -> list[int]:
    """Volumes left WRITING by a job that is no longer active: an upload's volume is
    emptied, a volume an import made is deleted. Returns their ids; a host that cannot
    be reached now is tried again at the next reaping (the volume stays unusable)."""
    from xenweb.audit.services import record

    recovered = []
    for volume in Volume.objects.select_related("pool__host").filter(
            content_state=Content.WRITING):
        job = Job.objects.filter(pk=volume.content_job).first() if volume.content_job \
            else None
        if job is not None and job.state in ACTIVE_STATES:
            continue
        target = {"target_type": "storage.volume", "target_id": volume.pk,
                  "target_label": str(volume)}
        try:
            if job is None or job.kind == UPLOAD_KIND:
                _empty(volume)
                action = "emptied"
            else:
                _delete(volume)
                action = "deleted"
        except VirtError as exc:
            log.warning("could not clear the half-written volume %s: %s", volume, exc)
            continue
        record("volume.recover", **target, job=volume.content_job,
               message=f"half-written by job #{volume.content_job}: {action}")
        recovered.append(target["target_id"])
    return recovered


def _on_interrupted(sender: Any, job: Job, **kwargs: Any) -> None:
    try:
        recover_abandoned()
    except Exception:  # never break the reaper; the next round tries again
        log.exception("after interrupted job %s", job.pk)


def connect() -> None:
    job_interrupted.connect(_on_interrupted, dispatch_uid="storage.content.recover")
