"""Job bodies for slow volume actions (run by a worker, or in-process for the demo host)."""

from __future__ import annotations

from typing import Any

from hosts.virt import VirtError
from hosts.virt import volumes as virt
from storage import access, content
from storage.attachments import active_user
from storage.errors import StorageError
from storage.images import check_file
from storage.models import Volume
from storage.services import _store_volume, resync_pool
from storage.transfers import reachable_path
from xenweb.audit.services import record
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.selectors import require_target


def _volume(job: Job) -> Volume:
    volume = require_target(job, Volume.objects.select_related("pool", "pool__host"),
                            gone="The volume no longer exists.")
    guest = active_user(volume)
    if guest is not None:
        raise JobError(f"Volume '{volume.name}' is attached to guest '{guest.name}', which is "
                       f"{guest.state}.")
    return volume


def _check_source(volume: Volume) -> None:
    """A clone copies what libvirt reads: never a volume whose content is not checked, nor
    one with a backing file (where this machine holds the file, qemu-img reads it whole,
    bounded, with the volume's own format; libvirt's view is checked by clone_volume)."""
    try:
        content.refuse_unusable(volume, "cloned")
        access.check_not_link(volume, "copy")
        path = reachable_path(volume)
        if path is not None:
            check_file(path, volume.format or "raw")
    except StorageError as exc:
        raise JobError(str(exc)) from exc


def clone_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    """Copy on the host (libvirt's volume clone), not through streams: the bytes never
    leave the host, and the filesystem may share them (reflink). libvirt cannot report
    progress nor abort it, so the job follows the copy's size on the host (an estimate)
    and says it cannot be cancelled. The copy never follows a backing chain."""
    volume = _volume(job)
    _check_source(volume)
    pool, new_name = volume.pool, job.params["name"]
    reporter.configure(cancellable=False, estimated=True)
    message = f"Copying {volume.name} to {new_name}"
    reporter.update(0, message=message, force=True)
    total = job.total or 0

    def progress(done: int) -> None:
        # The copy's final size is only known at the end: never show it finished before.
        reporter.update(min(done, int(total * 0.99)) if total else done, message=message)

    try:
        info = virt.clone_volume(pool.host.virt_target, volume.path, new_name,
                                 progress=progress, source_format=volume.format or "raw")
    except (VirtError, StorageError) as exc:
        record("volume.clone", user=job.owner, target=volume, result="failed", message=str(exc),
               name=new_name)
        raise JobError(str(exc)) from exc
    clone = _store_volume(pool, info)
    resync_pool(pool)
    record("volume.clone", user=job.owner, target=volume, name=new_name, clone=clone.pk)
    return {"volume": clone.pk, "name": clone.name, "path": clone.path}


def wipe_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    """libvirt wipes without reporting progress and cannot stop halfway: the job shows no
    percentage (its total stays empty) and cannot be cancelled once running."""
    volume = _volume(job)
    pool = volume.pool
    try:
        access.check_not_link(volume, "wipe")
    except StorageError as exc:
        raise JobError(str(exc)) from exc
    reporter.configure(cancellable=False)
    reporter.update(0, message=f"Overwriting {volume.name} with zeros (the host reports no "
                    "progress)", force=True)
    try:
        info = virt.wipe_volume(pool.host.virt_target, volume.path)
    except VirtError as exc:
        record("volume.wipe", user=job.owner, target=volume, result="failed", message=str(exc))
        raise JobError(str(exc)) from exc
    _store_volume(pool, info)
    # Zeros: nothing to follow. libvirt reads them afresh (a pool refresh re-probes the
    # file) and the volume keeps the format its content was checked as.
    resync_pool(pool, rescan=True)
    content.mark_ready(volume)
    record("volume.wipe", user=job.owner, target=volume)
    return {"volume": volume.pk, "bytes": info.capacity}
